"""`metalora bench`: support-selection rules, the report schema, a tiny end-to-end ARSC run, bad inputs."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from metalora.bench import arsc as bench_arsc
from metalora.bench import compare as bench_compare
from metalora.bench.methods import parse_methods
from metalora.bench.report import summarize, task_entry
from metalora.cli import main
from metalora.errors import ConfigError

POS = ["great product love it", "works perfectly very happy", "excellent quality fast shipping", "amazing value buy again",
       "fantastic sturdy as described", "kids adore it", "best one i have owned", "comfortable fit lovely colour"]
NEG = ["broke after one day", "terrible quality waste of money", "arrived damaged seller silent", "does not work at all",
       "awful smell returned it", "zipper fell off", "cheap plastic cracked", "refund took a month"]

TINY_META = """\
backbone: {name: tiny-bert, max_length: 32}
lora: {r: 4, top_layers: 2}
algorithm: fomaml
head_prior: true
steps: 2
meta_batch: 2
inner_steps: 1
episodes: {k_shot: 2, query_size: 4}
eval_every: 1
val_scenarios: ["arsc/cc.*", "arsc/tgt.*"]
val_split: dev
val_episodes: 2
checkpoint_every: 0
log_with: none
"""


def _write(folder: Path, name: str, per_class: int, seed: int = 0) -> None:
    rng = random.Random(f"{name}-{seed}")
    lines = []
    for i in range(per_class):
        lines.append(f"{name} {rng.choice(POS)} {i}\t1")
        lines.append(f"{name} {rng.choice(NEG)} {i}\t-1")
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_arsc(folder: Path) -> Path:
    """tgt: t2 with a fixed 2-shot .train (exactly 2 x 2 lines), t4 with a larger .train; aa, bb train domains;
    cc has no .train (skipped by `all`); dd has no .dev."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, "tgt.t2.train", 2)
    _write(folder, "tgt.t4.train", 7)
    for t in ("t2", "t4"):
        _write(folder, f"tgt.{t}.dev", 6)
        _write(folder, f"tgt.{t}.test", 5)
    for d in ("aa", "bb"):
        for split, n in (("train", 8), ("dev", 4), ("test", 4)):
            _write(folder, f"{d}.t2.{split}", n)
    _write(folder, "cc.t2.dev", 4)
    _write(folder, "cc.t2.test", 4)
    _write(folder, "dd.t2.train", 6)
    _write(folder, "dd.t2.test", 4)
    return folder


@pytest.fixture()
def arsc_dir(tmp_path) -> Path:
    return make_arsc(tmp_path / "arsc")


# -- support selection ----------------------------------------------------------------------------------


def _texts(path: Path) -> set[str]:
    return {line.rpartition("\t")[0].strip() for line in path.read_text().splitlines() if line.strip()}


def test_fixed_train_support_is_used_as_is(arsc_dir):
    (t2,) = bench_arsc.arsc_targets(arsc_dir, ["tgt.t2"], "train")
    assert t2.is_fixed(2)
    a, b = t2.support(2, 0), t2.support(2, 3)
    assert list(a["text"]) == list(b["text"]) and len(a) == 4
    assert set(a["text"]) == _texts(arsc_dir / "tgt.t2.train")
    assert not t2.is_fixed(1)  # 4 lines != 2 x 1: sampled instead
    assert len(t2.support(1, 0)) == 2


def test_train_support_sampled_when_not_exactly_two_times_shots(arsc_dir):
    (t4,) = bench_arsc.arsc_targets(arsc_dir, ["tgt.t4"], "train")
    assert not t4.is_fixed(2)
    s0, s0_again, s1 = t4.support(2, 0), t4.support(2, 0), t4.support(2, 1)
    assert len(s0) == 4 and sorted(s0["label"]) == [0, 0, 1, 1]
    assert list(s0["text"]) == list(s0_again["text"])
    assert set(s0["text"]) != set(s1["text"])
    assert set(s0["text"]) <= _texts(arsc_dir / "tgt.t4.train")


def test_dev_support_sampled_per_seed_and_never_reads_test(tmp_path, monkeypatch):
    folder = make_arsc(tmp_path / "fresh")  # a fresh folder: nothing cached from other tests
    import metalora.scenarios as scenarios

    read = []
    real = scenarios._read_arsc
    monkeypatch.setattr(scenarios, "_read_arsc", lambda path, name: (read.append(Path(path).name), real(path, name))[1])
    tasks = bench_arsc.arsc_targets(folder, ["tgt"], "dev")
    assert [t.name for t in tasks] == ["arsc/tgt.t2", "arsc/tgt.t4"]
    dev_texts = _texts(folder / "tgt.t2.dev")
    seen = []
    for seed in range(4):
        sup = tasks[0].support(3, seed)
        assert len(sup) == 6 and set(sup["text"]) <= dev_texts
        assert list(sup["text"]) == list(tasks[0].support(3, seed)["text"])
        seen.append(tuple(sup["text"]))
        tasks[1].support(3, seed)
    assert len(set(seen)) > 1
    assert read and not any(name.endswith(".test") for name in read)
    assert not tasks[0].is_fixed(3)  # the fixed-file rule is for --support-split train only


def test_train_domains_all_skips_domains_without_train(arsc_dir, tmp_path):
    tasks = bench_arsc.arsc_targets(arsc_dir, ["tgt"], "dev")
    tr = bench_arsc.arsc_training(arsc_dir, "all", tasks, tmp_path / "cards")
    assert tr.describe["domains"] == ["aa", "bb", "dd"]
    assert "cc" in tr.describe["skipped"]
    assert all(not s.startswith("arsc/tgt.") for s in tr.scenarios)


def test_train_domains_all_skips_domains_too_small_for_an_episode(arsc_dir, tmp_path):
    _write(arsc_dir, "ee.t2.train", 2)  # 2 per class: fewer than one episode needs (like tools_hardware)
    tasks = bench_arsc.arsc_targets(arsc_dir, ["tgt"], "dev")
    tr = bench_arsc.arsc_training(arsc_dir, "all", tasks, tmp_path / "cards", min_per_class=6)
    assert "ee" not in tr.describe["domains"] and "fewer than one episode" in tr.describe["skipped"]["ee"]
    assert "aa" in tr.describe["domains"]  # 8 per class is enough
    tr_explicit = bench_arsc.arsc_training(arsc_dir, "aa,ee", tasks, tmp_path / "cards2", min_per_class=6)
    assert tr_explicit.describe["domains"] == ["aa", "ee"]  # an explicit list is taken as given


# -- report schema -------------------------------------------------------------------------------------


def test_summary_means_are_means_of_task_values():
    tasks = {
        "a": task_entry([{"seed": 0, "accuracy": 0.5, "macro_f1": 0.4, "seconds": 1.0, "peak_mb": 10.0},
                         {"seed": 1, "accuracy": 0.7, "macro_f1": 0.6, "seconds": 3.0, "peak_mb": 10.0}]),
        "b": task_entry([{"seed": 0, "accuracy": 0.9, "macro_f1": 0.9, "seconds": 2.0, "peak_mb": 20.0},
                         {"seed": 1, "accuracy": 0.9, "macro_f1": 0.8, "seconds": 2.0, "peak_mb": 20.0}]),
    }
    assert tasks["a"]["accuracy"]["mean"] == pytest.approx(0.6)
    s = summarize(tasks)
    assert s["accuracy"]["mean"] == pytest.approx(0.75)
    assert s["accuracy"]["std_tasks"] == pytest.approx(0.15)
    assert s["accuracy"]["std_seeds"] == pytest.approx(0.05)
    assert s["seconds"]["mean"] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = make_arsc(root / "arsc")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_META)
    out = root / "out"
    rc = main(["bench", "arsc", "--data-dir", str(data), "--targets", "tgt.t2", "--train-domains", "aa,bb",
               "--support-split", "train", "--shots", "2", "--seeds", "0", "1", "--backbone", "tiny-bert",
               "--methods", "vanilla,frozen-lr,multitask,meta", "--meta-config", str(cfg), "--steps", "2",
               "--curve-steps", "0,1,3", "--out", str(out), "--no-progress"])
    return rc, out


def test_tiny_end_to_end(tiny_run):
    rc, out = tiny_run
    assert rc == 0
    for name in ("report.json", "report.md", "curve.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "meta-train" / "meta-init").is_dir() and (out / "multitask-train" / "meta-init").is_dir()
    # the meta init carries its class-prior direction; the multitask baseline (own heads) trains without one
    from metalora.api import load_init

    assert load_init(out / "meta-train" / "meta-init")[1].head_prior is not None
    assert load_init(out / "multitask-train" / "meta-init")[1].head_prior is None
    # validation ran on cc, a domain with no .train file that neither init trained on; the target
    # matched the config's patterns too and was dropped
    trained = json.loads((out / "report.json").read_text())["meta_training"]
    for name in ("meta", "multitask"):
        assert trained[name]["val_scenarios"] == ["arsc/cc.t2"]
        assert "arsc/cc.t2" not in trained[name]["scenarios"]
    history = json.loads((out / "meta-train" / "history.json").read_text())
    assert all(0.0 <= h["val_acc"] <= 1.0 for h in history), history


def test_validation_pool_is_the_untrained_non_target_domains(arsc_dir, tmp_path):
    targets = bench_arsc.arsc_targets(arsc_dir, ["tgt"], "dev")
    training = bench_arsc.arsc_training(arsc_dir, "aa", targets, tmp_path)
    assert training.val_pool == ("arsc/bb.t2", "arsc/cc.t2")  # not aa (trained), tgt (target), dd (no .dev)
    assert bench_arsc.arsc_training(arsc_dir, "aa", targets, tmp_path, val_split="train").val_pool == ("arsc/bb.t2", "arsc/dd.t2")


def test_ceiling_proto_matches_the_bench_at_step_0(tiny_run, capsys):
    """The ceiling's few-shot column is the bench's own step-0 figure (same supports, same head)."""
    from metalora.bench import ceiling

    _, out = tiny_run
    r = json.loads((out / "report.json").read_text())
    rows = ceiling.main([str(out / "meta-train" / "meta-init"), "--data-dir", str(out.parent / "arsc"), "--targets", "tgt.t2",
                         "--support-split", "train", "--shots", "2", "--seeds", "0", "1"])
    assert [row["task"] for row in rows] == ["arsc/tgt.t2"]
    curve = r["methods"]["meta"]["curve"]
    assert rows[0]["proto"] == pytest.approx(curve["accuracy"][curve["steps"].index(0)], abs=1e-9)
    assert rows[0]["probe_examples"] == 4 and 0.0 <= rows[0]["probe"] <= 1.0
    assert rows[0]["majority"] == pytest.approx(0.5)
    assert "| arsc/tgt.t2 |" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    for m in ("vanilla", "frozen-lr", "multitask", "meta"):
        assert f"| {m} |" in md


def test_ceiling_transductive_columns(tiny_run, capsys):
    from metalora.bench import ceiling

    _, out = tiny_run
    args = [str(out / "meta-train" / "meta-init"), "--data-dir", str(out.parent / "arsc"), "--targets", "tgt.t2",
            "--support-split", "train", "--shots", "2", "--seeds", "0"]
    plain = ceiling.main(args)
    assert "em_prior" not in plain[0]
    rows = ceiling.main(args + ["--transductive"])
    assert 0.0 <= rows[0]["em_prior"] <= 1.0 and 0.0 <= rows[0]["soft_kmeans"] <= 1.0
    assert rows[0]["proto"] == plain[0]["proto"]
    assert "| em_prior | soft_kmeans |" in capsys.readouterr().out


def test_report_json_schema(tiny_run):
    _, out = tiny_run
    r = json.loads((out / "report.json").read_text())
    for key in ("benchmark", "metalora_version", "backbone", "shots", "seeds", "targets", "training", "meta_training", "methods"):
        assert key in r, key
    assert r["backbone"] == "tiny-bert" and r["shots"] == 2 and r["targets"] == ["arsc/tgt.t2"]
    assert r["training"]["domains"] == ["aa", "bb"]
    assert r["meta_training"]["meta"]["seconds"] > 0 and r["meta_training"]["multitask"]["seconds"] > 0
    assert set(r["methods"]) == {"vanilla", "frozen-lr", "multitask", "meta"}
    for name, m in r["methods"].items():
        task = m["tasks"]["arsc/tgt.t2"]
        # tgt.t2's support is a fixed file: only vanilla (its LoRA init is drawn per seed) has anything left to vary
        assert [run["seed"] for run in task["runs"]] == ([0, 1] if name == "vanilla" else [0]), name
        for metric in ("accuracy", "macro_f1", "seconds", "peak_mb"):
            vals = [run[metric] for run in task["runs"]]
            assert task[metric]["mean"] == pytest.approx(np.mean(vals))
            per_task = [t[metric]["mean"] for t in m["tasks"].values()]
            assert m["summary"][metric]["mean"] == pytest.approx(np.mean(per_task))
        assert 0.0 <= m["summary"]["accuracy"]["mean"] <= 1.0
    for name in ("meta", "vanilla", "multitask"):
        assert r["methods"][name]["curve"]["steps"] == [0, 1, 3]
        assert r["methods"][name]["adapt"]["steps"] == 2
    assert r["methods"]["frozen-lr"]["curve"] is None
    assert r["methods"]["meta"]["adapt"]["optimizer"] == "sgd"


# -- bad input, refused before any training ---------------------------------------------------------------


def _bench(arsc_dir, out, *extra):
    return main(["bench", "arsc", "--data-dir", str(arsc_dir), "--backbone", "tiny-bert", "--shots", "2", "--seeds", "0",
                 "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("extra, message", [
    (("--targets", "zz", "--methods", "vanilla"), "no files for domain 'zz'"),
    (("--targets", "dd", "--support-split", "dev", "--methods", "vanilla"), "dd.t2.dev is missing"),
    (("--targets", "tgt", "--train-domains", "aa,tgt", "--methods", "meta"), "leak"),
    (("--targets", "tgt", "--train-domains", "aa,cc", "--methods", "meta"), "no .train file"),
    (("--targets", "tgt", "--support-split", "dev", "--shots", "7", "--methods", "vanilla"), "only 6"),
    (("--targets", "tgt", "--methods", "vanilla,fancy"), "unknown method 'fancy'"),
    (("--targets", "tgt.t9", "--methods", "vanilla"), "unknown threshold"),
])
def test_bad_input_refused_before_training(arsc_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    # a meta config that would train if reached; a refusal must come first
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_META)
    args = list(extra)
    if "--shots" in args:  # our own --shots replaces the default one
        i = args.index("--shots")
        shots = args[i + 1]
        del args[i:i + 2]
        rc = main(["bench", "arsc", "--data-dir", str(arsc_dir), "--backbone", "tiny-bert", "--shots", shots, "--seeds", "0",
                   "--out", str(out), "--no-progress", "--meta-config", str(cfg), *args])
    else:
        rc = _bench(arsc_dir, out, "--meta-config", str(cfg), *args)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "meta-train").exists() and not (out / "report.json").exists()


def test_parse_methods():
    assert parse_methods("meta, vanilla,meta") == ["meta", "vanilla"]
    with pytest.raises(ConfigError):
        parse_methods("")
    assert parse_methods("select,compose") == ["select", "compose"]  # the adapter library's methods


def test_setfit_skipped_with_note_when_missing(arsc_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_compare, "setfit_available", lambda: False)
    opts = bench_arsc.BenchOptions(methods=["frozen-lr", "setfit"], out=tmp_path / "o", shots=2, seeds=(0,),
                                   backbone="tiny-bert", curve_steps=(), progress=False)
    r = bench_arsc.run_arsc(arsc_dir, ["tgt.t2"], "all", "train", opts)
    assert list(r["methods"]) == ["frozen-lr"]
    assert any("setfit" in n for n in r["notes"])


def test_bench_help_lists_every_flag(capsys):
    for sub in ("arsc", "synthetic", "speed"):
        with pytest.raises(SystemExit):
            main(["bench", sub, "--help"])
        text = capsys.readouterr().out
        assert "--out" in text


def test_speed_tiny(tmp_path):
    from metalora.bench.speed import run_speed

    r = run_speed("tiny-bert", tmp_path / "speed", shots=(2,), repeats=1, processes=(1,), meta_steps=1)
    for name in ("speed.json", "speed.md", "speed.png"):
        assert (tmp_path / "speed" / name).is_file()
    s = r["backbones"]["tiny-bert"]["steps"]
    for key in ("plain_peft", "meta_first_order", "meta_second_order"):
        assert s[key]["examples_per_s"] > 0
    assert s["meta_first_order"]["ratio_vs_plain"] == pytest.approx(
        s["plain_peft"]["examples_per_s"] / s["meta_first_order"]["examples_per_s"])
    assert r["backbones"]["tiny-bert"]["adaptation"]["shots"]["2"]["examples"] == 4
    assert r["backbones"]["tiny-bert"]["processes"]["1"]["episodes_per_s"] > 0


def test_speed_measures_several_backbones_in_one_table(tmp_path):
    from metalora.bench.speed import run_speed

    r = run_speed("tiny-mpnet,tiny-bert", tmp_path / "speed", shots=(2,), repeats=1, processes=(1,), meta_steps=1)
    assert list(r["backbones"]) == ["tiny-mpnet", "tiny-bert"]  # tiny-bert once, not appended twice
    md = (tmp_path / "speed" / "speed.md").read_text()
    step_rows = [line for line in md.splitlines() if line.startswith("| tiny-")]
    assert {row.split("|")[1].strip() for row in step_rows} == {"tiny-mpnet", "tiny-bert"}
    assert r["backbones"]["tiny-mpnet"]["steps"]["meta_first_order"]["examples_per_s"] > 0


def test_speed_bad_flags():
    from metalora.bench.speed import parse_ints

    with pytest.raises(ConfigError):
        parse_ints("1,x", "--processes")
    assert main(["bench", "speed", "--processes", "0", "--backbone", "tiny-bert"]) == 2
    assert main(["bench", "speed", "--backbone", "tiny-bert,,minilm"]) == 2  # an empty name in the list
