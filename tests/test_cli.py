"""The command line: help texts, `scenarios`, an adapt -> predict -> evaluate round trip in real
processes, and bad input as exit code 2 with one line naming the problem (no traceback)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.testing import assert_close

from metalora.cards import discover_cards
from metalora.cli import main
from metalora.scenarios import all_scenarios

from conftest import NEGATIVE, POSITIVE, ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metalora", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=ENV, timeout=300)


def cli_start(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "metalora", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd or ROOT, env=ENV)


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str, *words: str, only_line: bool = False) -> None:
    """Exit code 2, no traceback, and the problem on one line (the last one on stderr). `datasets`
    may print progress bars before it; with `only_line` nothing else may be on stderr at all."""
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("metalora ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    if only_line:
        assert lines == errors, err
    assert errors[0].startswith(f"metalora {command}: error: ")
    for w in words:
        assert w in errors[0], (w, errors[0])


# -- help --------------------------------------------------------------------------------------------
def test_top_level_help():
    res = cli("--help")
    assert res.returncode == 0, res.stderr
    for name in ("scenarios", "adapt", "evaluate", "predict", "--version"):
        assert name in res.stdout
    res = cli("--version")
    assert res.returncode == 0 and "metalora 0." in res.stdout


@pytest.mark.parametrize(
    "command, flags",
    [
        ("scenarios", ["--cards", "--load"]),
        ("adapt", ["scenario", "--out", "--init", "--shots", "--full", "--support-split", "--eval-split", "--overwrite",
                   "--config", "--backbone", "--steps", "--lr", "--seed", "--set"]),
        ("evaluate", ["adapter", "scenario", "--split", "--json"]),
        ("predict", ["--adapter", "texts", "--file", "--scenario", "--input", "--batch-size"]),
        ("meta-train", ["--config", "--set", "--no-resume", "--cpu", "KEY=VALUE"]),
    ],
)
def test_subcommand_help(command, flags):
    res = cli(command, "--help")
    assert res.returncode == 0, res.stderr
    assert f"usage: metalora {command}" in res.stdout
    for flag in flags:
        assert flag in res.stdout, flag


def _all_parsers() -> dict:
    """Every (sub)command's parser, by its command words ("" for the top level, "bench arsc", ...)."""
    import argparse

    from metalora.cli import build_parser

    found = {}

    def walk(parser, words):
        found[words] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{words} {name}".strip())

    walk(build_parser(), "")
    return found


def test_every_flag_of_every_command_is_in_its_help(capsys):
    """`--help` of each command and subcommand lists and describes every option it accepts."""
    import argparse

    parsers = _all_parsers()
    assert {"adapt", "predict", "meta-train", "bench arsc", "bench synthetic", "bench speed", "demo"} <= set(parsers)
    checked = 0
    for words, parser in parsers.items():
        with pytest.raises(SystemExit) as done:
            main([*words.split(), "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            assert action.help and action.help != argparse.SUPPRESS and len(action.help) > 10, (words, action.dest)
            names = action.option_strings or [action.metavar or action.dest]
            for name in names:
                assert name in text, (words, name)
            checked += 1
    assert checked > 50


# -- scenarios ---------------------------------------------------------------------------------------
def test_scenarios_lists_every_scenario():
    res = cli("scenarios")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    n_cards, n_scenarios = len(discover_cards()), len(all_scenarios())
    assert lines[-1] == f"{n_cards} cards, {n_scenarios} scenarios, all valid"
    assert len(lines) == n_scenarios + 1
    names = {line.split()[0] for line in lines[:-1]}
    assert {"arsc/apparel.t2", "arsc/music.t5", "synthetic/sentiment/kitchen"} <= names


def test_scenarios_load_checks_the_data(capsys, local_card):
    code, out, err = in_process(capsys, "scenarios", "--cards", str(local_card.parent), "--load")
    assert code == 0, err
    assert "local/reviews" in out and "train=10 test=6" in out and "1 cards, 1 scenarios, all valid" in out


def test_bad_card_through_the_cli(write_card):
    """A real process: exit code 2, exactly one line on stderr naming the file and every bad field."""
    card = write_card(family="shoes", task_type="regression")
    res = cli("scenarios", "--cards", str(card.parent))
    assert res.returncode == 2
    assert res.stdout == ""
    assert_one_line_error(res.returncode, res.stderr, "scenarios", str(card), "metalora.family", "metalora.task_type",
                          only_line=True)


# -- adapt -> predict -> evaluate ----------------------------------------------------------------------
def test_adapt_predict_evaluate_round_trip(capsys, tmp_path, local_card):
    out = tmp_path / "adapters" / "reviews"
    res = cli("adapt", str(local_card), "--out", str(out), "--backbone", "tiny-bert", "--steps", "3", "--shots", "3",
              "--set", "lora.r=4", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "adapted local/reviews" in res.stdout and str(out) in res.stdout and "accuracy" in res.stdout
    meta = json.loads((out / "metalora.json").read_text())
    assert meta["backbone"]["name"] == "tiny-bert"
    assert meta["adapt"]["steps"] == 3 and meta["support"]["shots"] == 3 and meta["support"]["examples"] == 6
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert not [p for p in out.parent.iterdir() if p.name != "reviews"]  # no temp folders left

    texts = [POSITIVE[6], NEGATIVE[6], "so-so"]
    # predict and evaluate only read the adapter: run them side by side
    procs = {
        "predict": cli_start("predict", "--adapter", str(out), *texts, cwd=tmp_path),
        "evaluate": cli_start("evaluate", str(out), str(local_card), "--json", cwd=tmp_path),
    }
    results = {k: p.communicate(timeout=300) + (p.returncode,) for k, p in procs.items()}
    for k, (stdout, stderr, code) in results.items():
        assert code == 0, (k, stderr)

    from metalora.api import load_adapter

    want = load_adapter(out).predict(texts)
    rows = [json.loads(line) for line in results["predict"][0].strip().splitlines()]
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == want.labels
    probs = [[r["probabilities"]["negative"], r["probabilities"]["positive"]] for r in rows]
    assert_close(probs, want.probabilities.tolist(), atol=2e-6, rtol=0)

    # --file (in process): the same lines, blank lines skipped
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    assert main(["predict", "--adapter", str(out), "--file", str(tmp_path / "texts.txt")]) == 0
    from_file = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(r["text"], r["label"]) for r in from_file] == [(r["text"], r["label"]) for r in rows]
    assert_close([list(r["probabilities"].values()) for r in from_file], probs, atol=2e-6, rtol=0)

    metrics = json.loads(results["evaluate"][0])
    assert metrics.keys() == meta["metrics"].keys() == {"accuracy", "macro_f1"}
    assert_close(metrics, meta["metrics"])  # adapt evaluated the same split with the same weights


# -- bad input (in process: the same `main`, without the start-up cost) ---------------------------------
def test_adapt_refuses_an_existing_folder_before_any_work(capsys, tmp_path, local_card, monkeypatch):
    import metalora.api

    out = tmp_path / "adapter"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    monkeypatch.setattr(metalora.api, "adapt", lambda *a, **k: pytest.fail("adapted before checking --out"))
    code, _, err = in_process(capsys, "adapt", str(local_card), "--out", str(out), "--backbone", "tiny-bert")
    assert_one_line_error(code, err, "adapt", str(out), "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "old"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--set", "lora.rnak=4"], ["command-line overrides", "unknown key `lora.rnak`"]),
        (["--set", "optimizer=adam"], ["adapt.optimizer", "'adamw', 'sgd'"]),
        (["--set", "steps=-1", "--set", "head_init=zeros"], ["adapt.steps", "adapt.head_init"]),  # two problems, one line
        (["--steps", "2", "--shots", "9"], ["scenario local/reviews split train", "9 shots", "only 5"]),
        (["--backbone", "tiny-bret"], ["unknown backbone 'tiny-bret'"]),
        (["--support-split", "dev"], ["no data file for split 'dev'"]),
    ],
)
def test_adapt_bad_input(capsys, tmp_path, local_card, extra, words):
    out = tmp_path / "out"
    code, _, err = in_process(capsys, "adapt", str(local_card), "--out", str(out), "--backbone", "tiny-bert", *extra)
    assert_one_line_error(code, err, "adapt", *words)
    assert not out.exists()


def test_adapt_bad_config_file(capsys, tmp_path, local_card):
    config = tmp_path / "adapt.yaml"
    config.write_text("backbone:\n  name: tiny-bert\nstpes: 3\n", encoding="utf-8")
    code, _, err = in_process(capsys, "adapt", str(local_card), "--out", str(tmp_path / "out"), "--config", str(config))
    assert_one_line_error(code, err, "adapt", str(config), "unknown key `stpes`", "did you mean `steps`")
    code, _, err = in_process(capsys, "adapt", "synthetic/sentiment/kitchn", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "adapt", "unknown scenario 'synthetic/sentiment/kitchn'")


def test_predict_and_evaluate_bad_input(capsys, tmp_path, write_card, monkeypatch):
    missing = tmp_path / "no-adapter"
    code, _, err = in_process(capsys, "predict", "--adapter", str(missing), "hello")
    assert_one_line_error(code, err, "predict", str(missing), "does not exist")
    code, _, err = in_process(capsys, "evaluate", str(missing), str(write_card()))
    assert_one_line_error(code, err, "evaluate", str(missing), "does not exist")
    code, _, err = in_process(capsys, "predict", "--adapter", str(missing), "--file", str(tmp_path / "texts.txt"))
    assert_one_line_error(code, err, "predict", "--file", "texts.txt does not exist")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    code, _, err = in_process(capsys, "predict", "--adapter", str(missing))
    assert_one_line_error(code, err, "predict", "no texts to predict")


def test_evaluate_refuses_other_labels(capsys, tmp_path, write_card):
    from metalora.api import adapt
    from metalora.config import AdaptConfig, BackboneConfig

    card = write_card()
    folder = adapt(str(card), config=AdaptConfig(backbone=BackboneConfig(name="tiny-bert"), steps=1), shots=2,
                   evaluate_split=None).save(tmp_path / "adapter")
    rows = {"test": [{"review": "x", "label": "bad"}, {"review": "y", "label": "good"}]}
    other = write_card(rows, folder="other", name="local/other", label_names=("bad", "good"))
    code, _, err = in_process(capsys, "evaluate", str(folder), str(other))
    assert_one_line_error(code, err, "evaluate", "['negative', 'positive']", "['bad', 'good']")
