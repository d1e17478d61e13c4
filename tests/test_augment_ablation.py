"""The augmentation ablation (metalora.augment.ablation, `metalora bench ... --augment`): every setting
runs on the same support sets and seeds, paired differences to the first setting are computed from
those runs, a task setting meta-trains its own init and reports its time, and bad names are refused."""
from __future__ import annotations

import json

import pytest

from metalora.augment.ablation import AblationOptions, parse_settings, run_ablation
from metalora.bench.arsc import TargetTask, Training
from metalora.errors import ConfigError
from metalora.scenarios import get_scenario

SMOKE = "recipes/configs/smoke_fomaml_tiny.yaml"


def test_parse_settings():
    s = parse_settings("none,support,feature,task,calibrate+task-merge")
    assert [x.name for x in s] == ["none", "support", "feature", "task", "calibrate+task-merge"]
    assert s[0].support == () and s[0].task_key == "none"
    assert s[1].support == ("dropout", "swap", "neighbours") and s[2].support == ("calibrate",)
    assert dict(s[3].task) == {"task_interpolation": 0.5} and dict(s[4].task) == {"merge_scenarios": 0.3}
    with pytest.raises(ConfigError, match="unknown setting 'fetaure'.*did you mean 'feature'.*task-merge"):
        parse_settings("none,fetaure")
    with pytest.raises(ConfigError, match="twice"):
        parse_settings("none,none")


def test_ablation_runs_every_setting_on_the_same_support_sets(tmp_path, write_card):
    from conftest import NEGATIVE, POSITIVE

    rows = {"train": [{"review": t, "label": "positive"} for t in POSITIVE[:6]] + [{"review": t, "label": "negative"} for t in NEGATIVE[:6]],
            "test": [{"review": t, "label": "positive"} for t in POSITIVE[6:]] + [{"review": t, "label": "negative"} for t in NEGATIVE[6:]]}
    sc = get_scenario(str(write_card(rows)))
    targets = [TargetTask(sc.name, sc, "train")]
    training = Training(("synthetic/sentiment/*",), None, describe={"scenarios": []})
    opts = AblationOptions(settings=parse_settings("none,feature,swap,task"), out=tmp_path / "out", shots=2, seeds=(0, 1),
                           meta_config=SMOKE, meta_overrides=("steps=1", "val_scenarios=[]", "feature_stats=6"),
                           augment_overrides=("calibrate_samples=8", "copies=1"), progress=False)
    report = run_ablation(targets, training, opts)
    settings = report["settings"]
    assert list(settings) == ["none", "feature", "swap", "task"]
    none = settings["none"]["families"]["sentiment"]
    assert none["accuracy"]["delta"] == 0 and none["accuracy"]["runs"] == 2
    # the same init serves none/feature/swap; the task setting trained its own, with its time
    assert settings["feature"]["init"] == settings["none"]["init"] and settings["none"]["init"]["seconds"] is not None
    assert settings["task"]["init"]["init"] != settings["none"]["init"]["init"]
    assert settings["task"]["init"]["episodes_config"] == {"task_interpolation": 0.5}
    runs = {k: v["tasks"][sc.name]["runs"] for k, v in settings.items()}
    assert [r["seed"] for r in runs["swap"]] == [0, 1]
    assert all(r["support_examples"] == 4 for r in runs["none"]) and all(r["support_examples"] == 8 for r in runs["swap"])
    for k in settings:
        for r in runs[k]:
            assert 0 <= r["accuracy"] <= 1 and r["seconds"] > 0
    diff = [a["accuracy"] - b["accuracy"] for a, b in zip(runs["feature"], runs["none"])]
    assert settings["feature"]["families"]["sentiment"]["accuracy"]["delta"] == pytest.approx(sum(diff) / 2)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["baseline"] == "none"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| feature |" in md and "meta-train s" in md
