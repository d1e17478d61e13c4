"""The adaptation budget chosen per family on validation scenarios (metalora.meta.budget) and where it is used."""
from __future__ import annotations

import json

import pytest

from metalora.config import ConfigError, MetaTrainConfig, load_config
from metalora.meta.budget import candidates, choose


def test_choose_per_family_and_on_the_mean_ties_to_the_earlier_candidate():
    order = ["sgd:0", "sgd:1", "adamw:30"]
    table = {"fraud": {"sgd:0": 0.80, "sgd:1": 0.78, "adamw:30": 0.70},
             "categorisation": {"sgd:0": 0.69, "sgd:1": 0.69, "adamw:30": 0.73}}
    per, overall = choose(table, order)
    assert per == {"fraud": "sgd:0", "categorisation": "adamw:30"}
    assert overall == "sgd:0"  # mean 0.745 vs 0.735 vs 0.715
    per, _ = choose({"x": {"sgd:0": 0.5, "sgd:1": 0.5, "adamw:30": 0.5}}, order)
    assert per == {"x": "sgd:0"}


def test_candidates_and_config_checks():
    cfg = load_config(MetaTrainConfig, None, ["val_scenarios=[synthetic/sentiment/beauty]", "eval_every=1",
                                              "adapt_steps_choices=[0,2]", "budget.by_family=true", "budget.finetune_steps=[5]"])
    assert candidates(cfg) == [("sgd", 0), ("sgd", 2), ("sgd", 3), ("adamw", 5)]  # inner_steps (3) is scored too
    with pytest.raises(ConfigError, match="finetune_steps"):
        load_config(MetaTrainConfig, None, ["budget.finetune_steps=[5]"])
    with pytest.raises(ConfigError, match="budget"):
        load_config(MetaTrainConfig, None, ["budget.by_family=true"])


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory, tiny_backbone):
    from test_meta_trainer import smoke_cfg, trainer

    out = tmp_path_factory.mktemp("budget") / "run"
    cfg = smoke_cfg(out, "checkpoint_every=0", "eval_every=2", "inner_steps=0", "adapt_steps_choices=[0,1]",
                    "val_scenarios=[synthetic/sentiment/beauty,synthetic/category/marketplace_eu]",
                    "budget.by_family=true", "budget.finetune_steps=[2]", "budget.episodes=2")
    trainer(cfg, tiny_backbone).train(resume=False)
    return out / "meta-init", cfg


def test_the_trainer_records_a_budget_per_validation_family(budget_run):
    init, cfg = budget_run
    meta = json.loads((init / "metalora.json").read_text())
    rec = meta["adapt_validation"]
    assert set(rec["accuracy"]) == {"sentiment", "categorisation"} == set(meta["adapt_by_family"])
    for fam, scores in rec["accuracy"].items():
        assert set(scores) == {"sgd:0", "sgd:1", "adamw:2"} and all(0.0 <= v <= 1.0 for v in scores.values())
        best = max(scores.values())
        chosen = rec["chosen"][fam]
        assert scores[chosen] == best
        opt, n = chosen.split(":")
        assert meta["adapt_by_family"][fam]["optimizer"] == opt and meta["adapt_by_family"][fam]["steps"] == int(n)
    mean = {c: sum(s[c] for s in rec["accuracy"].values()) / 2 for c in ("sgd:0", "sgd:1", "adamw:2")}
    assert mean[rec["overall"]] == max(mean.values())
    assert meta["adapt"]["steps"] == int(rec["overall"].split(":")[1])


def test_adapt_defaults_follow_the_scenario_family(budget_run, tmp_path):
    from metalora.adapter_io import AdapterFolder

    init, _ = budget_run
    meta_path = init.parent / "copy"
    import shutil

    shutil.copytree(init, meta_path)
    meta = json.loads((meta_path / "metalora.json").read_text())
    meta["adapt"] = {"optimizer": "sgd", "lr": 0.1, "head_lr": 0.1, "steps": 0}
    meta["adapt_by_family"] = {"sentiment": {"optimizer": "adamw", "lr": 0.001, "head_lr": 0.01, "steps": 2}}
    (meta_path / "metalora.json").write_text(json.dumps(meta))
    folder = AdapterFolder.open(meta_path)
    assert folder.adapt_defaults("sentiment")["optimizer"] == "adamw"
    assert folder.adapt_defaults("fraud")["steps"] == 0 and folder.adapt_defaults()["steps"] == 0

    from metalora.api import adapt

    got = adapt("synthetic/sentiment/toys", init=str(meta_path), shots=2)
    assert got.metadata["adapt"]["optimizer"] == "adamw" and got.metadata["adapt"]["steps"] == 2
    got = adapt("synthetic/category/marketplace_us", init=str(meta_path), shots=2)
    assert got.metadata["adapt"]["steps"] == 0


def test_an_existing_init_can_be_given_a_budget_afterwards(budget_run, tmp_path, capsys):
    import shutil

    from metalora.meta.budget import main

    init, _ = budget_run
    copy = tmp_path / "init"
    shutil.copytree(init, copy)
    meta = json.loads((copy / "metalora.json").read_text())
    for k in ("adapt_by_family", "adapt_validation"):
        meta.pop(k)
    (copy / "metalora.json").write_text(json.dumps(meta))
    assert main([str(copy), "budget.finetune_steps=[2,3]"]) == 0
    after = json.loads((copy / "metalora.json").read_text())
    assert set(after["adapt_validation"]["accuracy"]["sentiment"]) == {"sgd:0", "sgd:1", "adamw:2", "adamw:3"}
    # the same episodes and loop as in training: the shared candidates score the same
    before = json.loads((init / "metalora.json").read_text())["adapt_validation"]["accuracy"]
    for fam, scores in before.items():
        for c, v in scores.items():
            assert after["adapt_validation"]["accuracy"][fam][c] == pytest.approx(v)
    assert '"chosen"' in capsys.readouterr().out


def test_the_bench_adapts_each_target_with_its_familys_budget(budget_run, tmp_path):
    import shutil

    from conftest import NEGATIVE, POSITIVE, write_scenario
    from test_bench_compare import _rows

    from metalora.cli import main

    init, _ = budget_run
    root = tmp_path / "cards"
    write_scenario(root / "s", _rows("s", POSITIVE, NEGATIVE), name="bud/s", family="sentiment")
    write_scenario(root / "f", _rows("f", POSITIVE, NEGATIVE), name="bud/f", family="fraud")

    def variant(name: str, adapt: dict, by_family: dict | None):
        d = tmp_path / name
        shutil.copytree(init, d)
        meta = json.loads((d / "metalora.json").read_text())
        meta["adapt"], meta["adapt_by_family"] = adapt, by_family or {}
        (d / "metalora.json").write_text(json.dumps(meta))
        return d

    sgd0 = {"optimizer": "sgd", "lr": 0.1, "head_lr": 0.1, "steps": 0}
    ft = {"optimizer": "adamw", "lr": 0.01, "head_lr": 0.1, "steps": 3}
    reports = {}
    for name, adapt, fam in (("per-family", sgd0, {"sentiment": ft}), ("all-sgd", sgd0, None), ("all-ft", ft, None)):
        out = tmp_path / f"out-{name}"
        assert main(["bench", "suite", "--cards", str(root), "--targets", "bud/s,bud/f", "--methods", "meta", "--meta-init",
                     str(variant(name, adapt, fam)), "--shots", "2", "--seeds", "0", "1", "--curve-steps", "none",
                     "--out", str(out), "--no-progress"]) == 0
        reports[name] = json.loads((out / "report.json").read_text())["methods"]["meta"]

    def accs(r, task):
        return [run["accuracy"] for run in r["tasks"][task]["runs"]]

    assert accs(reports["all-ft"], "bud/s") != accs(reports["all-sgd"], "bud/s")  # the two budgets are told apart here
    assert accs(reports["per-family"], "bud/s") == accs(reports["all-ft"], "bud/s")
    assert accs(reports["per-family"], "bud/f") == accs(reports["all-sgd"], "bud/f")
    assert reports["per-family"]["adapt"]["by_family"] == {"sentiment": ft}
