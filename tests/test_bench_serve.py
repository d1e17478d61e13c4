"""`metalora bench serve` on tiny-bert: the report's fields, the one-backbone invariant in its parameter
counts, and a measurement in its own process (the figures themselves come from the real run, not here)."""
from __future__ import annotations

import json

import pytest

from metalora.adapter_io import AdapterFolder
from metalora.bench import serve
from metalora.cli import main


def test_serve_report_in_process(tmp_path, capsys):
    r = serve.run_serve("tiny-bert", tmp_path / "out", counts=(1, 3), texts=12, batch_size=4, repeats=2, isolate=False)
    for name in ("serve.json", "serve.md", "serve.png"):
        assert (tmp_path / "out" / name).is_file()
    assert set(r["runs"]) == {"shared-1", "shared-3", "separate-1", "separate-3"}
    for key, run in r["runs"].items():
        rates = [run[k] for k in ("mixed", "grouped", "single", "separate") if k in run]
        assert len(rates) == (1 if key.startswith("separate") else 3), key
        assert all(x["texts_per_s"] > 0 and len(x["seconds"]) == 2 for x in rates), key
        assert all(x["worst_texts_per_s"] <= x["texts_per_s"] for x in rates)
        assert 0 < run["rss_after_load_mb"] <= run["peak_mb"] + 1 and run["parameter_mb"] > 0
    runs = r["runs"]
    # one backbone: 3 adapters add only two adapters' LoRA weights; separate models triple everything
    lora = 3 * 2 * (8 * 32 + 32 * 8)  # tiny-bert: 3 layers x (query, value) x (A: r x 32, B: 32 x r), r = 8
    head = lambda labels: labels * 32 + labels  # noqa: E731 - adapter i has 2 + i labels here
    one = runs["shared-1"]["parameters"]
    assert runs["separate-1"]["parameters"] == one
    assert runs["shared-3"]["parameters"] == one + 2 * lora + head(3) + head(4)
    assert runs["separate-3"]["parameters"] == 3 * (one - head(2)) + head(2) + head(3) + head(4)
    s = r["summary"]
    assert s["memory_ratio"] == pytest.approx(runs["shared-3"]["peak_mb"] / runs["shared-1"]["peak_mb"])
    assert s["throughput_ratio"] == runs["shared-3"]["mixed_vs_single"] > 0
    assert s["throughput_ratio_across_processes"] == pytest.approx(
        runs["shared-1"]["mixed"]["texts_per_s"] / runs["shared-3"]["mixed"]["texts_per_s"])
    assert s["shared_parameter_mb_per_adapter"] == pytest.approx(
        (runs["shared-3"]["parameter_mb"] - runs["shared-1"]["parameter_mb"]) / 2)
    md = (tmp_path / "out" / "serve.md").read_text()
    assert "| 3 |" in md and "target <= 1.3x" in md and "target <= 1.5x" in md
    assert json.loads((tmp_path / "out" / "serve.json").read_text())["summary"] == json.loads(json.dumps(s))


def test_generated_adapters_are_real_folders(tmp_path):
    folders = serve.make_adapters("tiny-bert", 3, tmp_path, r=2, top_layers=1)
    records = [AdapterFolder.read(f) for f in folders]
    assert [len(rec.label_names) for rec in records] == [2, 3, 4]
    assert all(rec.lora.r == 2 and rec.lora.top_layers == 1 for rec in records)
    assert all(any(v.abs().max() > 0 for k, v in rec.tensors.items() if "lora_B" in k) for rec in records)


def test_a_measurement_in_its_own_process(tmp_path):
    folders = serve.make_adapters("tiny-bert", 2, tmp_path / "a")
    res = serve.measure_in_subprocess("shared", folders, ["great product"] * 6, 4, 1, workdir=tmp_path)
    assert res["adapters"] == 2 and res["mixed"]["texts_per_s"] > 0 and res["peak_mb"] > 0


def test_bad_flags(capsys):
    assert main(["bench", "serve", "--adapters", "0,2", "--backbone", "tiny-bert"]) == 2
    assert "--adapters" in capsys.readouterr().err
    with pytest.raises(Exception, match="--texts"):
        serve.run_serve("tiny-bert", "unused", texts=0)
