"""The ceiling tool's transductive heads: the EM prior estimate and the soft k-means refinement."""
from __future__ import annotations

import pytest
import torch

from metalora.bench.ceiling import em_class_prior, soft_kmeans_prototypes


def _gaussian_logits(prior_pos: float, n: int = 20000, seed: int = 0) -> torch.Tensor:
    """Exact class log-likelihoods of 1-D N(-1, 1) vs N(+1, 1) data drawn with the given positive rate."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < prior_pos).long()
    x = torch.randn(n, generator=g, dtype=torch.float64) + (2 * y - 1)
    return torch.stack([-(x + 1) ** 2 / 2, -(x - 1) ** 2 / 2], dim=1)


@pytest.mark.parametrize("prior_pos", [0.5, 0.8, 0.95])
def test_em_recovers_the_class_prior(prior_pos):
    est = em_class_prior(_gaussian_logits(prior_pos))
    assert est.sum().item() == pytest.approx(1.0)
    assert est[1].item() == pytest.approx(prior_pos, abs=0.02)


def test_em_prior_moves_away_from_uniform_only_with_evidence():
    naive = torch.softmax(_gaussian_logits(0.8), dim=1).mean(0)[1].item()  # posterior mean, biased toward 0.5
    assert naive < 0.78 and em_class_prior(_gaussian_logits(0.8))[1].item() > 0.78


def test_soft_kmeans_weights_unlabelled_examples_by_posterior():
    support = torch.tensor([[0.0, 0.0], [0.0, 0.2], [1.0, 1.0], [1.0, 1.2]])
    labels = torch.tensor([0, 0, 1, 1])
    unlabelled = torch.tensor([[0.0, -0.3], [0.0, -0.5], [0.0, -0.4]])  # clearly class 0
    w, b = soft_kmeans_prototypes(support, labels, unlabelled, 2, scale=100.0)
    p0 = (support[:2].sum(0) + unlabelled.sum(0)) / 5
    p1 = support[2:].mean(0)
    assert torch.allclose(w, 2 * torch.stack([p0, p1]), atol=1e-4)
    assert torch.allclose(b, -torch.stack([p0 @ p0, p1 @ p1]), atol=1e-4)


def test_soft_kmeans_with_soft_assignments_mixes_both_prototypes():
    support = torch.tensor([[0.0], [2.0]])
    labels = torch.tensor([0, 1])
    w, _ = soft_kmeans_prototypes(support, labels, torch.tensor([[1.0]]), 2, scale=1.0)  # equidistant: half each
    assert torch.allclose(w[:, 0] / 2, torch.tensor([0.5 / 1.5, 2.5 / 1.5]), atol=1e-6)
