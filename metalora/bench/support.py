"""Where a target's support sets come from: a random draw per seed, or a "borderline" draw.

A user adapts from ONE support set. A random draw per seed shows the spread a user meets; the
borderline draw is a stress protocol for the tail: each class's support examples are drawn from the
examples a plain model finds least typical of their label, which is what made the official ARSC
supports flip whole tasks (their "positive" examples of a 1-star-vs-rest task were 2- and 3-star
complaints).

"A plain model" is defined so that it exists for every scenario, not only for sentiment: the frozen
backbone (no LoRA) with a logistic regression trained on the support split's own labels. Each
example's typicality is the out-of-fold probability of its true label (5-fold cross-validation, so an
example never scores itself). The borderline pool of a class is its `fraction` least typical examples
(at least `shots` of them); the support draws `shots` per class from that pool with the seed.
"""
from __future__ import annotations

import numpy as np

from metalora.errors import ConfigError, DataError

SAMPLINGS = ("random", "borderline")


def check_sampling(sampling: str, fraction: float) -> None:
    if sampling not in SAMPLINGS:
        raise ConfigError(f"--support-sampling: got {sampling!r}; choose from {', '.join(SAMPLINGS)}")
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--borderline-fraction: got {fraction!r}; must be in (0, 1]")


def typicality(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold probability of each example's own label under a logistic regression on `features`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.asarray(labels)
    counts = np.bincount(labels)
    folds = int(min(5, counts[counts > 0].min()))
    if folds < 2:
        raise DataError("borderline sampling needs at least 2 examples of every class in the support split")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(LogisticRegression(max_iter=1000), features, labels, cv=cv, method="predict_proba")
    classes = np.unique(labels)
    column = {c: i for i, c in enumerate(classes)}
    return probs[np.arange(len(labels)), [column[c] for c in labels]]


def borderline_indices(typical: np.ndarray, labels: np.ndarray, shots: int, seed: int, num_labels: int,
                       fraction: float, where: str) -> list[int]:
    """`shots` per class drawn (seeded) from the class's `fraction` least typical examples."""
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for c in range(num_labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < shots:
            raise DataError(f"{where}: asked for {shots} shots of class {c} but the split has only {len(idx)}; "
                            f"lower --shots to {len(idx)} or less")
        order = idx[np.argsort(typical[idx], kind="stable")]
        pool = order[: max(shots, int(np.ceil(fraction * len(idx))))]
        picked.extend(rng.choice(pool, size=shots, replace=False).tolist())
    rng.shuffle(picked)
    return picked
