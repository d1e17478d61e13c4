"""Task augmentation of meta-training (metalora.augment.tasks + EpisodeSampler): MLTI interpolation keeps
support and query labels consistent and mixes exactly the hidden states it says, merged label sets
stay disjoint, varied N/K stay in range, every draw is a function of (seed, step, index), plain episodes
are unchanged, and the backbones and algorithms it cannot serve are refused up front."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from metalora.augment import tasks
from metalora.config import EpisodeConfig, MetaTrainConfig, load_config
from metalora.errors import ConfigError
from metalora.meta.episodes import EpisodeSampler, ExampleCache, select_scenarios
from metalora.model import Encoded, LoraClassifier
from metalora.config import LoraSettings

SCENARIOS = ["synthetic/sentiment/*", "synthetic/category/*"]


@pytest.fixture(scope="module")
def model(tiny_backbone):
    return LoraClassifier(tiny_backbone("tiny-bert", max_length=32), LoraSettings(r=4, top_layers=2))


def sampler(model, augment=True, **fields) -> EpisodeSampler:
    cfg = EpisodeConfig(k_shot=2, query_size=6, **fields)
    return EpisodeSampler(select_scenarios(SCENARIOS), cfg, ExampleCache(model), seed=3, augment=augment)


def _parts(episode_scenario: str) -> list[str]:
    return episode_scenario.replace("+", "~").split("~")


def test_plain_episodes_are_unchanged_by_the_new_code_path(model):
    """With no task augmentation (or augment=False) an episode is the same draw as before."""
    a, b = sampler(model), sampler(model, augment=False, task_interpolation=1.0)
    for i in range(4):
        ea, eb = a.episode(5, i), b.episode(5, i)
        assert ea.scenario == eb.scenario and ea.classes == eb.classes
        assert torch.equal(ea.support.ids, eb.support.ids) and torch.equal(ea.query_labels, eb.query_labels)


def test_interpolation_keeps_support_and_query_labels_consistent(model):
    s = sampler(model, task_interpolation=1.0, interpolation_alpha=2.0)
    for i in range(6):
        ep = s.episode(0, i)
        assert "~" in ep.scenario, "every episode is interpolated at probability 1"
        a_name, b_name = ep.scenario.split("~")
        assert a_name != b_name
        # labels are 0..n-1, every class present in the support with k_shot examples and in the query
        counts = torch.bincount(ep.support_labels, minlength=ep.num_labels)
        assert counts.tolist() == [2] * ep.num_labels
        assert set(ep.query_labels.tolist()) <= set(range(ep.num_labels))
        assert len(ep.support) == len(ep.support_labels) and len(ep.query) == len(ep.query_labels)


def test_interpolation_mixes_the_two_episodes_hidden_states_with_one_weight(model):
    """Rebuild A and B from the sampler's own draws and check hidden = lam A + (1 - lam) B where both are present."""
    s = sampler(model, task_interpolation=1.0)
    ep = s.episode(2, 1)
    rng = np.random.default_rng([s.seed, 2, 1])
    pool = s.pools[int(rng.choice(len(s.pools), p=s.weights))]
    assert ep.scenario.startswith(pool.name + "~")
    n = ep.num_labels
    draw = s._draw(pool, rng, n, 2)
    a = s._episode(pool.name, pool, draw)
    aug = np.random.default_rng([s.seed, 2, 1, 1])
    aug.random()  # the task_interpolation coin
    other = s._partner(pool, aug, n)
    counts = np.bincount(np.asarray(draw[3]), minlength=n)
    b = s._episode(other.name, other, s._draw(other, aug, n, 2, query_counts=counts))
    lam = float(aug.beta(0.5, 0.5))
    assert torch.equal(a.support_labels, b.support_labels)
    mixed = tasks.mix_encoded(a.support, b.support, lam)
    assert_close(ep.support.hidden, mixed.hidden)
    w = min(a.support.hidden.shape[1], b.support.hidden.shape[1])
    m = (a.support.mask[:, :w].bool() & b.support.mask[:, :w].bool())[..., None]
    expect = lam * a.support.hidden[:, :w] + (1 - lam) * b.support.hidden[:, :w]
    assert_close(torch.where(m, ep.support.hidden[:, :w], 0.0), torch.where(m, expect, 0.0))


def test_mix_encoded_keeps_the_longer_text_and_refuses_without_hidden_states():
    h_a, h_b = torch.ones(1, 3, 2), torch.full((1, 2, 2), 3.0)
    a = Encoded(torch.ones(1, 3, dtype=torch.long), torch.tensor([[1, 1, 1]]), h_a)
    b = Encoded(torch.ones(1, 2, dtype=torch.long), torch.tensor([[1, 1]]), h_b)
    out = tasks.mix_encoded(a, b, 0.25)
    assert out.mask.tolist() == [[1, 1, 1]]
    assert_close(out.hidden[0, :2], torch.full((2, 2), 0.25 * 1 + 0.75 * 3))
    assert_close(out.hidden[0, 2], torch.ones(2))  # only A is that long: its own state
    with pytest.raises(ValueError, match="hidden states"):
        tasks.mix_encoded(Encoded(a.ids, a.mask), b, 0.5)


def test_match_labels():
    idx = tasks.match_labels(torch.tensor([1, 0, 1]), torch.tensor([0, 1, 1, 0]))
    assert torch.tensor([0, 1, 1, 0])[idx].tolist() == [1, 0, 1] and len(set(idx.tolist())) == 3


def test_merged_label_sets_are_disjoint_and_complete(model):
    s = sampler(model, merge_scenarios=1.0)
    for i in range(4):
        ep = s.episode(1, i)
        assert "+" in ep.scenario
        a_name, b_name = ep.scenario.split("+")
        pools = {p.name: p for p in s.pools}
        assert pools[a_name].group != pools[b_name].group
        assert ep.num_labels == len(ep.classes) >= 4
        assert torch.bincount(ep.support_labels, minlength=ep.num_labels).tolist() == [2] * ep.num_labels
        assert set(ep.query_labels.tolist()) <= set(range(ep.num_labels))
        # every support row is an example of the class its label names: the ids match the pool's text
        assert len(ep.support) == 2 * ep.num_labels


def test_varied_n_and_k_stay_in_range_and_reproduce(model):
    s = sampler(model, k_shot_min=1, n_way_min=2)
    seen_k, seen_n = set(), set()
    for i in range(12):
        ep = s.episode(4, i)
        counts = torch.bincount(ep.support_labels, minlength=ep.num_labels).tolist()
        assert len(set(counts)) == 1 and 1 <= counts[0] <= 2
        seen_k.add(counts[0])
        seen_n.add(ep.num_labels)
        assert ep.num_labels >= 2
        again = sampler(model, k_shot_min=1, n_way_min=2).episode(4, i)
        assert torch.equal(ep.support.ids, again.support.ids) and torch.equal(ep.query_labels, again.query_labels)
    assert seen_k == {1, 2}
    assert len(seen_n) > 1, "category scenarios have more than 2 classes, so N must vary"


def test_seeds_reproduce_interpolated_episodes(model):
    a, b = sampler(model, task_interpolation=0.5), sampler(model, task_interpolation=0.5)
    for i in range(6):
        ea, eb = a.episode(7, i), b.episode(7, i)
        assert ea.scenario == eb.scenario
        assert_close(ea.support.hidden, eb.support.hidden)
        assert torch.equal(ea.query_labels, eb.query_labels)


def test_interpolation_refused_for_a_backbone_without_prefix_cache(tiny_backbone, monkeypatch):
    """Which architectures have a prefix cache changes (model.cacheable); the refusal follows it."""
    model = LoraClassifier(tiny_backbone("tiny-gpt2", max_length=32), LoraSettings(r=4))
    monkeypatch.setattr(LoraClassifier, "cacheable", property(lambda self: False))
    with pytest.raises(ConfigError, match="task_interpolation.*does not cache"):
        sampler(model, task_interpolation=0.5)
    sampler(model, augment=False, task_interpolation=0.5)  # validation episodes never interpolate


@pytest.mark.parametrize("field,value,match", [
    ("task_interpolation", 1.5, "probability"), ("merge_scenarios", -0.1, "probability"),
    ("k_shot_min", 9, "k_shot_min"), ("n_way_min", 1, "n_way_min"), ("interpolation_alpha", 0.0, "interpolation_alpha"),
])
def test_episode_config_validation(field, value, match):
    with pytest.raises(ConfigError, match=match):
        EpisodeConfig(**{field: value})


def test_multitask_refuses_task_augmentation():
    with pytest.raises(ConfigError, match="multitask"):
        MetaTrainConfig(algorithm="multitask", episodes=EpisodeConfig(task_interpolation=0.5))


def test_meta_training_with_every_task_augmentation_writes_an_init_with_feature_stats(tmp_path, tiny_backbone):
    from metalora.augment.calibration import FEATURE_STATS_FILE, load_feature_stats
    from metalora.adapter_io import load_params
    from metalora.augment.calibration import lora_fingerprint
    from metalora.meta.trainer import MetaTrainer

    cfg = load_config(MetaTrainConfig, "recipes/configs/smoke_fomaml_tiny.yaml",
                      [f"output_dir={tmp_path}", "log_with=none", "steps=3", "feature_stats=6", "episodes.task_interpolation=0.5",
                       "episodes.merge_scenarios=0.3", "episodes.k_shot_min=1", "episodes.n_way_min=2"])
    fields = {k: v for k, v in dataclasses.asdict(cfg.backbone).items() if k != "name"}
    model = LoraClassifier(tiny_backbone(cfg.backbone.name, **fields), cfg.lora)
    res = MetaTrainer(cfg, model=model).train()
    assert (res.init_dir / FEATURE_STATS_FILE).is_file()
    stats = load_feature_stats(res.init_dir)
    assert stats.fingerprint == pytest.approx(lora_fingerprint(load_params(res.init_dir, model)))
    assert stats.means.shape[1] == model.backbone.hidden_size and int(stats.counts.max()) <= 6
