"""The augmentation ablation of the bench (`metalora bench ... --augment`, metalora.augment.ablation): each
setting is a row beside `meta` on the same support sets and seeds, paired differences are computed from
those runs per family, a task setting meta-trains its own init and reports its time, bad names are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import NEGATIVE, POSITIVE, TINY_META, write_scenario
from metalora.augment.ablation import paired, parse_settings
from metalora.cli import main
from metalora.errors import ConfigError


def test_parse_settings():
    s = parse_settings("none,support,feature,task,calibrate+task-merge")
    assert [x.name for x in s] == ["none", "support", "feature", "task", "calibrate+task-merge"]
    assert [x.row for x in s] == ["meta", "meta+support", "meta+feature", "meta+task", "meta+calibrate+task-merge"]
    assert s[1].support == ("dropout", "swap", "neighbours") and s[1].text and not s[2].text
    assert s[2].support == ("calibrate",) and s[0].support == () and s[0].task == ()
    assert dict(s[3].task) == {"task_interpolation": 0.5} and dict(s[4].task) == {"merge_scenarios": 0.3}
    with pytest.raises(ConfigError, match="unknown setting 'fetaure'.*did you mean 'feature'.*task-merge"):
        parse_settings("none,fetaure")
    with pytest.raises(ConfigError, match="twice"):
        parse_settings("none,feature,feature")


def test_paired_differences_match_by_task_and_seed():
    runs = {"meta": {"a": [{"seed": 0, "accuracy": 0.5}, {"seed": 1, "accuracy": 0.7}], "b": [{"seed": 0, "accuracy": 0.6}]},
            "meta+x": {"a": [{"seed": 1, "accuracy": 0.8}, {"seed": 0, "accuracy": 0.4}], "b": [{"seed": 0, "accuracy": 0.9}]}}
    out = paired(runs, ["meta+x"], {"a": "f1", "b": "f2"}, metrics=("accuracy",))
    assert out["meta+x"]["all"]["accuracy"]["delta"] == pytest.approx(np.mean([0.1, -0.1, 0.3]))
    assert out["meta+x"]["f1"]["accuracy"]["wins"] == 1 and out["meta+x"]["f1"]["accuracy"]["losses"] == 1
    assert out["meta+x"]["f2"]["accuracy"]["runs"] == 1


def _rows(tag: str) -> dict:
    def rows(texts, label, sl):
        return [{"review": f"{tag} {t} {i}", "label": label} for i, t in enumerate(texts[sl])]

    return {"train": rows(POSITIVE * 2, "positive", slice(0, 6)) + rows(NEGATIVE * 2, "negative", slice(0, 6)),
            "test": rows(POSITIVE * 3, "positive", slice(8, 11)) + rows(NEGATIVE * 3, "negative", slice(8, 11))}


def test_bench_suite_ablation_rows_per_family(tmp_path):
    root = tmp_path / "cards"
    for name, fam in (("s/a", "sentiment"), ("s/b", "sentiment"), ("s/c", "sentiment"), ("f/d", "fraud"), ("f/e", "fraud")):
        write_scenario(root / name.replace("/", "_"), _rows(name), name=f"abl/{name}", family=fam)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_META)
    out = tmp_path / "out"
    rc = main(["bench", "suite", "--cards", str(root), "--backbone", "tiny-bert", "--shots", "2", "--seeds", "0", "1",
               "--curve-steps", "none", "--meta-config", str(cfg), "--out", str(out), "--no-progress",
               "--targets", "abl/s/c,abl/f/e", "--train", "abl/s/a,abl/s/b,abl/f/d", "--methods", "frozen-lr",
               "--augment", "none,feature,swap,task", "--augment-set", "calibrate_samples=8", "--augment-set", "copies=1"])
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert list(r["methods"]) == ["meta", "frozen-lr", "meta+feature", "meta+swap", "meta+task"]
    assert r["augment"]["settings"] == {"none": "meta", "feature": "meta+feature", "swap": "meta+swap", "task": "meta+task"}
    assert r["methods"]["meta+feature"]["adapt"]["augment"] == ["calibrate"]
    # the task row trained its own init (MLTI episodes), timed beside the meta init
    mt = r["meta_training"]
    assert mt["meta"]["seconds"] > 0 and mt["meta+task"]["seconds"] > 0 and mt["meta+task"]["init"] != mt["meta"]["init"]
    for row in ("meta+feature", "meta+swap", "meta+task"):
        for task in r["targets"]:
            assert [x["seed"] for x in r["methods"][row]["tasks"][task]["runs"]] == [0, 1]
    # paired differences are those of the runs, per family and over all
    p = r["augment"]["paired"]["meta+feature"]
    assert set(p) == {"sentiment", "fraud", "all"}
    diffs = [a["accuracy"] - b["accuracy"] for t in r["targets"]
             for a, b in zip(r["methods"]["meta+feature"]["tasks"][t]["runs"], r["methods"]["meta"]["tasks"][t]["runs"])]
    assert p["all"]["accuracy"]["delta"] == pytest.approx(np.mean(diffs)) and p["all"]["accuracy"]["runs"] == 4
    # the trained meta init stores no statistics (feature_stats: 0): the bench computed them for the calibrate row
    assert r["augment"]["feature_stats_seconds"].keys() == {"meta"}
    md = (out / "report.md").read_text()
    assert "## Augmentation ablation" in md and "### family fraud" in md and "| feature |" in md


def test_bad_augment_setting_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "synthetic", "--augment", "none,calibrat", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'calibrate'" in err
    assert not out.exists()


def test_bench_arsc_task_row_trains_even_with_a_given_meta_init(tmp_path):
    """A task setting always meta-trains its own init, so the ARSC preset must prepare its training cards."""
    from test_bench import TINY_META as ARSC_META, make_arsc

    data = make_arsc(tmp_path / "arsc")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(ARSC_META.replace("head_prior: true", "adapt_steps: 0").replace("eval_every: 1", "eval_every: 0")
                   .replace('val_scenarios: ["arsc/cc.*", "arsc/tgt.*"]', "val_scenarios: []"))
    common = ["bench", "arsc", "--data-dir", str(data), "--targets", "tgt.t4", "--train-domains", "aa,bb", "--shots", "2",
              "--seeds", "0", "1", "--backbone", "tiny-bert", "--meta-config", str(cfg), "--curve-steps", "none", "--no-progress"]
    assert main([*common, "--methods", "meta", "--out", str(tmp_path / "first")]) == 0
    init = tmp_path / "first" / "meta-train" / "meta-init"
    assert main([*common, "--methods", "frozen-lr", "--meta-init", str(init), "--augment", "none,task-merge",
                 "--out", str(tmp_path / "second")]) == 0
    r = json.loads((tmp_path / "second" / "report.json").read_text())
    assert r["meta_training"]["meta"]["given"] and r["meta_training"]["meta+task-merge"]["seconds"] > 0
    assert r["augment"]["rows"]["meta+task-merge"]["episodes"] == {"merge_scenarios": 0.3}
