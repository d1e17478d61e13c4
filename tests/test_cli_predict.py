"""`metalora predict` with several adapters: scenarios on the command line and JSON-lines batch jobs, in
real processes where what a user sees matters (stderr free of known noise, one-line errors)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

from metalora.api import load_adapters
from metalora.cli import main

from conftest import ROOT
from test_cli import assert_one_line_error, in_process
from test_serving import TEXTS, make_adapter


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_backbone):
    here = tmp_path_factory.mktemp("cli-adapters")
    return {
        "kitchen": make_adapter(here / "kitchen", tiny_backbone, scenario="kitchen", seed=1),
        "garden": make_adapter(here / "garden", tiny_backbone, scenario="garden", labels=("bad", "ok", "good"), seed=2),
    }


def real_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """A real `metalora` process with the user's warning settings (no PYTHONWARNINGS=ignore)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "metalora", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          input=stdin, timeout=300)


def rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


def test_two_adapters_one_scenario_from_the_command_line(capsys, adapters):
    code, out, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--adapter",
                                str(adapters["garden"]), "--scenario", "garden", *TEXTS[:3])
    assert code == 0, err
    got = rows(out)
    want = load_adapters(list(adapters.values())).predict(TEXTS[:3], scenario="garden")
    assert [r["text"] for r in got] == TEXTS[:3] and {r["scenario"] for r in got} == {"garden"}
    assert [r["label"] for r in got] == want.labels
    assert_close([list(r["probabilities"].values()) for r in got], [list(p.values()) for p in want.probabilities],
                 atol=1e-6, rtol=0)

    code, _, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--adapter",
                              str(adapters["garden"]), "great")
    assert_one_line_error(code, err, "predict", "2 adapters are loaded", "kitchen, garden")
    code, _, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--scenario", "shoes", "great")
    assert_one_line_error(code, err, "predict", "no loaded adapter serves scenario 'shoes'", "loaded: kitchen")
    code, _, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "fine", "")
    assert_one_line_error(code, err, "predict", "text 1 is empty")


def test_jsonl_mixes_scenarios_and_reports_bad_lines_in_place(capsys, tmp_path, adapters):
    lines = [
        json.dumps({"scenario": "kitchen", "text": TEXTS[0], "id": "a"}),
        json.dumps({"scenario": "garden", "text": TEXTS[1]}),
        '{"scenario": "kitchen", "text": "unterminated',                 # 3: not JSON
        "",                                                                # 4: blank, skipped
        json.dumps({"scenario": "shoes", "text": TEXTS[2], "id": 7}),      # 5: unknown scenario
        json.dumps({"scenario": "garden", "text": "  "}),                  # 6: empty text
        json.dumps(["a list"]),                                            # 7: not an object
        json.dumps({"text": TEXTS[3]}),                                    # 8: no scenario, two adapters
        json.dumps({"scenario": "garden", "text": TEXTS[4]}),
        json.dumps({"scenario": "kitchen", "text": TEXTS[5]}),
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--adapter",
                                str(adapters["garden"]), "--input", str(requests), "--batch-size", "2")
    assert_one_line_error(code, err, "predict", "5 of 9 lines", str(requests), "lines 3, 5, 6, 7, 8")
    got = rows(out)
    assert [r["line"] for r in got] == [1, 2, 3, 5, 6, 7, 8, 9, 10]  # every request answered, in order
    errors = {r["line"]: r["error"] for r in got if "error" in r}
    assert errors[3].startswith("not valid JSON")
    assert errors[5] == "no loaded adapter serves scenario 'shoes'; loaded: kitchen, garden"
    assert errors[6] == '"text" is empty' and "JSON object" in errors[7]
    assert "name the scenario of each text (one of kitchen, garden)" in errors[8]
    assert got[0]["id"] == "a" and got[3]["id"] == 7

    served = [r for r in got if "error" not in r]
    texts = [r["text"] for r in served]
    assert texts == [TEXTS[0], TEXTS[1], TEXTS[4], TEXTS[5]]
    want = load_adapters(list(adapters.values())).predict(texts, scenario=[r["scenario"] for r in served])
    assert [r["label"] for r in served] == want.labels
    for r, p in zip(served, want.probabilities):
        assert r["probabilities"].keys() == p.keys()
        assert_close(list(r["probabilities"].values()), list(p.values()), atol=1e-6, rtol=0)

    # a clean file exits 0; one adapter needs no scenario field
    requests.write_text(json.dumps({"text": TEXTS[0]}) + "\n", encoding="utf-8")
    code, out, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--input", str(requests))
    assert code == 0, err
    assert rows(out)[0]["scenario"] == "kitchen" and rows(out)[0]["line"] == 1


def test_jsonl_bad_invocations(capsys, tmp_path, adapters):
    code, _, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--input", str(tmp_path / "no.jsonl"))
    assert_one_line_error(code, err, "predict", "--input", "no.jsonl does not exist")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    code, _, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--input", str(tmp_path / "blank.jsonl"))
    assert_one_line_error(code, err, "predict", "holds no requests")
    code, _, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--input", str(tmp_path / "blank.jsonl"), "extra")
    assert_one_line_error(code, err, "predict", "do not also pass texts")


def test_mixed_backbones_refused_at_load(capsys, tmp_path, adapters, tiny_backbone):
    llama = make_adapter(tmp_path / "llama", tiny_backbone, backbone="tiny-llama", scenario="shoes")
    code, _, err = in_process(capsys, "predict", "--adapter", str(adapters["kitchen"]), "--adapter", str(llama),
                              "--scenario", "kitchen", "great")
    assert_one_line_error(code, err, "predict", "different backbones", "tiny-llama: shoes", "tiny-bert: kitchen")


def test_real_process_has_a_quiet_stderr(adapters):
    """What a new user meets: nothing on stderr on success (no bitsandbytes `kernels` line, no
    is_gradient_checkpointing FutureWarning), with the user's own warning settings."""
    ok = real_cli("predict", "--adapter", str(adapters["kitchen"]), "great product")
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == "", ok.stderr
    assert rows(ok.stdout)[0]["scenario"] == "kitchen"


def test_truncated_weights_are_one_line_naming_the_file(capsys, tmp_path, adapters):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(adapters["kitchen"], broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, out, err = in_process(capsys, "predict", "--adapter", str(broken), "great product")
    assert out == ""
    assert_one_line_error(code, err, "predict", str(weights), "damaged or incomplete", "copy or pull the folder again",
                          only_line=True)


def test_jsonl_from_standard_input(capsys, adapters, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"scenario": "garden", "text": "needs full sun"}) + "\n"))
    assert main(["predict", "--adapter", str(adapters["kitchen"]), "--adapter", str(adapters["garden"]), "--input", "-"]) == 0
    got = rows(capsys.readouterr().out)
    assert len(got) == 1 and got[0]["scenario"] == "garden" and set(got[0]["probabilities"]) == {"bad", "ok", "good"}
    assert sum(got[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(torch.tensor(list(got[0]["probabilities"].values()))).all()
