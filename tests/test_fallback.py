"""The init check (metalora.fallback): falls back to peft's default LoRA only where the plain backbone separates the
support set better than the init, and says so in the adapter, on the command line and in the bench."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from metalora.cli import main
from metalora.config import AdaptConfig
from metalora.errors import ConfigError
from metalora.fallback import check, fallback_config, separability


def _clusters(n: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:2] * 3.0
    labels = torch.arange(2).repeat_interleave(n)
    x = centres[labels] + spread * torch.randn(2 * n, 8, generator=g)
    return F.normalize(x, dim=1), labels


def test_separability_orders_representations_by_how_well_they_separate_the_support():
    tight, y = _clusters(5, 0.1)
    loose, _ = _clusters(5, 10.0)
    a, b = separability(tight, y, 2), separability(loose, y, 2)
    assert a.loss < b.loss and a.accuracy == 1.0
    # the temperature is chosen per representation: a scaled copy of the features' logits cannot win by its scale
    assert separability(tight, y, 2).loss <= F.cross_entropy(torch.zeros(10, 2), y).item()


def test_leave_one_out_does_not_reward_memorising_the_scored_example():
    # pure noise: every example is closest to itself, so an in-sample prototype head would look perfect
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(10, 64, generator=g), dim=1)
    y = torch.arange(2).repeat_interleave(5)
    s = separability(x, y, 2)
    assert s.accuracy <= 0.7 and s.loss > 0.5


class _Stub:
    """A classifier whose features are fixed per LoRA: 'init' or 'plain'."""

    def __init__(self, feats: dict[str, torch.Tensor]):
        self.feats = feats
        self.default_lora = {"which": "plain"}

    def features(self, params, enc):
        return self.feats[params["which"]]


class _Enc:
    def batches(self, n):
        return [None]


@pytest.mark.parametrize("init_spread, plain_spread, falls_back", [(0.1, 10.0, False), (10.0, 0.1, True)])
def test_check_falls_back_only_when_the_plain_backbone_separates_better(init_spread, plain_spread, falls_back):
    fi, y = _clusters(5, init_spread, seed=2)
    fp, _ = _clusters(5, plain_spread, seed=3)
    got = check(_Stub({"init": fi, "plain": fp}), {"which": "init"}, _Enc(), y, 2)
    assert got.fell_back is falls_back
    assert ("falling back" in got.reason) is falls_back
    # a margin larger than the gap keeps the init
    gap = got.init.loss - got.plain.loss
    assert check(_Stub({"init": fi, "plain": fp}), {"which": "init"}, _Enc(), y, 2, margin=abs(gap) + 1).fell_back is False


def test_fallback_config_is_ordinary_fine_tuning_with_the_callers_other_settings():
    cfg = AdaptConfig(steps=0, optimizer="sgd", lr=0.02, head_lr=0.02, seed=7, eval_batch_size=8, fallback="auto")
    out = fallback_config(cfg)
    plain = AdaptConfig()
    assert (out.steps, out.optimizer, out.lr, out.head_lr) == (plain.steps, plain.optimizer, plain.lr, plain.head_lr)
    assert (out.seed, out.eval_batch_size, out.fallback) == (7, 8, "off")


def test_fallback_settings_are_validated_naming_the_field():
    with pytest.raises(ConfigError, match="fallback"):
        AdaptConfig(fallback="sometimes")
    with pytest.raises(ConfigError, match="fallback_margin"):
        AdaptConfig(fallback_margin=-1.0)


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory, tiny_backbone):
    """A two-step tiny-BERT meta-init of the smoke recipe (synthetic suite), for the API and CLI paths."""
    from test_meta_trainer import smoke_cfg, trainer

    out = tmp_path_factory.mktemp("fallback") / "run"
    trainer(smoke_cfg(out, "checkpoint_every=0", "adapt_steps=0", "eval_every=0"), tiny_backbone).train(resume=False)
    return out / "meta-init"


SCENARIO = "synthetic/sentiment/toys"


def test_api_records_the_check_and_falls_back_to_peft_default(tiny_init, monkeypatch):
    from metalora import api, fallback
    from metalora.fallback import FallbackCheck, Separability

    kept = api.adapt(SCENARIO, init=str(tiny_init), config=AdaptConfig(steps=0, fallback="auto"), shots=2)
    rec = kept.metadata["adapt"]["fallback"]
    assert set(rec) >= {"fell_back", "init", "plain", "reason"} and rec["init"]["loo_loss"] >= 0
    assert "fallback" not in api.adapt(SCENARIO, init=str(tiny_init), config=AdaptConfig(steps=0), shots=2).metadata["adapt"]

    # force the verdict: the run must then train from peft's default LoRA for the ordinary 30 steps
    verdict = FallbackCheck(Separability(1.0, 0.5, 1.0), Separability(0.1, 1.0, 10.0), 0.0, True)
    monkeypatch.setattr(fallback, "check", lambda *a, **k: verdict)
    fell = api.adapt(SCENARIO, init=str(tiny_init), config=AdaptConfig(steps=0, fallback="auto"), shots=2)
    meta = fell.metadata
    assert meta["adapt"]["fallback"]["fell_back"] is True and meta["adapt"]["steps"] == AdaptConfig().steps
    assert meta["adapt"]["optimizer"] == "adamw" and meta["lineage"]["init"] is None
    assert meta["adapt"]["fallback"]["rejected_init"]  # the init that was checked and set aside is named
    moved = [k for k in fell.model.lora_names if "lora_B" in k]
    assert moved and all(fell.model.default_lora[k].abs().sum() == 0 for k in moved)  # peft's default: B = 0
    assert any(fell.params[k].abs().sum() > 0 for k in moved)  # ... trained from there


def test_cli_adapt_says_what_the_check_decided(tiny_init, tmp_path, capsys):
    rc = main(["adapt", SCENARIO, "--init", str(tiny_init), "--shots", "2", "--out", str(tmp_path / "a"), "fallback=auto"])
    assert rc == 0
    assert "init check: the plain backbone separates the support set" in capsys.readouterr().out
    meta = json.loads((tmp_path / "a" / "metalora.json").read_text())
    assert "fallback" in meta["adapt"]


def test_bench_fallback_rows_copy_the_base_run_or_vanilla_run(tmp_path):
    from conftest import NEGATIVE, POSITIVE, write_scenario
    from test_bench_compare import _rows, _suite

    root = tmp_path / "cards"

    for name in ("s/a", "s/b", "s/c"):
        write_scenario(root / name.replace("/", "_"), _rows(name, POSITIVE, NEGATIVE), name=f"fb/{name}", family="sentiment")
    out = tmp_path / "out"
    assert _suite(root, out, "--targets", "fb/s/c", "--train", "fb/s/a,fb/s/b", "--methods", "meta,vanilla", "--fallback") == 0
    r = json.loads((out / "report.json").read_text())
    base, guard, van = (r["methods"][m]["tasks"]["fb/s/c"]["runs"] for m in ("meta", "meta+fallback", "vanilla"))
    assert r["methods"]["meta+fallback"]["fallback"]["runs"] == 2
    for b, g, v in zip(base, guard, van):
        assert "check" in g and g["seed"] == b["seed"] == v["seed"]
        same = v if g["fell_back"] else b
        assert g["accuracy"] == same["accuracy"] and g["macro_f1"] == same["macro_f1"]
        assert g["seconds"] >= same["seconds"]
    assert "| meta+fallback |" in (out / "report.md").read_text()


def test_bench_fallback_needs_a_trained_init_row(tmp_path):
    from conftest import NEGATIVE, POSITIVE, write_scenario
    from test_bench_compare import _rows, _suite

    root = tmp_path / "cards"
    write_scenario(root / "c", _rows("c", POSITIVE, NEGATIVE), name="fb2/c")
    assert _suite(root, tmp_path / "out", "--targets", "fb2/c", "--methods", "vanilla", "--fallback") == 2
