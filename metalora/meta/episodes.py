"""Episodes: N-way K-shot support sets and query sets drawn from a suite of scenarios.

An episode is a pure function of (seed, step, index): no sampler state to save, so a resumed run
draws exactly the episodes an uninterrupted one would, and process r of W simply takes the indices
i with i % W == r — the same global meta-batch on any number of processes.

Examples are tokenised and pushed through the frozen prefix lazily, once, the first time any episode
uses them (`ExampleCache`), which is where most of meta-training's speed comes from.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from metalora.config import EpisodeConfig
from metalora.errors import ConfigError, DataError
from metalora.model import Encoded, LoraClassifier
from metalora.scenarios import Scenario, all_scenarios


def select_scenarios(patterns: Sequence[str], exclude: Sequence[str] = (), exclude_heldout: bool = False,
                     where: str = "scenarios", cards_dir=None) -> list[Scenario]:
    """Names or glob patterns -> scenarios, in a stable order; a pattern that matches nothing is an error."""
    known = all_scenarios(cards_dir)
    chosen: dict[str, Scenario] = {}
    for pat in patterns:
        hits = [n for n in known if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ConfigError(f"`{where}`: {pat!r} matches no scenario; see `metalora scenarios`")
        for n in hits:
            chosen[n] = known[n]
    out = [sc for n, sc in chosen.items()
           if not any(fnmatch.fnmatchcase(n, e) for e in exclude) and not (exclude_heldout and sc.card.heldout)]
    if not out:
        raise ConfigError(f"`{where}`: every scenario was excluded (patterns {list(patterns)}, exclude {list(exclude)})")
    return out


@dataclass
class Episode:
    scenario: str
    support: Encoded
    support_labels: Tensor
    query: Encoded
    query_labels: Tensor
    num_labels: int
    classes: list[int]  # the scenario's class ids, in the episode's (permuted) label order


class ExampleCache:
    """Per-example token ids and frozen-prefix states, computed once, padded per episode."""

    def __init__(self, model: LoraClassifier):
        self.model = model
        self.rows: dict[tuple[str, int], tuple[Tensor, Tensor | None]] = {}

    def get(self, key_prefix: str, texts: Sequence[str], indices: Sequence[int]) -> Encoded:
        todo = [i for i in dict.fromkeys(indices) if (key_prefix, i) not in self.rows]
        if todo:
            enc = self.model.encode([texts[i] for i in todo])
            lengths = enc.mask.sum(1).tolist()
            for j, i in enumerate(todo):
                n = max(int(lengths[j]), 1)
                hidden = enc.hidden[j, :n].clone() if enc.hidden is not None else None
                self.rows[(key_prefix, i)] = (enc.ids[j, :n].clone(), hidden)
        rows = [self.rows[(key_prefix, i)] for i in indices]
        width = max(r[0].shape[0] for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        hidden = None
        if rows[0][1] is not None:
            hidden = torch.zeros(len(rows), width, rows[0][1].shape[-1], dtype=rows[0][1].dtype)
        pad = self.model.backbone.tokenizer.pad_token_id or 0
        ids.fill_(pad)
        for j, (row_ids, row_h) in enumerate(rows):
            n = row_ids.shape[0]
            ids[j, :n] = row_ids
            mask[j, :n] = 1
            if hidden is not None:
                hidden[j, :n] = row_h
        return Encoded(ids, mask, hidden)


class _Pool:
    def __init__(self, sc: Scenario, split: str):
        if split not in sc.splits():
            raise DataError(f"scenario {sc.name} has no {split!r} split (has {', '.join(sc.splits())})")
        ds = sc.load(split)
        self.name = sc.name
        self.key = f"{sc.name}:{split}"
        self.texts = ds["text"]
        self.labels = np.asarray(ds["label"], dtype=np.int64)
        self.num_labels = sc.num_labels
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(sc.num_labels)]


def scenario_weights(how: str, sizes: Sequence[int], families: Sequence[str]) -> np.ndarray:
    """The probability of drawing each scenario: uniform, by size, or uniform over families then scenarios."""
    if how == "size":
        sizes = np.asarray(sizes, dtype=np.float64)
        return sizes / sizes.sum()
    if how == "family":
        count = {f: families.count(f) for f in set(families)}
        return np.array([1.0 / (len(count) * count[f]) for f in families])
    return np.full(len(sizes), 1.0 / len(sizes))


class EpisodeSampler:
    """Draws episodes from scenarios; checks up front that every scenario can fill one."""

    def __init__(self, scenarios: Sequence[Scenario], cfg: EpisodeConfig, cache: ExampleCache, seed: int,
                 split: str | None = None, where: str = "scenarios"):
        self.cfg = cfg
        self.cache = cache
        self.seed = seed
        self.pools = [_Pool(sc, split or cfg.split) for sc in scenarios]
        for pool in self.pools:
            self._check(pool, where)
        self.weights = scenario_weights(cfg.weighting, [len(p.labels) for p in self.pools], [sc.family for sc in scenarios])

    def _check(self, pool: _Pool, where: str) -> None:
        n_way = self.cfg.n_way or pool.num_labels
        if n_way > pool.num_labels:
            raise DataError(f"{where}: scenario {pool.name} has {pool.num_labels} classes, fewer than episodes.n_way={n_way}")
        per_query = -(-self.cfg.query_size // n_way) if self.cfg.query_balance == "balanced" else 1
        counts = sorted(len(ix) for ix in pool.by_class)
        usable = counts[-n_way:]  # the best case: the n_way largest classes
        need = self.cfg.k_shot + per_query
        if usable[0] < need:
            raise DataError(
                f"{where}: scenario {pool.name} ({pool.key.split(':')[1]} split) has a class with only {usable[0]} examples, "
                f"fewer than k_shot + query per class = {need}; lower episodes.k_shot / episodes.query_size or drop the scenario"
            )
        # natural balance: a scenario with fewer than query_size examples left after the support (a 20-review
        # hotel) gives a smaller query set rather than being refused; every class keeps one query example

    def episode(self, step: int, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, step, index])
        pool = self.pools[int(rng.choice(len(self.pools), p=self.weights))]
        n_way = self.cfg.n_way or pool.num_labels
        eligible = [c for c in range(pool.num_labels)
                    if len(pool.by_class[c]) >= self.cfg.k_shot + (1 if self.cfg.query_balance == "natural" else -(-self.cfg.query_size // n_way))]
        classes = rng.choice(eligible, size=n_way, replace=False)
        if not self.cfg.label_permutation:
            classes = np.sort(classes)
        support_idx, support_y, rest = [], [], []
        for new_label, c in enumerate(classes):
            perm = rng.permutation(pool.by_class[c])
            support_idx.extend(perm[: self.cfg.k_shot].tolist())
            support_y.extend([new_label] * self.cfg.k_shot)
            rest.append(perm[self.cfg.k_shot:])
        if self.cfg.query_balance == "balanced":
            per = -(-self.cfg.query_size // n_way)
            query_idx = [int(i) for r in rest for i in r[:per]]
            query_y = [lab for lab, r in enumerate(rest) for _ in r[:per]]
        else:
            pooled = np.concatenate(rest)
            owner = np.concatenate([np.full(len(r), lab) for lab, r in enumerate(rest)])
            pick = rng.choice(len(pooled), size=min(self.cfg.query_size, len(pooled)), replace=False)
            query_idx = pooled[pick].tolist()
            query_y = owner[pick].tolist()
        return Episode(
            scenario=pool.name,
            support=self.cache.get(pool.key, pool.texts, support_idx),
            support_labels=torch.tensor(support_y),
            query=self.cache.get(pool.key, pool.texts, query_idx),
            query_labels=torch.tensor(query_y),
            num_labels=n_way,
            classes=[int(c) for c in classes],
        )
