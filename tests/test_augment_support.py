"""Support-set augmentation inside adaptation (metalora.augment.support via metalora.adapt) and from the
API, the CLI and config files: calibrated features move the head, mixup moves the weights, a seed
reproduces both, and what an init or a setting cannot serve is refused before any work."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.testing import assert_close

from metalora.adapt import Init, adapt as adapt_loop
from metalora.api import adapt, load_init
from metalora.augment.calibration import FEATURE_STATS_FILE
from metalora.cli import main
from metalora.config import AdaptConfig, AugmentConfig, BackboneConfig, MetaTrainConfig, load_config
from metalora.errors import ConfigError
from metalora.model import LoraClassifier


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory, tiny_backbone):
    """A tiny meta-init (1 outer step on the synthetic suite) with its training-class statistics."""
    from metalora.meta.trainer import MetaTrainer

    out = tmp_path_factory.mktemp("init")
    cfg = load_config(MetaTrainConfig, "recipes/configs/smoke_fomaml_tiny.yaml",
                      [f"output_dir={out}", "log_with=none", "steps=1", "feature_stats=8", "val_scenarios=[]"])
    fields = {k: v for k, v in dataclasses.asdict(cfg.backbone).items() if k != "name"}
    res = MetaTrainer(cfg, model=LoraClassifier(tiny_backbone(cfg.backbone.name, **fields), cfg.lora)).train()
    assert (res.init_dir / FEATURE_STATS_FILE).is_file()
    return res.init_dir


@pytest.fixture(scope="module")
def loaded(init_dir):
    return load_init(init_dir)


def _support(model):
    from conftest import NEGATIVE, POSITIVE

    texts = POSITIVE[:3] + NEGATIVE[:3]
    return model.encode(texts), torch.tensor([1, 1, 1, 0, 0, 0])


def _run(model, init, steps=0, seed=0, **aug):
    enc, y = _support(model)
    cfg = AdaptConfig(steps=steps, lr=0.05, head_lr=0.05, optimizer="sgd", seed=seed, augment=AugmentConfig(**aug))
    return adapt_loop(model, enc, y, 2, init, cfg)


def test_calibrated_features_move_the_prototype_head_reproducibly(loaded):
    model, init = loaded
    plain = _run(model, init)
    cal = _run(model, init, methods=("calibrate",), calibrate_samples=30)
    assert not torch.allclose(plain["head.weight"], cal["head.weight"]), "the calibrated samples must join the prototypes"
    assert_close(_run(model, init, methods=("calibrate",), calibrate_samples=30)["head.weight"], cal["head.weight"])
    other = _run(model, init, seed=1, methods=("calibrate",), calibrate_samples=30)
    assert not torch.allclose(other["head.weight"], cal["head.weight"])
    assert all(torch.equal(plain[n], cal[n]) for n in init.lora), "0 steps: LoRA is the init's"


def test_mixup_moves_the_weights_reproducibly_and_needs_steps(loaded):
    model, init = loaded
    plain = _run(model, init, steps=3)
    mixed = _run(model, init, steps=3, methods=("mixup",))
    name = next(n for n in init.lora if "lora_B" in n)
    assert not torch.allclose(plain[name], mixed[name])
    assert_close(_run(model, init, steps=3, methods=("mixup",))[name], mixed[name])
    with pytest.raises(ConfigError, match="mixup.*steps"):
        _run(model, init, steps=0, methods=("mixup",))


def test_calibrate_refused_without_statistics(loaded, tiny_backbone):
    model, init = loaded
    with pytest.raises(ConfigError, match="feature_stats > 0.*metalora.augment.calibration"):
        _run(model, Init(lora=model.default_lora), methods=("calibrate",))
    moved = {k: v + 0.5 for k, v in init.lora.items()}
    with pytest.raises(ConfigError, match="other LoRA weights"):
        _run(model, Init(lora=moved, feature_stats=init.feature_stats), methods=("calibrate",))


def test_api_adapts_with_augmentation_and_records_it(init_dir, local_card):
    cfg = AdaptConfig(backbone=BackboneConfig(name="tiny-bert", max_length=32), steps=1, optimizer="sgd", lr=0.05, head_lr=0.05,
                      augment=AugmentConfig(methods=("swap", "calibrate"), copies=2))
    model = adapt(str(local_card), init=str(init_dir), config=cfg, shots=3)
    rec = model.metadata["adapt"]["augment"]
    assert rec["methods"] == ["swap", "calibrate"] and rec["examples"] == 6 * (1 + 2)
    again = adapt(str(local_card), init=str(init_dir), config=cfg, shots=3)
    assert_close(model.params["head.weight"], again.params["head.weight"])


def test_cli_and_config_file(tmp_path, init_dir, local_card, capsys):
    out = tmp_path / "adapter"
    assert main(["adapt", str(local_card), "--init", str(init_dir), "--out", str(out), "--shots", "3",
                 "--augment", "dropout,calibrate", "--set", "augment.copies=1"]) == 0
    meta = json.loads((out / "metalora.json").read_text())
    assert meta["adapt"]["augment"]["methods"] == ["dropout", "calibrate"] and meta["adapt"]["augment"]["examples"] == 12

    assert main(["adapt", str(local_card), "--init", str(init_dir), "--out", str(tmp_path / "x"), "--augment", "dropuot"]) == 2
    err = capsys.readouterr().err
    assert "unknown augmentation 'dropuot'" in err and "calibrate" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()

    yaml_file = tmp_path / "adapt.yaml"
    yaml_file.write_text("steps: 0\naugment:\n  methods: [support, feature]\n  calibrate_samples: 40\n", encoding="utf-8")
    cfg = load_config(AdaptConfig, yaml_file)
    assert cfg.augment.methods == ("dropout", "swap", "neighbours", "calibrate") and cfg.augment.calibrate_samples == 40
    yaml_file.write_text("augment:\n  method: [swap]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="augment.method.*did you mean `augment.methods`"):
        load_config(AdaptConfig, yaml_file)
