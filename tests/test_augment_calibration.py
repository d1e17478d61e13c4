"""Distribution calibration (metalora.augment.calibration): the stored statistics are those of the
training features, calibrated samples follow the calibrated mean and covariance, seeds reproduce, and
statistics that are missing or belong to other weights are refused."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from metalora.augment.calibration import (
    FeatureStats, calibrate, check_stats, class_stats, compute_feature_stats, load_feature_stats, lora_fingerprint,
    save_feature_stats,
)
from metalora.config import LoraSettings
from metalora.errors import ConfigError
from metalora.model import LoraClassifier


def _cov(x: torch.Tensor) -> torch.Tensor:
    x = x.double() - x.double().mean(0)
    return (x.T @ x / (len(x) - 1)).float()


def test_class_stats_is_exact_when_the_rank_covers_the_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 10, generator=g)
    mean, w, rest = class_stats(x, rank=8)  # 6 examples: at most 5 directions of variance
    assert_close(mean, x.mean(0))
    assert_close(w @ w.T + rest * torch.eye(10), _cov(x), atol=1e-5, rtol=1e-4)


def test_class_stats_keeps_the_top_directions_and_the_total_variance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 12, generator=g) * torch.linspace(0.2, 3.0, 12)
    _, w, rest = class_stats(x, rank=3)
    full, approx = _cov(x), w @ w.T + rest * torch.eye(12)
    assert approx.trace().item() == pytest.approx(full.trace().item(), rel=1e-4)
    top = torch.linalg.eigh(full.double()).eigenvectors[:, -3:].float()
    assert_close(top.T @ approx @ top, top.T @ full @ top, atol=1e-4, rtol=1e-4)


def _stats() -> FeatureStats:
    g = torch.Generator().manual_seed(2)
    h, r = 5, 2
    means = torch.tensor([[3.0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0], [0, 0, -3.0, 0, 0], [0, 0, 0, 0, 3.0]])
    factors = torch.randn(4, h, r, generator=g) * 0.5
    return FeatureStats([f"s:{i}" for i in range(4)], means, factors, torch.tensor([0.1, 0.2, 0.3, 0.4]),
                        torch.tensor([50, 50, 50, 50]), 0.0)


def test_calibrated_samples_follow_the_calibrated_distribution():
    stats = _stats()
    x = torch.tensor([[2.0, 1.0, 0, 0, 0]])  # nearest training classes: 0 and 1
    k, alpha = 2, 0.5
    samples, labels = calibrate(stats, x, torch.tensor([0]), 1, per_class=40000, k=k, alpha=alpha,
                                generator=torch.Generator().manual_seed(0))
    assert samples.shape == (40000, 5) and labels.unique().tolist() == [0]
    mean = (stats.means[0] + stats.means[1] + x[0]) / (k + 1)
    cov = (stats.covariance(0) + stats.covariance(1)) / 2 + alpha * stats.scale * torch.eye(5)
    assert_close(samples.mean(0), mean, atol=0.03, rtol=0)
    assert_close(_cov(samples), cov, atol=0.04, rtol=0.03)


def test_samples_are_spread_over_the_support_and_reproduce():
    stats = _stats()
    feats = torch.tensor([[2.0, 1, 0, 0, 0], [0, 0, -2, 0, 1], [0, 0, 0, 0, 2]])
    labels = torch.tensor([0, 0, 1])
    a = calibrate(stats, feats, labels, 2, per_class=7, k=2, alpha=0.1, generator=torch.Generator().manual_seed(3))
    b = calibrate(stats, feats, labels, 2, per_class=7, k=2, alpha=0.1, generator=torch.Generator().manual_seed(3))
    c = calibrate(stats, feats, labels, 2, per_class=7, k=2, alpha=0.1, generator=torch.Generator().manual_seed(4))
    assert torch.bincount(a[1]).tolist() == [7, 7]
    assert_close(a[0], b[0])
    assert not torch.allclose(a[0], c[0])


def test_computed_statistics_are_those_of_the_features_and_round_trip(tmp_path, tiny_backbone, write_card):
    from metalora.scenarios import get_scenario

    sc = get_scenario(str(write_card()))
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(r=4, top_layers=2))
    lora = {k: v + 0.01 for k, v in model.default_lora.items()}
    stats = compute_feature_stats(model, lora, [sc], "train", per_class=100, rank=4)
    assert stats.names == ["local/reviews:negative", "local/reviews:positive"]
    ds = sc.load("train")
    feats = model.features(lora, model.encode(ds["text"])).detach()
    y = torch.tensor(ds["label"])
    for c in range(2):
        assert_close(stats.means[c], feats[y == c].mean(0), atol=1e-5, rtol=1e-4)
        assert_close(stats.covariance(c), _cov(feats[y == c]), atol=1e-5, rtol=1e-3)  # 5 examples: rank 4 is exact
    save_feature_stats(stats, tmp_path)
    back = load_feature_stats(tmp_path)
    assert back.names == stats.names and math.isclose(back.fingerprint, stats.fingerprint)
    assert_close(back.factors, stats.factors)
    assert check_stats(back, lora, model.backbone.hidden_size, "here") is back
    with pytest.raises(ConfigError, match="other LoRA weights"):
        check_stats(back, model.default_lora, model.backbone.hidden_size, "here")
    with pytest.raises(ConfigError, match="feature_stats > 0"):
        check_stats(None, lora, model.backbone.hidden_size, "here")
    assert load_feature_stats(tmp_path / "nothing") is None
    assert lora_fingerprint(lora) != lora_fingerprint(model.default_lora)
