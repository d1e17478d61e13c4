"""The per-example cache of meta-training (metalora.meta.episodes.ExampleCache) under a memory cap:
it never holds more than its budget beyond the current draw, an evicted example comes back with the
same states, and a capped meta-training gives the uncapped init."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.testing import assert_close

from metalora.config import LoraSettings, MetaTrainConfig, load_config
from metalora.errors import ConfigError
from metalora.meta.episodes import ExampleCache
from metalora.meta.trainer import MetaTrainer
from metalora.model import LoraClassifier
from tests.test_meta_trainer import SMOKE, assert_same_init

TEXTS = [f"review {i}: " + " ".join(["good"] * (i % 7) + ["bad"] * (i % 5) + ["ok"]) for i in range(40)]


@pytest.fixture(scope="module")
def model(tiny_backbone):
    m = LoraClassifier(tiny_backbone("tiny-bert", max_length=32), LoraSettings(r=4, top_layers=2))
    assert m.cacheable  # the cap matters for the prefix states, so the test needs them
    return m


def test_a_capped_cache_stays_in_budget_and_returns_the_uncapped_states(model):
    free, capped = ExampleCache(model), ExampleCache(model, max_mb=0.01)  # ~10 KB: a handful of tiny-bert rows
    draws = [list(range(i, i + 6)) for i in range(0, 30, 3)] + [[0, 1, 2, 3], [5, 0, 5]]  # the last ones were evicted
    for idx in draws:
        a, b = free.get("pool", TEXTS, idx), capped.get("pool", TEXTS, idx)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)
        assert_close(a.hidden, b.hidden, atol=1e-6, rtol=0)
        assert capped.bytes <= capped.max_bytes or len(capped.rows) == len(set(idx))
        assert capped.bytes == sum(capped._size(r) for r in capped.rows.values())
    assert capped.evictions > 0 and free.evictions == 0
    assert capped.misses > free.misses  # evicted examples were recomputed
    assert len(free.rows) == 33 and len(capped.rows) < 33  # draws cover examples 0-32


def test_the_cap_evicts_the_least_recently_drawn(model):
    texts = [f"review number {i} was fine" for i in range(5)]  # rows of one size
    one_row = ExampleCache(model)
    one_row.get("p", texts, [0])
    cap = ExampleCache(model, max_mb=3.5 * one_row.bytes / 2**20)  # room for three rows
    for i in (0, 1, 2, 0):  # 0 drawn again: now the most recent, 1 the least
        cap.get("p", texts, [i])
    cap.get("p", texts, [3])
    assert list(cap.rows) == [("p", 2), ("p", 0), ("p", 3)]
    cap.get("p", texts, [4, 1])
    assert list(cap.rows) == [("p", 3), ("p", 4), ("p", 1)]


def test_capped_meta_training_gives_the_uncapped_init(tmp_path, tiny_backbone):
    inits = {}
    for name, extra in (("free", []), ("capped", ["cache_mb=0.02"])):
        cfg = load_config(MetaTrainConfig, SMOKE, [f"output_dir={tmp_path / name}", "log_with=none", "steps=3", *extra])
        fields = {k: v for k, v in dataclasses.asdict(cfg.backbone).items() if k != "name"}
        tr = MetaTrainer(cfg, model=LoraClassifier(tiny_backbone(cfg.backbone.name, **fields), cfg.lora))
        tr.train(resume=False)
        inits[name] = (tmp_path / name / "meta-init", tr.cache)
    assert inits["capped"][1].evictions > 0
    assert inits["capped"][1].bytes <= inits["capped"][1].max_bytes
    assert_same_init(inits["free"][0], inits["capped"][0], atol=1e-6)


def test_cache_mb_must_be_positive():
    with pytest.raises(ConfigError, match="cache_mb"):
        load_config(MetaTrainConfig, SMOKE, ["cache_mb=0", "log_with=none"])
