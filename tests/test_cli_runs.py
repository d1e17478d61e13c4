"""The long-running subcommands, run for real on tiny configurations: `meta-train` (with the README's
`key=value` overrides), `demo`, and `bench synthetic` on the inits the demo trained."""
from __future__ import annotations

import json

import pytest

from metalora.cli import main
from metalora.synthetic import heldout_names

from test_cli import assert_one_line_error, in_process
from test_meta_trainer import SMOKE, assert_same_init

TINY_DEMO = """\
backbone: {name: tiny-bert, max_length: 16}
lora: {r: 2, top_layers: 1}
algorithm: fomaml
scenarios: ["synthetic/*"]
exclude_heldout: true
val_scenarios: ["synthetic/sentiment/kitchen"]
val_split: dev
val_episodes: 1
episodes: {k_shot: 2, query_size: 4}
steps: 2
meta_batch: 2
inner_steps: 1
adapt_steps_choices: [0, 1]
eval_every: 2
checkpoint_every: 0
log_with: none
"""


# -- meta-train ----------------------------------------------------------------------------------------
def test_meta_train_takes_key_value_overrides_as_the_readme_writes_them(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = in_process(capsys, "meta-train", "--config", str(SMOKE), f"output_dir={a}", "--no-resume",
                                "steps=2", "val_scenarios=[]", "--set", "checkpoint_every=1")
    assert code == 0, err
    assert f"meta-init -> {a / 'meta-init'}" in out and "meta-trained 2 steps" in out
    assert [r["step"] for r in json.loads((a / "history.json").read_text())] == [1, 2]
    code, out, err = in_process(capsys, "meta-train", "--config", str(SMOKE), "--set", f"output_dir={b}", "--set", "steps=2",
                                "--set", "val_scenarios=[]", "--set", "checkpoint_every=1")
    assert code == 0, err
    assert_same_init(a / "final-init", b / "final-init", atol=0)  # both forms say the same thing

    # the same command, one step further: resumes from the last checkpoint
    code, out, err = in_process(capsys, "meta-train", "--config", str(SMOKE), f"output_dir={a}", "steps=3",
                                "val_scenarios=[]", "checkpoint_every=1")
    assert code == 0, err
    assert "resuming from" in out and "step-0000002" in out
    assert [r["step"] for r in json.loads((a / "history.json").read_text())] == [1, 2, 3]


def test_meta_train_bad_overrides(capsys, tmp_path):
    code, _, err = in_process(capsys, "meta-train", "--config", str(SMOKE), f"output_dir={tmp_path}", "stpes=2")
    assert_one_line_error(code, err, "meta-train", "unknown key `stpes`", "`steps`")
    code, _, err = in_process(capsys, "meta-train", "--config", str(SMOKE), "steps")
    assert_one_line_error(code, err, "meta-train", "override `steps` must look like key=value")
    with pytest.raises(SystemExit) as exit_:  # a stray word after an option: argparse's own usage error
        main(["meta-train", "--config", str(SMOKE), "steps=1", "--cpu", "steps"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: steps" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# -- demo, then bench synthetic on the demo's inits ------------------------------------------------------
def test_demo_then_bench_synthetic_on_its_inits(capsys, tmp_path):
    config = tmp_path / "tiny_demo.yaml"
    config.write_text(TINY_DEMO, encoding="utf-8")
    demo = tmp_path / "demo"
    code, out, err = in_process(capsys, "demo", "--config", str(config), "--out", str(demo))
    assert code == 0, err
    report = json.loads((demo / "report.json").read_text())
    assert list(report["methods"]) == ["meta", "vanilla", "multitask"]
    assert report["targets"] == [f"synthetic/{n}" for n in heldout_names()] and report["seeds"] == [0]
    assert report["backbone"] == "tiny-bert" and report["meta_training"]["meta"]["steps"] == 2
    for name in ("report.md", "curve.png"):
        assert (demo / name).is_file()
    # one seed: the table says there is no spread instead of printing zeros
    assert "(one run: no spread)" in out and "± 0.000" not in out
    assert report["methods"]["vanilla"]["curve"]["steps"] == [0, 1, 2, 5, 10, 25]

    bench = tmp_path / "bench"
    inits = {m: demo / f"{'meta' if m == 'meta' else 'multitask'}-train" / "meta-init" for m in ("meta", "multitask")}
    code, out, err = in_process(capsys, "bench", "synthetic", "--out", str(bench), "--meta-init", str(inits["meta"]),
                                "--multitask-init", str(inits["multitask"]), "--methods", "meta,multitask,frozen-lr",
                                "--seeds", "0", "1", "--curve-steps", "none", "--no-progress")
    assert code == 0, err
    again = json.loads((bench / "report.json").read_text())
    assert list(again["methods"]) == ["meta", "multitask", "frozen-lr"] and again["seeds"] == [0, 1]
    assert "training" not in "".join(again["notes"]) and again["meta_training"]["meta"]["given"] is True
    for m in ("meta", "multitask"):  # the same init, support seed and steps: the demo's seed-0 numbers again
        for task, entry in report["methods"][m]["tasks"].items():
            seed0 = next(r for r in again["methods"][m]["tasks"][task]["runs"] if r["seed"] == 0)
            assert seed0["accuracy"] == entry["runs"][0]["accuracy"], (m, task)
            assert seed0["macro_f1"] == entry["runs"][0]["macro_f1"], (m, task)
    assert "one run: no spread" not in out and " ± " in out
    assert (bench / "report.md").read_text().count("| synthetic/") == len(heldout_names())


def test_bench_synthetic_bad_flags(capsys, tmp_path):
    code, _, err = in_process(capsys, "bench", "synthetic", "--out", str(tmp_path / "o"), "--methods", "meta,nosuch")
    assert_one_line_error(code, err, "bench", "nosuch")
    code, _, err = in_process(capsys, "bench", "synthetic", "--out", str(tmp_path / "o"), "--meta-init", str(tmp_path / "none"),
                              "--methods", "meta")
    assert_one_line_error(code, err, "bench", str(tmp_path / "none"), "does not exist")
