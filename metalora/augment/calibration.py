"""Distribution calibration: extra support features sampled from class distributions borrowed from training.

Why: five examples say little about a class's distribution, but the training scenarios have hundreds
of examples per class, and under the meta-init's features similar classes have similar statistics.
Yang et al. ("Free Lunch for Few-shot Learning: Distribution Calibration", ICLR 2021) calibrate each
support feature x with the k training classes whose means are nearest:

    mu' = (sum_i mu_i + x) / (k + 1)        Sigma' = mean_i Sigma_i + alpha I

and train the classifier on features sampled from N(mu', Sigma') beside the real ones; Liu et al.
(AAAI 2023) carry this over to text classification with a pretrained encoder. The statistics must be
those of the training scenarios under the init's OWN features, so they are computed when a meta-init
is saved (MetaTrainConfig.feature_stats) and stored beside it (FEATURE_STATS_FILE).

Storage: a 384-dim full covariance per class is 590 KB, times a hundred classes. Each class keeps a
probabilistic PCA instead (Tipping & Bishop, 1999): the top `rank` principal directions W (H x r) and
an isotropic rest sigma^2, Sigma_i = W_i W_i^T + sigma_i^2 I, which is exact on the top directions and
keeps the total variance. Mixing k of them stays exact: [W_1 .. W_k] / sqrt(k) has the mean of the
W_i W_i^T as its outer product. Yang et al.'s Tukey power transform assumes non-negative (ReLU)
features; metalora's are L2-normalised and signed, so it is left out.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from metalora.errors import ConfigError, DataError

FEATURE_STATS_FILE = "metalora_feature_stats.safetensors"
RANK = 16  # principal directions kept per class


@dataclass
class FeatureStats:
    """Per training class: mean [C, H], PPCA factors [C, H, r], isotropic rest variance [C], counts [C]."""

    names: list[str]  # "scenario:label" per class
    means: Tensor
    factors: Tensor
    noise: Tensor
    counts: Tensor
    fingerprint: float  # of the LoRA weights the features were computed under

    @property
    def scale(self) -> float:
        """Mean per-dimension variance of the training classes: the unit of calibrate_alpha."""
        total = (self.factors ** 2).sum((1, 2)) + self.noise * self.means.shape[1]
        return float(total.mean() / self.means.shape[1])

    def covariance(self, i: int) -> Tensor:
        w = self.factors[i]
        return w @ w.T + self.noise[i] * torch.eye(w.shape[0], dtype=w.dtype)


def lora_fingerprint(lora: dict[str, Tensor]) -> float:
    """A cheap checksum of LoRA weights: statistics from other weights would calibrate the wrong space."""
    return float(sum(float(v.double().abs().sum()) + 1e-3 * float(v.double().sum()) for _, v in sorted(lora.items())))


def class_stats(features: Tensor, rank: int = RANK) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, factors [H, rank], rest variance) of one class's features [n, H]; sample covariance (n - 1)."""
    x = features.double()
    n, h = x.shape
    mean = x.mean(0)
    if n < 2:
        raise DataError("a class needs at least 2 examples for feature statistics")
    _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
    eig = s ** 2 / (n - 1)  # covariance eigenvalues, at most n of them (the rest are 0)
    r = min(rank, len(eig))
    rest = float(eig[r:].sum()) / max(h - r, 1)
    w = vt[:r].T * torch.sqrt(torch.clamp(eig[:r] - rest, min=0.0))
    if r < rank:
        w = torch.cat([w, w.new_zeros(h, rank - r)], 1)
    return mean.float(), w.float(), torch.tensor(rest, dtype=torch.float32)


@torch.no_grad()
def compute_feature_stats(model, lora: dict[str, Tensor], scenarios: Sequence, split: str = "train",
                          per_class: int = 100, seed: int = 0, rank: int = RANK, batch_size: int = 64) -> FeatureStats:
    """Statistics of every (scenario, class) with >= 2 examples in `split`, from up to `per_class` of them,
    pooled features under `lora` (the init's). Sampling is seeded, so the same init gives the same file."""
    rng = np.random.default_rng(seed)
    fingerprint = lora_fingerprint(lora)
    lora = {k: v.to(model.device) for k, v in lora.items()}
    names, means, factors, noise, counts = [], [], [], [], []
    for sc in scenarios:
        if split not in sc.splits():
            continue
        ds = sc.load(split)
        labels = np.asarray(ds["label"])
        for c, label in enumerate(sc.label_names):
            idx = np.flatnonzero(labels == c)
            if len(idx) < 2:
                continue
            if len(idx) > per_class:
                idx = np.sort(rng.choice(idx, size=per_class, replace=False))
            enc = model.encode([ds["text"][int(i)] for i in idx], batch_size)
            feats = torch.cat([model.features(lora, b).cpu() for b in enc.batches(batch_size)])
            m, w, s = class_stats(feats, rank)
            names.append(f"{sc.name}:{label}")
            means.append(m)
            factors.append(w)
            noise.append(s)
            counts.append(len(idx))
    if not names:
        raise DataError(f"no training class has 2 or more examples in split {split!r}; cannot compute feature statistics")
    return FeatureStats(names, torch.stack(means), torch.stack(factors), torch.stack(noise),
                        torch.tensor(counts), fingerprint)


def save_feature_stats(stats: FeatureStats, folder: str | Path) -> Path:
    """Write FEATURE_STATS_FILE into `folder` atomically (temporary file, then one rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    path = folder / FEATURE_STATS_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{FEATURE_STATS_FILE}.", dir=folder)
    os.close(fd)
    try:
        save_file({"means": stats.means.contiguous(), "factors": stats.factors.contiguous(), "noise": stats.noise.contiguous(),
                   "counts": stats.counts.contiguous()}, tmp,
                  metadata={"names": json.dumps(stats.names), "fingerprint": repr(stats.fingerprint)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_feature_stats(folder: str | Path) -> FeatureStats | None:
    """The statistics stored with a meta-init, or None when it has none."""
    from safetensors import safe_open

    path = Path(folder) / FEATURE_STATS_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            t = {k: fh.get_tensor(k) for k in fh.keys()}
        return FeatureStats(json.loads(meta["names"]), t["means"], t["factors"], t["noise"], t["counts"], float(meta["fingerprint"]))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise DataError(f"{path}: not a readable feature-statistics file ({type(exc).__name__}: {exc}); "
                        "delete it and recompute it with `python -m metalora.augment.calibration INIT`") from None


def check_stats(stats: FeatureStats | None, lora: dict[str, Tensor], hidden: int, where: str) -> FeatureStats:
    if stats is None:
        raise ConfigError(
            f"{where}: augment calibrate needs the training scenarios' feature statistics, which this init does not carry "
            f"({FEATURE_STATS_FILE}); meta-train with feature_stats > 0, or compute them for an existing meta-init with "
            "`python -m metalora.augment.calibration INIT` (peft's default init and plain adapters have none)"
        )
    if stats.means.shape[1] != hidden:
        raise ConfigError(f"{where}: the feature statistics have {stats.means.shape[1]} dimensions, the backbone {hidden}")
    if not math.isclose(stats.fingerprint, lora_fingerprint(lora), rel_tol=1e-5, abs_tol=1e-6):
        raise ConfigError(f"{where}: the feature statistics were computed under other LoRA weights than this init's; "
                          "recompute them with `python -m metalora.augment.calibration INIT`")
    return stats


def calibrate(stats: FeatureStats, features: Tensor, labels: Tensor, num_labels: int, per_class: int, k: int,
              alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`per_class` features per class sampled from the calibrated distributions of its support features
    (spread evenly over them), and their labels. `alpha` is in units of `stats.scale`."""
    feats = features.detach().float().cpu()
    k = min(k, stats.means.shape[0])
    dist = torch.cdist(feats, stats.means)  # [n, C]
    nearest = dist.topk(k, largest=False).indices  # [n, k]
    extra = alpha * stats.scale
    out, out_y = [], []
    for c in range(num_labels):
        rows = torch.nonzero(labels.cpu() == c).flatten().tolist()
        if not rows:
            continue
        shares = [per_class // len(rows) + (1 if j < per_class % len(rows) else 0) for j in range(len(rows))]
        for j, m in zip(rows, shares):
            if m == 0:
                continue
            near = nearest[j]
            mean = (stats.means[near].sum(0) + feats[j]) / (k + 1)
            w = torch.cat(list(stats.factors[near]), 1) / math.sqrt(k)  # [H, k r]
            rest = float(stats.noise[near].mean()) + extra
            z = torch.randn(m, w.shape[1], generator=generator)
            eps = torch.randn(m, w.shape[0], generator=generator)
            out.append(mean + z @ w.T + math.sqrt(rest) * eps)
            out_y.append(torch.full((m,), c, dtype=torch.long))
    if not out:
        return feats.new_zeros(0, feats.shape[1]), torch.zeros(0, dtype=torch.long)
    return torch.cat(out), torch.cat(out_y)


def suite_stats(model, init, cards_dir=None, per_class: int = 100, seed: int = 0) -> FeatureStats:
    """Statistics of the training suite an init recorded (metalora.json meta.suite), under its LoRA weights,
    resolved in `cards_dir` and else in the default cards; for an init that does not store them."""
    from metalora.meta.episodes import select_scenarios

    rec = (init.meta or {}).get("meta") or {}
    suite = rec.get("suite")
    if not suite:
        raise ConfigError("augment calibrate: the init stores no feature statistics and names no training suite "
                          "(metalora.json meta.suite) to compute them from")
    split = ((rec.get("config") or {}).get("episodes") or {}).get("split", "train")
    for where in dict.fromkeys([cards_dir, None]):
        try:
            scenarios = select_scenarios(suite, where="the init's training suite (meta.suite)", cards_dir=where)
            break
        except (ConfigError, DataError):
            scenarios = None
    if scenarios is None:
        raise ConfigError("augment calibrate: the init's training suite is not among the known scenario cards; compute its "
                          "statistics with `python -m metalora.augment.calibration INIT --scenarios ...`")
    return compute_feature_stats(model, init.lora, scenarios, split, per_class, seed)


def stats_for_init(folder: str | Path, scenarios: Sequence | None = None, split: str = "train", per_class: int = 100,
                   seed: int = 0, model=None) -> Path:
    """Compute and store the statistics of a meta-init folder's training scenarios (its metalora.json suite
    unless `scenarios` is given), under the folder's own LoRA weights."""
    from metalora.api import load_init
    from metalora.meta.episodes import select_scenarios

    loaded, init = load_init(folder)
    model = model or loaded
    if scenarios is None:
        suite = ((init.meta or {}).get("meta") or {}).get("suite")
        if not suite:
            raise DataError(f"{folder}/metalora.json names no training suite (meta.suite); pass the scenarios explicitly")
        scenarios = select_scenarios(suite, where=f"{folder}/metalora.json meta.suite")
    stats = compute_feature_stats(model, init.lora, scenarios, split, per_class, seed)
    return save_feature_stats(stats, folder)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m metalora.augment.calibration",
                                description="Compute the training-scenario feature statistics of an existing meta-init "
                                            "(for adapt's calibrate augmentation) and store them in its folder.")
    p.add_argument("init", help="Meta-init folder.")
    p.add_argument("--scenarios", help="Comma-separated scenario names or patterns (default: the init's own training suite).")
    p.add_argument("--split", default="train")
    p.add_argument("--per-class", type=int, default=100)
    args = p.parse_args(argv)
    scenarios = None
    if args.scenarios:
        from metalora.meta.episodes import select_scenarios

        scenarios = select_scenarios([s.strip() for s in args.scenarios.split(",") if s.strip()], where="--scenarios")
    print(stats_for_init(args.init, scenarios, args.split, args.per_class))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
