"""Episodes: N-way K-shot support sets and query sets drawn from a suite of scenarios.

An episode is a pure function of (seed, step, index): no sampler state to save, so a resumed run
draws exactly the episodes an uninterrupted one would, and process r of W simply takes the indices
i with i % W == r — the same global meta-batch on any number of processes.

Examples are tokenised and pushed through the frozen prefix lazily, once, the first time any episode
uses them (`ExampleCache`), which is where most of meta-training's speed comes from.
"""
from __future__ import annotations

import fnmatch
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from metalora.augment import tasks
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
    """Per-example token ids and frozen-prefix states, computed once, padded per episode.

    Why a cap (`max_mb`): on a base-size encoder each example's states take a few hundred KB (96 tokens x
    768 x 9 cached layers' output), and a meta-training draws tens of thousands of distinct examples from
    large pools, few of them twice, so an unbounded cache grows by gigabytes for little reuse. With a cap
    the least recently drawn examples are dropped and recomputed if drawn again: the same states
    (a real token's state does not depend on the batch or its padding), only the time differs.
    """

    def __init__(self, model: LoraClassifier, max_mb: float | None = None):
        self.model = model
        self.max_bytes = None if max_mb is None else int(max_mb * 2**20)
        self.rows: OrderedDict[tuple[str, int], tuple[Tensor, Tensor | None]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    @staticmethod
    def _size(row: tuple[Tensor, Tensor | None]) -> int:
        ids, hidden = row
        return ids.nelement() * ids.element_size() + (0 if hidden is None else hidden.nelement() * hidden.element_size())

    def get(self, key_prefix: str, texts: Sequence[str], indices: Sequence[int]) -> Encoded:
        wanted = list(dict.fromkeys(indices))
        todo = [i for i in wanted if (key_prefix, i) not in self.rows]
        self.misses += len(todo)
        self.hits += len(wanted) - len(todo)
        if todo:
            enc = self.model.encode([texts[i] for i in todo])
            lengths = enc.mask.sum(1).tolist()
            for j, i in enumerate(todo):
                n = max(int(lengths[j]), 1)
                hidden = enc.hidden[j, :n].clone() if enc.hidden is not None else None
                row = (enc.ids[j, :n].clone(), hidden)
                self.rows[(key_prefix, i)] = row
                self.bytes += self._size(row)
        for i in wanted:  # most recently drawn last: eviction takes from the front
            self.rows.move_to_end((key_prefix, i))
        rows = [self.rows[(key_prefix, i)] for i in indices]  # held here, so evicting below cannot lose them
        if self.max_bytes is not None:
            while self.bytes > self.max_bytes and len(self.rows) > len(wanted):
                _, old = self.rows.popitem(last=False)
                self.bytes -= self._size(old)
                self.evictions += 1
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
        # scenarios of one group share label semantics (ARSC: a domain's t2/t4/t5), so they are never merged or mixed
        self.group = f"{sc.card.name}/{sc.arsc_task[0]}" if sc.arsc_task else sc.name


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
                 split: str | None = None, where: str = "scenarios", augment: bool = True):
        self.cfg = cfg
        self.cache = cache
        self.seed = seed
        self.augment = augment  # task augmentation (training episodes); validation episodes stay plain
        if augment and cfg.task_interpolation and not cache.model.cacheable:
            raise ConfigError(
                f"episodes.task_interpolation mixes the hidden states of the frozen layers below LoRA, which backbone "
                f"{cache.model.backbone.name!r} ({cache.model.backbone.model_type}) does not cache; use a BERT-style backbone "
                "or set episodes.task_interpolation: 0"
            )
        self.pools = [_Pool(sc, split or cfg.split) for sc in scenarios]
        for pool in self.pools:
            self._check(pool, where)
        self.weights = scenario_weights(cfg.weighting, [len(p.labels) for p in self.pools], [sc.family for sc in scenarios])

    def _check(self, pool: _Pool, where: str) -> None:
        n_way = self.cfg.n_way or pool.num_labels
        if n_way > pool.num_labels:
            raise DataError(f"{where}: scenario {pool.name} has {pool.num_labels} classes, fewer than episodes.n_way={n_way}")
        self._check_way(pool, where, n_way)
        if self.augment and self.cfg.n_way_min is not None and self.cfg.n_way_min < n_way:
            self._check_way(pool, where, self.cfg.n_way_min)  # fewer classes ask more query examples of each

    def _check_way(self, pool: _Pool, where: str, n_way: int) -> None:
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
        cfg = self.cfg
        if not (self.augment and cfg.augments_tasks):
            draw = self._draw(pool, rng, cfg.n_way or pool.num_labels, cfg.k_shot)
            return self._episode(pool.name, pool, draw)
        # task augmentation draws from its own stream, so the plain part of an episode stays a function of (seed, step, index)
        aug = np.random.default_rng([self.seed, step, index, 1])
        n_max = cfg.n_way or pool.num_labels
        n_way = int(aug.integers(cfg.n_way_min, n_max + 1)) if cfg.n_way_min is not None and cfg.n_way_min < n_max else n_max
        k_shot = int(aug.integers(cfg.k_shot_min, cfg.k_shot + 1)) if cfg.k_shot_min is not None else cfg.k_shot
        n_way = min(n_way, len(self._eligible(pool, n_way)))  # >= n_way_min: _check saw to that
        draw = self._draw(pool, rng, n_way, k_shot)
        if cfg.merge_scenarios and aug.random() < cfg.merge_scenarios:
            other = self._partner(pool, aug, n_way)
            if other is not None:
                second = self._episode(other.name, other, self._draw(other, aug, n_way, k_shot))
                return self._merged(self._episode(pool.name, pool, draw), second, aug)
        if cfg.task_interpolation and aug.random() < cfg.task_interpolation:
            other = self._partner(pool, aug, n_way)
            if other is not None:
                counts = np.bincount(np.asarray(draw[3], dtype=np.int64), minlength=n_way)
                second = self._episode(other.name, other, self._draw(other, aug, n_way, k_shot, query_counts=counts))
                lam = float(aug.beta(cfg.interpolation_alpha, cfg.interpolation_alpha))
                return self._interpolated(self._episode(pool.name, pool, draw), second, lam)
        return self._episode(pool.name, pool, draw)

    @staticmethod
    def _interpolated(a: Episode, b: Episode, lam: float) -> Episode:
        """MLTI: support row i of A mixed with support row i of B (same label by construction); each query
        row of A with a query row of B of the same label; A's labels throughout."""
        order = tasks.match_labels(a.query_labels, b.query_labels)
        return Episode(f"{a.scenario}~{b.scenario}", tasks.mix_encoded(a.support, b.support, lam), a.support_labels,
                       tasks.mix_encoded(a.query, b.query.select(order), lam), a.query_labels, a.num_labels, a.classes)

    def _merged(self, a: Episode, b: Episode, rng: np.random.Generator) -> Episode:
        """One task with the classes of both episodes (B's labels after A's, then all permuted if configured)."""
        n = a.num_labels + b.num_labels
        perm = torch.as_tensor(rng.permutation(n) if self.cfg.label_permutation else np.arange(n))
        pad = self.cache.model.backbone.tokenizer.pad_token_id or 0

        def relabel(ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return perm[torch.cat([ya, yb + a.num_labels])]

        classes = [a.classes[i] if i < a.num_labels else b.classes[i - a.num_labels] for i in torch.argsort(perm).tolist()]
        return Episode(f"{a.scenario}+{b.scenario}", tasks.concat_encoded(a.support, b.support, pad),
                       relabel(a.support_labels, b.support_labels), tasks.concat_encoded(a.query, b.query, pad),
                       relabel(a.query_labels, b.query_labels), n, classes)

    def _partner(self, pool: _Pool, rng: np.random.Generator, n_way: int) -> _Pool | None:
        """Another scenario of a different group (ARSC domain, else the scenario) that can fill n_way classes."""
        options = [p for p in self.pools if p.group != pool.group and len(self._eligible(p, n_way)) >= n_way]
        return options[int(rng.integers(len(options)))] if options else None

    def _eligible(self, pool: _Pool, n_way: int, k_shot: int | None = None) -> list[int]:
        k = self.cfg.k_shot if k_shot is None else k_shot
        need = k + (1 if self.cfg.query_balance == "natural" else -(-self.cfg.query_size // n_way))
        return [c for c in range(pool.num_labels) if len(pool.by_class[c]) >= need]

    def _draw(self, pool: _Pool, rng: np.random.Generator, n_way: int, k_shot: int,
              query_counts: np.ndarray | None = None) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
        """(support indices, support labels, query indices, query labels, classes) of one episode of `pool`.

        With `query_counts`, class j gets exactly that many query examples (drawn with replacement when
        the class is short): how an interpolation partner matches the other episode's query labels."""
        eligible = self._eligible(pool, n_way)
        classes = rng.choice(eligible, size=n_way, replace=False)
        if not self.cfg.label_permutation:
            classes = np.sort(classes)
        support_idx, support_y, rest = [], [], []
        for new_label, c in enumerate(classes):
            perm = rng.permutation(pool.by_class[c])
            support_idx.extend(perm[:k_shot].tolist())
            support_y.extend([new_label] * k_shot)
            rest.append(perm[k_shot:])
        if query_counts is not None:
            query_idx, query_y = [], []
            for lab, r in enumerate(rest):
                n = int(query_counts[lab])
                picked = r[:n] if len(r) >= n else rng.choice(r, size=n, replace=True)
                query_idx.extend(int(i) for i in picked)
                query_y.extend([lab] * n)
        elif self.cfg.query_balance == "balanced":
            per = -(-self.cfg.query_size // n_way)
            query_idx = [int(i) for r in rest for i in r[:per]]
            query_y = [lab for lab, r in enumerate(rest) for _ in r[:per]]
        else:
            pooled = np.concatenate(rest)
            owner = np.concatenate([np.full(len(r), lab) for lab, r in enumerate(rest)])
            pick = rng.choice(len(pooled), size=min(self.cfg.query_size, len(pooled)), replace=False)
            query_idx = pooled[pick].tolist()
            query_y = owner[pick].tolist()
        return support_idx, support_y, query_idx, query_y, [int(c) for c in classes]

    def _episode(self, name: str, pool: _Pool, draw) -> Episode:
        support_idx, support_y, query_idx, query_y, classes = draw
        return Episode(
            scenario=name,
            support=self.cache.get(pool.key, pool.texts, support_idx),
            support_labels=torch.tensor(support_y),
            query=self.cache.get(pool.key, pool.texts, query_idx),
            query_labels=torch.tensor(query_y),
            num_labels=len(classes),
            classes=classes,
        )
