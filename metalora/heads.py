"""A few-shot head that does not hinge on the support set: class prototypes shrunk toward a prior head.

Why: the 0-step prototype head draws its boundary between the support set's class means. Ten examples
are a small sample, and an unlucky one (the "positive" examples of a 1-star-vs-rest task all being
2-star complaints) moves the boundary so far that a whole test set flips. Meta-training saw dozens of
scenarios; their heads under the init's features say where classes with these names usually sit and
how often each occurs. This module keeps those heads in the meta-init (a *head bank*) and uses them:

1. Bank: for every training scenario, its class prototypes under the init's features (the mean of
   `bank_examples` feature vectors per class from its training split) and its class frequencies,
   keyed by the scenario's label names.
2. Prior head for a target: the bank entries with the target's label names (as a set, aligned by
   name), mixed with weights softmax(temperature * log-likelihood of the support set under each
   entry's prototype head): entries that explain the support set count more (Bayesian model
   averaging over the training tasks; temperature 0 is a plain average).
3. Shrinkage (James-Stein / a conjugate prior on each class mean): prototype_k = (1 - w_k) * support
   mean_k + w_k * prior_k, w_k = tau / (n_k + tau). tau is stored as the weight `shrinkage` at
   `shrinkage_shots` examples per class, so the choice made on 5-shot episodes moves aside as the
   support grows. Weight 0 is the plain Proto-MAML head, weight 1 the prior head.
4. Class prior: `class_prior` x the mixture's log class frequency is added to each class's logit
   (0 = none). Balanced support sets carry no information about class balance; the training
   scenarios with the same labels do.

The three numbers are chosen by the meta-trainer's validation on held-out scenarios, never targets.
A target whose label set matches no bank entry gets the plain prototype head (`route` says so).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from metalora.errors import DataError
from metalora.model import prototype_head

BANK_PREFIX = "bank."


def _key(names: Iterable[str]) -> frozenset[str]:
    return frozenset(str(n).strip().casefold() for n in names)


def class_means(features: Tensor, labels: Tensor, num_labels: int) -> tuple[Tensor, Tensor]:
    """(prototypes [C, H], counts [C]): the mean feature of each class (zero where a class is absent)."""
    onehot = F.one_hot(labels.to(features.device), num_labels).to(features.dtype)
    counts = onehot.sum(0)
    return (onehot.T @ features) / counts.clamp_min(1.0).unsqueeze(1), counts


def head_from_prototypes(protos: Tensor, present: Tensor | None = None, direction: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The prototype head (weight 2c_k, bias -|c_k|^2, + u.c_k with a learned direction) of given prototypes.

    It is `model.prototype_head` applied to one example per class, so the two can never disagree.
    """
    c = protos.shape[0]
    w, b = prototype_head(protos, torch.arange(c, device=protos.device), c, direction)
    if present is not None:
        b = torch.where(present, b, torch.full_like(b, -1e4))
    return w, b


def shrink_prototypes(support: Tensor, prior: Tensor, weight: Tensor | float) -> Tensor:
    """(1 - w_k) support_k + w_k prior_k; `weight` a scalar or one weight per class."""
    w = torch.as_tensor(weight, dtype=support.dtype, device=support.device)
    if w.dim() == 1:
        w = w.unsqueeze(1)
    return (1.0 - w) * support + w * prior.to(support)


def shrink_weights(counts: Tensor, shrinkage: float, at_shots: int) -> Tensor:
    """Per-class weight tau / (n_k + tau), with tau set so that the weight is `shrinkage` at `at_shots` examples.

    Weight 1 (tau infinite) is the prior alone; a class with no support example takes the prior.
    """
    if shrinkage >= 1.0:
        return torch.ones_like(counts)
    if shrinkage <= 0.0:
        return torch.where(counts > 0, torch.zeros_like(counts), torch.ones_like(counts))
    tau = shrinkage * at_shots / (1.0 - shrinkage)
    return tau / (counts + tau)


@dataclass(frozen=True)
class HeadChoice:
    """How the head is built from the bank; chosen by validation and stored in the init's metalora.json."""

    shrinkage: float = 0.0  # weight of the prior prototypes at `shrinkage_shots` examples per class
    shrinkage_shots: int = 5
    temperature: float = 1.0  # of the support log-likelihood that weights the bank entries (0 = plain average)
    class_prior: float = 0.0  # strength of the mixture's log class frequency added to the logits

    def to_dict(self) -> dict:
        return {"shrinkage": self.shrinkage, "shrinkage_shots": self.shrinkage_shots,
                "temperature": self.temperature, "class_prior": self.class_prior}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> HeadChoice:
        try:
            out = cls(float(d.get("shrinkage", 0.0)), int(d.get("shrinkage_shots", 5)), float(d.get("temperature", 1.0)),
                      float(d.get("class_prior", 0.0)))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: head settings are not numbers ({exc}); re-save the meta-init") from None
        if not 0.0 <= out.shrinkage <= 1.0 or out.shrinkage_shots < 1 or out.temperature < 0 or out.class_prior < 0:
            raise DataError(f"{where}: head settings out of range ({out.to_dict()}); shrinkage must be in [0, 1], "
                            "shrinkage_shots >= 1, temperature and class_prior >= 0")
        return out


@dataclass
class BankEntry:
    scenario: str
    label_names: tuple[str, ...]
    prototypes: Tensor  # [C, H], in label_names order
    log_prior: Tensor  # [C], log class frequency of the scenario's training split
    examples: tuple[int, ...] = ()  # examples per class behind each prototype


@dataclass
class HeadInfo:
    """What `HeadBank.build` did, for the adapter's metadata and for tests."""

    route: str  # "bank", "prototypes", "random" or "label_words"
    reason: str = ""
    weights: dict[str, float] = field(default_factory=dict)  # bank scenario -> mixture weight (top ones)

    def to_dict(self, top: int = 5) -> dict:
        out = {"route": self.route}
        if self.reason:
            out["reason"] = self.reason
        if self.weights:
            best = sorted(self.weights.items(), key=lambda kv: -kv[1])[:top]
            out["top_bank_entries"] = {k: round(v, 4) for k, v in best}
        return out


@dataclass
class HeadBank:
    """Per-training-scenario heads under an init's features, and the validated way to use them."""

    entries: list[BankEntry]
    choice: HeadChoice = field(default_factory=HeadChoice)

    # -- matching and mixing ---------------------------------------------------------------------
    def matching(self, label_names: Sequence[str]) -> list[tuple[BankEntry, Tensor, Tensor]]:
        """Entries whose label set equals `label_names`, their prototypes and log prior in that order."""
        want = [str(n).strip().casefold() for n in label_names]
        key = frozenset(want)
        if len(key) != len(want):
            return []
        out = []
        for e in self.entries:
            if _key(e.label_names) != key:
                continue
            pos = {str(n).strip().casefold(): i for i, n in enumerate(e.label_names)}
            order = torch.tensor([pos[n] for n in want])
            out.append((e, e.prototypes[order], e.log_prior[order]))
        return out

    def prior(self, support: Tensor, labels: Tensor, label_names: Sequence[str], scale: float,
              temperature: float | None = None) -> tuple[Tensor, Tensor, dict[str, float]] | None:
        """The prior prototypes [C, H] and log class prior [C] for a support set, or None without a match."""
        found = self.matching(label_names)
        if not found:
            return None
        t = self.choice.temperature if temperature is None else temperature
        protos = torch.stack([p.to(support) for _, p, _ in found])  # [J, C, H]
        logp = torch.stack([q.to(support) for _, _, q in found])  # [J, C]
        mix = mixture_weights(protos, support, labels, scale, t)
        prior_protos = torch.einsum("j,jch->ch", mix, protos)
        log_prior = torch.logsumexp(logp + mix.clamp_min(1e-30).log().unsqueeze(1), dim=0)  # log sum_j w_j pi_j
        return prior_protos, log_prior, {e.scenario: float(w) for (e, _, _), w in zip(found, mix)}

    def build(self, support: Tensor, labels: Tensor, num_labels: int, label_names: Sequence[str] | None, scale: float,
              direction: Tensor | None = None, choice: HeadChoice | None = None) -> tuple[Tensor, Tensor, HeadInfo]:
        """(weight, bias, info): the shrunk head in the `prototype_head` convention (logits = scale (x W^T + b))."""
        choice = choice or self.choice
        protos, counts = class_means(support, labels, num_labels)
        if label_names is None:
            w, b = prototype_head(support, labels.to(support.device), num_labels, direction)
            return w, b, HeadInfo("prototypes", "no label names given")
        if len(label_names) != num_labels:
            raise DataError(f"{len(label_names)} label names for {num_labels} classes")
        got = self.prior(support, labels, label_names, scale, choice.temperature)
        if got is None:
            w, b = prototype_head(support, labels.to(support.device), num_labels, direction)
            return w, b, HeadInfo("prototypes", f"no bank entry has the labels {sorted(label_names)}")
        prior_protos, log_prior, weights = got
        return (*shrunk_head(protos, counts, prior_protos, log_prior, choice, scale, direction),
                HeadInfo("bank", weights=weights))

    # -- storage ---------------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        out = {}
        for i, e in enumerate(self.entries):
            out[f"{BANK_PREFIX}{i}.prototypes"] = e.prototypes.detach().float().cpu().contiguous()
            out[f"{BANK_PREFIX}{i}.log_prior"] = e.log_prior.detach().float().cpu().contiguous()
        return out

    def meta(self) -> dict:
        return {"route": "bank", **self.choice.to_dict(),
                "bank": [{"scenario": e.scenario, "label_names": list(e.label_names), "examples": list(e.examples)}
                         for e in self.entries]}

    @classmethod
    def load(cls, meta: dict | None, tensors: dict[str, Tensor], where: str) -> HeadBank | None:
        """The bank of a meta-init (its metalora.json `head` block + `bank.*` tensors), None if it has none."""
        if not meta or meta.get("route") != "bank":
            return None
        entries = []
        for i, item in enumerate(meta.get("bank") or []):
            pk, lk = f"{BANK_PREFIX}{i}.prototypes", f"{BANK_PREFIX}{i}.log_prior"
            if pk not in tensors or lk not in tensors:
                raise DataError(f"{where}: head bank entry {i} ({item.get('scenario')}) has no tensors {pk} / {lk}; "
                                "the folder is incomplete, copy or pull it again")
            names = tuple(item.get("label_names") or ())
            p, q = tensors[pk], tensors[lk]
            if p.dim() != 2 or p.shape[0] != len(names) or q.shape != (len(names),):
                raise DataError(f"{where}: head bank entry {i} has tensors of shape {tuple(p.shape)} / {tuple(q.shape)} "
                                f"for {len(names)} labels; the folder is corrupt, re-save the meta-init")
            entries.append(BankEntry(str(item.get("scenario")), names, p, q, tuple(item.get("examples") or ())))
        return cls(entries, HeadChoice.from_dict(meta, where))

    def with_choice(self, choice: HeadChoice) -> HeadBank:
        return replace(self, choice=choice)


def mixture_weights(protos: Tensor, support: Tensor, labels: Tensor, scale: float, temperature: float) -> Tensor:
    """softmax_j(temperature * sum_i log p_j(y_i | x_i)) over bank heads j (prototypes [J, C, H])."""
    if temperature == 0.0 or protos.shape[0] == 1:
        return torch.full((protos.shape[0],), 1.0 / protos.shape[0], dtype=support.dtype, device=support.device)
    logits = scale * (2.0 * torch.einsum("nh,jch->jnc", support, protos) - (protos * protos).sum(-1).unsqueeze(1))
    ll = torch.log_softmax(logits, -1).gather(-1, labels.to(support.device).view(1, -1, 1).expand(protos.shape[0], -1, 1))
    return torch.softmax(temperature * ll.sum((1, 2)), 0)


def shrunk_head(protos: Tensor, counts: Tensor, prior_protos: Tensor, log_prior: Tensor, choice: HeadChoice, scale: float,
                direction: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The head of the shrunk prototypes, with `class_prior` x log prior added to the logits."""
    w = shrink_weights(counts, choice.shrinkage, choice.shrinkage_shots)
    mixed = shrink_prototypes(protos, prior_protos, w)
    weight, bias = head_from_prototypes(mixed, direction=direction)
    if choice.class_prior:
        bias = bias + choice.class_prior * log_prior.to(bias) / scale
    return weight, bias


# -- building a bank ---------------------------------------------------------------------------------


def bank_indices(labels: Sequence[int], num_labels: int, per_class: int, seed: int) -> list[int]:
    """Up to `per_class` example indices of each class, a seeded draw (the same bank in every run)."""
    import numpy as np

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for c in range(num_labels):
        idx = np.flatnonzero(labels == c)
        out.extend(rng.permutation(idx)[:per_class].tolist())
    return out


@torch.no_grad()
def build_bank(scenarios: Iterable[tuple[str, Sequence[str], Sequence[int]]], featurize: Callable[[str, list[int]], Tensor],
               per_class: int, seed: int = 0, choice: HeadChoice | None = None) -> HeadBank:
    """A bank from (scenario name, label names, labels of its training split) and a featurizer.

    `featurize(scenario, indices)` returns the init's features [n, H] of those examples. Class
    frequencies come from all the labels (the scenario's natural balance), prototypes from the drawn
    examples. A scenario missing a class in its training split gets no entry.
    """
    entries = []
    for name, label_names, labels in scenarios:
        c = len(label_names)
        counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=c)[:c].double()
        if (counts == 0).any():
            continue
        idx = bank_indices(labels, c, per_class, seed)
        feats = featurize(name, idx)
        y = torch.as_tensor([int(labels[i]) for i in idx], dtype=torch.long)
        protos, n = class_means(feats.float(), y, c)
        log_prior = (counts / counts.sum()).log().float()
        entries.append(BankEntry(name, tuple(label_names), protos.cpu(), log_prior, tuple(int(v) for v in n.tolist())))
    return HeadBank(entries, choice or HeadChoice())


def choice_grid(shrinkage: Sequence[float], temperature: Sequence[float], class_prior: Sequence[float], shots: int) -> list[HeadChoice]:
    """Every combination, simplest first (plain prototypes lead), so ties go to the simpler head."""
    grid = [HeadChoice(s, shots, t, a) for s in sorted(shrinkage) for a in sorted(class_prior) for t in sorted(temperature)]
    return sorted(grid, key=lambda c: (c.shrinkage > 0 or c.class_prior > 0, c.class_prior, c.shrinkage, c.temperature))


def pick_choice(scores: dict[HeadChoice, tuple[float, float]], choices: Sequence[HeadChoice], criterion: str = "accuracy",
                f1_tolerance: float = 0.01) -> HeadChoice:
    """The validated head among `choices` (in preference order) from (accuracy, macro-F1) scores.

    `accuracy`: the best accuracy. `accuracy_keep_f1`: the best accuracy among the choices whose
    macro-F1 is at least the plain prototype head's minus `f1_tolerance` (the plain head must be scored).
    `accuracy_plus_f1`: the best sum of the two, for targets judged on both (a point of F1 buys a point of
    accuracy), so neither a class prior that predicts the frequent class nor a balanced head that ignores the
    test set's skew wins by one figure alone.
    Ties go to the earlier choice (choice_grid puts the simplest first).
    """
    allowed = list(choices)
    if criterion == "accuracy_plus_f1":
        best = max(scores[c][0] + scores[c][1] for c in allowed)
        return next(c for c in allowed if scores[c][0] + scores[c][1] >= best - 1e-12)
    if criterion == "accuracy_keep_f1":
        plain = [s for c, s in scores.items() if is_plain(c)]
        if not plain:
            raise ValueError("accuracy_keep_f1 needs the plain prototype head's score")
        floor = plain[0][1] - f1_tolerance
        allowed = [c for c in allowed if scores[c][1] >= floor - 1e-12]
        if not allowed:  # only when the plain head is not a choice and nothing keeps its F1
            allowed = [max(choices, key=lambda c: scores[c][1])]
    elif criterion != "accuracy":
        raise ValueError(f"unknown head criterion {criterion!r}")
    best = max(scores[c][0] for c in allowed)
    return next(c for c in allowed if scores[c][0] == best)


def is_plain(choice: HeadChoice) -> bool:
    """A choice that builds the plain prototype head (no shrinkage, no class prior): the bank is unused."""
    return choice.shrinkage == 0.0 and choice.class_prior == 0.0


__all__ = [
    "BankEntry", "HeadBank", "HeadChoice", "HeadInfo", "bank_indices", "build_bank", "choice_grid", "class_means",
    "head_from_prototypes", "is_plain", "mixture_weights", "pick_choice", "shrink_prototypes", "shrink_weights", "shrunk_head",
]

