"""The SmolLM2 recipe configs run: recipes/meta_train.py for one step with each config as shipped, the
backbone swapped for the tiny random Llama (same architecture, module names and scoring mode), so the
configs' LoRA targets, prompt, label words and suites are exercised without the real weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalora.config import MetaTrainConfig, load_config

from test_recipes import CONFIGS, load_recipe

SMOLLM2_CONFIGS = sorted(p.name for p in CONFIGS.glob("smollm2_*.yaml"))


def test_there_are_smollm2_configs_for_arsc_and_the_synthetic_suite():
    assert SMOLLM2_CONFIGS == ["smollm2_fomaml_arsc_dev.yaml", "smollm2_fomaml_synthetic.yaml"]
    for name in SMOLLM2_CONFIGS:
        cfg = load_config(MetaTrainConfig, CONFIGS / name)
        assert (cfg.backbone.name, cfg.backbone.scoring) == ("smollm2", "label_words") and "{text}" in cfg.backbone.prompt


@pytest.mark.parametrize("name", SMOLLM2_CONFIGS)
def test_smollm2_config_one_step_on_the_tiny_llama(name, tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "run"
    load_recipe("meta_train").main(["--config", str(CONFIGS / name), "--no-resume", f"output_dir={out}", "backbone.name=tiny-llama",
                                    "steps=1", "meta_batch=2", "val_episodes=1", "checkpoint_every=0", "log_with=none"])
    assert "processes=1" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in history] == [1] and 0.0 <= history[0]["val_acc"] <= 1.0
    from metalora.api import load_init

    model, init = load_init(out / "meta-init")
    assert model.backbone.config.scoring == "label_words" and init.meta["adapt"]["steps"] in (0, 1, 2)
    assert Path(out / "meta-init" / "adapter_config.json").is_file()
