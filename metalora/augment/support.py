"""Feature-level support augmentation inside the adaptation loop: calibrated samples and mixup.

`metalora.adapt.adapt` asks `FeatureAugmenter.build` for one; None when the config has neither. The
calibrated features (calibration.py) are sampled once, under the init's LoRA weights, and join the
real support features wherever the head is built from features (the prototypes) and in every step's
loss (through the head only: they are fixed vectors, not texts). Mixup (Zhang et al., ICLR 2018, on
pooled representations as in Verma et al.'s manifold mixup) mixes two support examples' pooled
features under the CURRENT weights with a Beta(alpha, alpha) weight and the same mix of their labels,
so it acts only through adaptation steps.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metalora.augment.calibration import calibrate, check_stats
from metalora.config import AdaptConfig
from metalora.errors import ConfigError
from metalora.model import Encoded, head_logits

SEED_OFFSET = 7919  # augmentation draws from its own generator: the batch order stays the plain run's


class FeatureAugmenter:
    def __init__(self, cfg: AdaptConfig, init, model, where: str):
        aug = cfg.augment
        self.cfg = aug
        self.calibrate = "calibrate" in aug.methods
        self.mixup = "mixup" in aug.methods
        if self.mixup and cfg.steps == 0:
            raise ConfigError(f"{where}: augment mixup trains through adaptation steps, and steps is 0; "
                              "set steps > 0 or drop mixup")
        self.stats = check_stats(getattr(init, "feature_stats", None), init.lora, model.backbone.hidden_size, where) if self.calibrate else None
        self.gen = torch.Generator().manual_seed(cfg.seed + SEED_OFFSET)
        self.rng = np.random.default_rng(cfg.seed + SEED_OFFSET)  # mixup weights
        self.samples: tuple[Tensor, Tensor] | None = None

    @classmethod
    def build(cls, cfg: AdaptConfig, init, model, where: str) -> "FeatureAugmenter | None":
        if not any(m in cfg.augment.methods for m in ("calibrate", "mixup")):
            return None
        return cls(cfg, init, model, where)

    @torch.no_grad()
    def head_extra(self, model, lora, support: Encoded, labels: Tensor, num_labels: int) -> tuple[Tensor, Tensor] | None:
        """Calibrated features and labels for the head (and, kept, for the loss); None without calibrate."""
        if not self.calibrate:
            return None
        feats = torch.cat([model.features(lora, b) for b in support.batches(64)])
        x, y = calibrate(self.stats, feats, labels, num_labels, self.cfg.calibrate_samples, self.cfg.calibrate_k,
                         self.cfg.calibrate_alpha, self.gen)
        self.samples = (x.to(feats.device, feats.dtype), y.to(feats.device))
        return self.samples

    def loss(self, model, params, batch: Encoded, y: Tensor) -> Tensor:
        feats = model.features(params, batch)
        logits = head_logits(params, feats)
        if self.samples is not None:
            logits = torch.cat([logits, head_logits(params, self.samples[0])])
            loss = F.cross_entropy(logits, torch.cat([y, self.samples[1]]))
        else:
            loss = F.cross_entropy(logits, y)
        if self.mixup and len(y) > 1:
            lam = float(self.rng.beta(self.cfg.mixup_alpha, self.cfg.mixup_alpha))
            perm = torch.randperm(len(y), generator=self.gen).to(feats.device)
            mixed = head_logits(params, lam * feats + (1.0 - lam) * feats[perm])
            loss = 0.5 * (loss + lam * F.cross_entropy(mixed, y) + (1.0 - lam) * F.cross_entropy(mixed, y[perm]))
        return loss
