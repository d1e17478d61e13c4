"""The learned selector: which library entry adapts best to a scenario, predicted from its support set.

Trained across the training scenarios: for each, a support set is scored by every entry (the cheap
signals of `signals.py`), every candidate entry is adapted with its own settings and scored on held-out
examples of that scenario, and the selector learns to rank entries the way the held-out accuracy
does. That is what makes selection meta-learning rather than a hand-set rule: the rule ("trust the
zero-step loss", "prefer the meta-init on a new family") is fitted on past scenarios.

The model is a linear pairwise ranker (RankNet / RankSVM with a logistic loss: for two entries of the
same scenario, P(i adapts better than j) = sigmoid(w . (x_i - x_j))), fitted with scikit-learn's
LogisticRegression. Task-level offsets cancel in the differences, and a linear model is stored as a
few numbers in JSON: no pickle ever needs to be loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metalora.errors import DataError

FEATURES = ("zs_loss", "zs_acc", "sig_cos", "has_signature", "is_default", "is_meta_init", "is_adapter",
            "labels_match", "label_overlap", "entry_score", "default_x_zs_acc", "meta_x_zs_acc")
SELECTOR_FILE = "library_selector.json"


def feature_rows(rows: list[dict]) -> np.ndarray:
    """Features of one scenario's (support, entry) pairs; loss, accuracy and similarity are taken
    relative to the scenario's mean over entries, so that what is learned is a preference between
    entries, not how hard the scenario is."""
    if not rows:
        return np.zeros((0, len(FEATURES)))
    zl = np.array([r["zs_loss"] for r in rows], dtype=float)
    za = np.array([r["zs_acc"] for r in rows], dtype=float)
    sig = np.array([r["sig_cos"] if r.get("sig_cos") is not None else np.nan for r in rows], dtype=float)
    has_sig = ~np.isnan(sig)
    sig_rel = np.where(has_sig, sig - (np.nanmean(sig) if has_sig.any() else 0.0), 0.0)
    zl_rel, za_rel = zl - zl.mean(), za - za.mean()
    out = []
    for i, r in enumerate(rows):
        kind = r["kind"]
        out.append([zl_rel[i], za_rel[i], sig_rel[i], float(has_sig[i]), float(kind == "default"),
                    float(kind == "meta-init"), float(kind == "adapter"), float(r.get("labels_match", 0.0)),
                    float(r.get("label_overlap", 0.0)), float(r.get("entry_score") or 0.0),
                    float(kind == "default") * za_rel[i], float(kind == "meta-init") * za_rel[i]])
    return np.asarray(out, dtype=float)


@dataclass
class LearnedSelector:
    weights: np.ndarray
    scale: np.ndarray
    trained_on: dict = field(default_factory=dict)  # scenarios, shots, seeds, pairs, fit quality

    def score(self, x: np.ndarray) -> np.ndarray:
        return (x / self.scale) @ self.weights

    def save(self, path: Path) -> None:
        import os
        import tempfile

        data = {"features": list(FEATURES), "weights": self.weights.tolist(), "scale": self.scale.tolist(),
                "model": "pairwise logistic regression (linear ranker)", "trained_on": self.trained_on}
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "LearnedSelector":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if list(data["features"]) != list(FEATURES):
                raise DataError(f"{path}: trained with features {data['features']}, this metalora uses {list(FEATURES)}; "
                                "train it again (metalora library fit-selector)")
            return cls(np.asarray(data["weights"], dtype=float), np.asarray(data["scale"], dtype=float),
                       data.get("trained_on") or {})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable selector ({type(exc).__name__}: {exc}); "
                            "train it again (metalora library fit-selector)") from None


def fit(tasks: list[tuple[np.ndarray, np.ndarray]], margin: float = 0.0, C: float = 1.0,
        trained_on: dict | None = None) -> LearnedSelector:
    """Fit the ranker on [(features [n_i, F], held-out accuracy [n_i]) per training scenario]."""
    from sklearn.linear_model import LogisticRegression

    diffs, ys = [], []
    for x, acc in tasks:
        for i in range(len(acc)):
            for j in range(len(acc)):
                if acc[i] > acc[j] + margin:
                    diffs.append(x[i] - x[j])
                    ys.append(1)
                    diffs.append(x[j] - x[i])
                    ys.append(0)
    if not diffs:
        raise DataError("the learned selector has nothing to learn from: on every training scenario all candidate entries "
                        "scored the same; use more scenarios or more held-out examples")
    d = np.asarray(diffs)
    scale = np.abs(np.concatenate([x for x, _ in tasks])).max(0)
    scale = np.where(scale > 0, scale, 1.0)
    clf = LogisticRegression(fit_intercept=False, C=C, max_iter=2000)
    clf.fit(d / scale, np.asarray(ys))
    sel = LearnedSelector(clf.coef_[0].astype(float), scale, dict(trained_on or {}))
    picks = [float(acc[int(np.argmax(sel.score(x)))]) for x, acc in tasks]
    sel.trained_on.update({"pairs": int(len(ys) // 2), "scenarios_fitted": len(tasks),
                           "train_pick_accuracy": float(np.mean(picks)),
                           "train_best_accuracy": float(np.mean([acc.max() for _, acc in tasks])),
                           "train_mean_accuracy": float(np.mean([acc.mean() for _, acc in tasks]))})
    return sel
