"""The signals selection ranks entries by, each computed from the new scenario's support set only.

- zero-step: the support set's loss and accuracy under the entry's LoRA with a prototype head,
  leave-one-out (each example is scored against prototypes built from the OTHER examples, so an
  entry is not rewarded for memorising the very examples it is scored on). One forward of the
  support set per entry, through the LoRA layers only (the frozen prefix is computed once).
- few-step: the held-out loss after a few adaptation steps, two-fold (adapt on one half of the
  support set, score the other half, and the other way round): what the entry gains from training.
- signature: cosine similarity of the support set's mean frozen embedding with the entry's.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metalora.adapt import Init, adapt
from metalora.config import AdaptConfig
from metalora.errors import DataError
from metalora.model import SCALE_KEY, Encoded, LoraClassifier, prototype_head


@dataclass
class Support:
    """A new scenario's labelled examples (label ids index `label_names` when those are known)."""

    texts: list[str]
    labels: Tensor
    num_labels: int
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if len(self.texts) == 0:
            raise DataError("the support set is empty; give at least one labelled example per class")
        if len(self.texts) != len(self.labels):
            raise DataError(f"the support set has {len(self.texts)} texts but {len(self.labels)} labels")
        if self.labels.min() < 0 or self.labels.max() >= self.num_labels:
            raise DataError(f"support labels must be 0..{self.num_labels - 1}, got {sorted(set(self.labels.tolist()))}")
        if len(set(self.labels.tolist())) < 2:
            raise DataError("the support set has examples of one class only; selection needs at least two classes")

    @classmethod
    def from_dataset(cls, ds, num_labels: int, label_names: Sequence[str] = ()) -> "Support":
        return cls(list(ds["text"]), torch.tensor(list(ds["label"])), num_labels, tuple(label_names))


def features(model: LoraClassifier, lora, enc: Encoded, batch_size: int = 64) -> Tensor:
    with torch.no_grad():
        return torch.cat([model.features(lora, b) for b in enc.batches(batch_size)])


def loo_logits(feats: Tensor, labels: Tensor, num_labels: int, scale: Tensor | float, prior: Tensor | None = None) -> Tensor:
    """Prototype-head logits [N, C] where example i's own class prototype leaves example i out."""
    labels = labels.to(feats.device)
    onehot = F.one_hot(labels, num_labels).to(feats.dtype)  # [N, C]
    sums = onehot.T @ feats  # [C, H]
    counts = onehot.sum(0)  # [C]
    own = onehot.unsqueeze(-1) * feats.unsqueeze(1)  # [N, C, H]: f_i in its own class row
    cnt = counts.unsqueeze(0) - onehot  # [N, C]
    protos = (sums.unsqueeze(0) - own) / cnt.clamp_min(1.0).unsqueeze(-1)
    logits = 2.0 * (protos * feats.unsqueeze(1)).sum(-1) - (protos * protos).sum(-1)
    if prior is not None:
        logits = logits + protos @ prior.to(protos)
    logits = torch.where(cnt > 0, logits, torch.full_like(logits, -1e4))
    return torch.as_tensor(scale, dtype=feats.dtype, device=feats.device) * logits


def zero_step(model: LoraClassifier, init: Init, enc: Encoded, labels: Tensor, num_labels: int) -> tuple[float, float]:
    """(leave-one-out prototype loss, accuracy) of the support set under the entry's LoRA, no training."""
    feats = features(model, init.lora, enc)
    logits = loo_logits(feats, labels, num_labels, init.logit_scale.exp(), init.head_prior)
    y = labels.to(logits.device)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def two_folds(labels: Tensor, seed: int = 0) -> list[tuple[Tensor, Tensor]] | None:
    """A stratified two-way split of the support set; None when a class has fewer than 2 examples."""
    g = torch.Generator().manual_seed(seed)
    a, b = [], []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < 2:
            return None
        idx = idx[torch.randperm(len(idx), generator=g)]
        half = (len(idx) + 1) // 2
        a.append(idx[:half])
        b.append(idx[half:])
    a, b = torch.cat(a), torch.cat(b)
    return [(a, b), (b, a)]


def few_step(model: LoraClassifier, init: Init, enc: Encoded, labels: Tensor, num_labels: int, cfg: AdaptConfig,
             where: str = "support set") -> tuple[float, float] | None:
    """(held-out loss, accuracy) after `cfg.steps` adaptation steps, two-fold over the support set."""
    folds = two_folds(labels, cfg.seed)
    if folds is None:
        return None
    losses, accs = [], []
    for train, held in folds:
        params = adapt(model, enc.select(train), labels[train], num_labels, init, cfg, where=where)
        # the held-out half is scored against prototypes of the trained half under the adapted LoRA
        # (not the trained head, whose confidence after a few steps at a high head rate says more
        # about the head's learning rate than about the representation the entry gives)
        with torch.no_grad():
            lora = model.lora_only(params)
            train_feats, held_feats = features(model, lora, enc.select(train)), features(model, lora, enc.select(held))
            weight, bias = prototype_head(train_feats, labels[train].to(train_feats.device), num_labels, init.head_prior)
            logits = params[SCALE_KEY].exp() * (held_feats @ weight.T + bias)
        y = labels[held].to(logits.device)
        losses.append(float(F.cross_entropy(logits, y)))
        accs.append(float((logits.argmax(1) == y).float().mean()))
    return sum(losses) / len(losses), sum(accs) / len(accs)


def few_step_config(rec: dict, steps: int, base: AdaptConfig) -> AdaptConfig:
    """The entry's own adaptation settings (optimizer, rates) for `steps` steps."""
    cfg = replace(base, steps=steps)
    if rec.get("optimizer") in ("sgd", "adamw"):
        cfg = replace(cfg, optimizer=rec["optimizer"])
    for key in ("lr", "head_lr"):
        if isinstance(rec.get(key), (int, float)):
            cfg = replace(cfg, **{key: float(rec[key])})
    return cfg


def cosine(a: Tensor, b: Tensor) -> float:
    return float(F.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0))
