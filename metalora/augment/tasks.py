"""Task augmentation for meta-training: new tasks made from the training scenarios' episodes.

Why: a meta-init trained on a few dozen scenarios can overfit to them (Yao et al., "Meta-Learning with
Fewer Tasks through Task Interpolation", ICLR 2021 — MLTI). Two ways of making more tasks live here as
pure functions on encoded episodes; `metalora.meta.episodes.EpisodeSampler` decides when to use them
(EpisodeConfig.task_interpolation / merge_scenarios) and draws the partner episode:

- interpolation (MLTI, the non-label-sharing variant): class c of the new task is class c of task A
  mixed with class c of task B, example by example, with ONE weight lambda for support and query, so
  the labels of support and query stay consistent. The mix happens at the frozen prefix's hidden states,
  the input of the LoRA layers (MLTI mixes at a hidden layer; this is the one every step already has).
- merging: the label sets of two scenarios become one task with the classes of both.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalora.model import Encoded


def match_labels(target: Tensor, source: Tensor) -> Tensor:
    """Index into `source` such that source[index] == target, taking each source position once."""
    target, source = target.tolist(), source.tolist()
    free: dict[int, list[int]] = {}
    for i, y in enumerate(source):
        free.setdefault(y, []).append(i)
    try:
        return torch.tensor([free[y].pop(0) for y in target], dtype=torch.long)
    except (KeyError, IndexError):
        raise ValueError("the partner episode lacks examples of some label; it cannot be matched") from None


def _padded(enc: Encoded, width: int) -> tuple[Tensor, Tensor, Tensor | None]:
    extra = width - enc.ids.shape[1]
    if extra <= 0:
        return enc.ids, enc.mask, enc.hidden
    ids = torch.cat([enc.ids, torch.zeros(len(enc), extra, dtype=enc.ids.dtype)], 1)
    mask = torch.cat([enc.mask, torch.zeros(len(enc), extra, dtype=enc.mask.dtype)], 1)
    hidden = None
    if enc.hidden is not None:
        hidden = torch.cat([enc.hidden, enc.hidden.new_zeros(len(enc), extra, enc.hidden.shape[-1])], 1)
    return ids, mask, hidden


def mix_encoded(a: Encoded, b: Encoded, lam: float) -> Encoded:
    """Row i of the result mixes row i of `a` and of `b`: lam * h_a + (1 - lam) * h_b at the positions both
    fill, the one present state where only one text is that long; the mask covers the longer text.

    Only the hidden states are mixed (the cached input of the LoRA layers); the token ids are a's and
    are never read when hidden states are present."""
    if a.hidden is None or b.hidden is None:
        raise ValueError("task interpolation needs the frozen prefix's hidden states (a backbone with a prefix cache)")
    if len(a) != len(b):
        raise ValueError(f"cannot mix {len(a)} examples with {len(b)}")
    width = max(a.ids.shape[1], b.ids.shape[1])
    ids_a, mask_a, h_a = _padded(a, width)
    _, mask_b, h_b = _padded(b, width)
    both = (mask_a.bool() & mask_b.bool()).unsqueeze(-1)
    only_b = (~mask_a.bool() & mask_b.bool()).unsqueeze(-1)
    hidden = torch.where(both, lam * h_a + (1.0 - lam) * h_b, torch.where(only_b, h_b, h_a))
    return Encoded(ids_a, torch.maximum(mask_a, mask_b), hidden)


def concat_encoded(a: Encoded, b: Encoded, pad_id: int = 0) -> Encoded:
    width = max(a.ids.shape[1], b.ids.shape[1])
    ids_a, mask_a, h_a = _padded(a, width)
    ids_b, mask_b, h_b = _padded(b, width)
    ids_a = torch.where(mask_a.bool(), ids_a, torch.full_like(ids_a, pad_id))
    ids_b = torch.where(mask_b.bool(), ids_b, torch.full_like(ids_b, pad_id))
    hidden = torch.cat([h_a, h_b]) if h_a is not None and h_b is not None else None
    return Encoded(torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b]), hidden)
