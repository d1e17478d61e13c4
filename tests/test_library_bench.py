"""`select` and `compose` as bench methods: a tiny ARSC run builds the library from the training domains
(one adapter each + the meta-init + a learned selector), reports selection time and library size,
and a second run reuses the cached library."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from metalora.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bench import TINY_META, make_arsc  # noqa: E402


def test_bench_select_and_compose(tmp_path):
    data = make_arsc(tmp_path / "arsc")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_META)
    lib = tmp_path / "lib"
    args = ["bench", "arsc", "--data-dir", str(data), "--targets", "tgt.t4", "--train-domains", "aa,bb,dd", "--support-split",
            "train", "--shots", "2", "--seeds", "0", "1", "--backbone", "tiny-bert", "--methods", "meta,vanilla,select,compose",
            "--meta-config", str(cfg), "--curve-steps", "none", "--library", str(lib), "--library-shots", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "out1")]) == 0
    r = json.loads((tmp_path / "out1" / "report.json").read_text())
    assert set(r["methods"]) == {"meta", "vanilla", "select", "compose"}
    sel = r["methods"]["select"]
    assert sel["library"]["adapters"] == 3 and sel["library"]["meta_inits"] == 1 and sel["library"]["library_size"] == 5
    assert sel["library"]["selector"] is True and sel["library"]["decided_by"] == {"learned": 2}
    runs = sel["tasks"]["arsc/tgt.t4"]["runs"]
    assert len(runs) == 2 and all(run["select_seconds"] > 0 and run["chosen"] for run in runs)
    assert all(0.0 <= run["accuracy"] <= 1.0 for run in runs)
    comp = r["methods"]["compose"]["tasks"]["arsc/tgt.t4"]["runs"]
    assert all(run["decided_by"] == "lorahub" and "meta-init:" in run["chosen"] for run in comp)
    assert {p.name for p in lib.iterdir() if p.is_dir()} == {"meta-init", "arsc__aa.t2", "arsc__bb.t2", "arsc__dd.t2"}
    assert "| select |" in (tmp_path / "out1" / "report.md").read_text()
    # the library is cached: a second run with the same meta-init and training domains reuses it
    meta = str(tmp_path / "out1" / "meta-train" / "meta-init")
    stamp = (lib / "arsc__aa.t2" / "adapter_model.safetensors").stat().st_mtime_ns
    args2 = [a if a != "meta,vanilla,select,compose" else "select" for a in args]
    i = args2.index("--meta-config")
    del args2[i:i + 2]
    assert main([*args2, "--meta-init", meta, "--out", str(tmp_path / "out2")]) == 0
    assert (lib / "arsc__aa.t2" / "adapter_model.safetensors").stat().st_mtime_ns == stamp
