"""Ranking a library for a new scenario's support set, and fitting the learned selector.

`select` scores every entry with the cheap signals (zero-step leave-one-out prototype loss and
accuracy; data-signature similarity), adds the few-step signal for the best few entries when the
rule in force needs it, and ranks by ONE signal, which it names (`Selection.decided_by`):
  learned    the learned selector, when the library has one (`fit_selector`)
  zero_step  else the support set's leave-one-out prototype loss under each entry (no training)
`by=` forces a signal (`zero_step`, `few_steps`: held-out loss after `few_steps` adaptation steps, two-fold,
for the best `few_candidates` entries by zero-step; `signature`; `learned`). The other signals' top
entries are reported beside the decision, so a user sees when they disagree.

Cost: the support set goes through the frozen prefix once per distinct LoRA cut (entries with LoRA
on different layer sets need different prefixes) and through the LoRA layers once per entry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from metalora.config import AdaptConfig
from metalora.errors import BackboneError, ConfigError, DataError
from metalora.library.entries import Entry, signature_of
from metalora.library.selector import LearnedSelector, feature_rows, fit
from metalora.library.signals import Support, cosine, few_step, few_step_config, zero_step
from metalora.model import Encoded

SIGNALS = ("learned", "few_steps", "zero_step", "signature")


@dataclass
class Ranked:
    entry: Entry
    scores: dict  # zs_loss, zs_acc, sig_cos, fs_loss, fs_acc, learned (whichever were computed)

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass
class Selection:
    ranking: list[Ranked]
    decided_by: str
    top_by_signal: dict[str, str]
    seconds: float
    zero_step_seconds: float
    entries_scored: int
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Ranked:
        return self.ranking[0]

    @property
    def seconds_per_entry(self) -> float:
        return self.zero_step_seconds / max(self.entries_scored, 1)

    def describe(self) -> str:
        best = self.best.name
        agree = [s for s, n in self.top_by_signal.items() if s != self.decided_by and n == best]
        other = {s: n for s, n in self.top_by_signal.items() if s != self.decided_by and n != best}
        text = f"chose {best} ({self.best.entry.kind}) by the {self.decided_by} signal"
        if agree:
            text += f"; {', '.join(agree)} agreed"
        if other:
            text += "; " + ", ".join(f"{s} preferred {n}" for s, n in other.items())
        return text

    def to_json(self) -> dict:
        return {"decided_by": self.decided_by, "chosen": self.best.name, "top_by_signal": self.top_by_signal,
                "seconds": self.seconds, "seconds_per_entry": self.seconds_per_entry, "entries_scored": self.entries_scored,
                "ranking": [{"name": r.name, "kind": r.entry.kind, **r.scores} for r in self.ranking], "notes": self.notes}


class _Encodings:
    """The support set tokenised and pushed through the frozen prefix once per distinct cut."""

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)
        self.by_cut: dict[int, Encoded] = {}

    def __call__(self, model) -> Encoded:
        if model.cut not in self.by_cut:
            self.by_cut[model.cut] = model.encode(self.texts)
        return self.by_cut[model.cut]


def _as_support(support, library=None) -> Support:
    if isinstance(support, Support):
        return support
    if isinstance(support, tuple) and len(support) in (2, 3):
        texts, labels = support[0], support[1]
        names = tuple(support[2]) if len(support) == 3 else ()
        n = len(names) if names else int(max(labels)) + 1
        return Support(list(texts), torch.as_tensor(list(labels)), n, names)
    raise DataError("support must be a metalora.library.Support or (texts, labels[, label_names])")


def score_entries(library, support: Support, enc: _Encodings, exclude: Sequence[str] = ()) -> tuple[list[dict], list[str], float]:
    """The cheap signals for every entry: rows of scores, notes about skipped entries, seconds spent."""
    base = library.any_model()
    sup_sig = signature_of(library.frozen_features(enc(base), base))
    # embeddings share a large common direction (every mean is ~0.99 cosine to every other), so
    # similarity is measured around the library's mean signature
    sigs = [e.signature[0] for e in library.entries if e.signature is not None and e.name not in exclude]
    center = torch.stack(sigs).mean(0) if len(sigs) >= 2 else torch.zeros_like(sup_sig[0])
    rows, notes = [], []
    t0 = time.perf_counter()
    for e in library.entries:
        if e.name in exclude:
            continue
        try:
            model, init = library.init_for(e)
            zl, za = zero_step(model, init, enc(model), support.labels, support.num_labels)
        except (DataError, BackboneError) as exc:
            msg = f"skipped library entry {e.name}: {exc}"
            notes.append(msg)
            library._note(msg)
            continue
        names = set(e.label_names)
        overlap = len(names & set(support.label_names)) / len(names | set(support.label_names)) if names and support.label_names else 0.0
        rows.append({"entry": e, "kind": e.kind, "zs_loss": zl, "zs_acc": za,
                     "sig_cos": cosine(sup_sig[0] - center, e.signature[0] - center) if e.signature is not None else None,
                     "labels_match": float(bool(e.label_names) and len(e.label_names) == support.num_labels),
                     "label_overlap": overlap, "entry_score": e.score})
    return rows, notes, time.perf_counter() - t0


def _few_steps(library, rows: list[dict], support: Support, enc: _Encodings, steps: int, candidates: int, seed: int) -> None:
    order = sorted(rows, key=lambda r: (r["zs_loss"], -r["zs_acc"]))[:candidates]
    for r in order:
        e = r["entry"]
        model, init = library.init_for(e)
        cfg = few_step_config(library.adapt_defaults(e), steps, replace(AdaptConfig(backbone=library.backbone_config), seed=seed))
        out = few_step(model, init, enc(model), support.labels, support.num_labels, cfg, where=f"library entry {e.name}")
        if out is not None:
            r["fs_loss"], r["fs_acc"] = out


def _order(rows: list[dict], signal: str, selector: LearnedSelector | None) -> list[dict]:
    if signal == "zero_step":
        return sorted(rows, key=lambda r: (r["zs_loss"], -r["zs_acc"]))
    if signal == "few_steps":
        return sorted(rows, key=lambda r: (0, r["fs_loss"], -r["fs_acc"]) if "fs_loss" in r else (1, r["zs_loss"], -r["zs_acc"]))
    if signal == "signature":
        return sorted(rows, key=lambda r: (r["sig_cos"] is None, -(r["sig_cos"] or 0.0), r["zs_loss"]))
    scores = selector.score(feature_rows(rows))
    for r, s in zip(rows, scores):
        r["learned"] = float(s)
    return sorted(rows, key=lambda r: -r["learned"])


def select(library, support, k: int = 5, by: str = "auto", few_steps: int = 5, few_candidates: int = 5,
           seed: int = 0, exclude: Sequence[str] = ()) -> "Selection":
    """Rank the library for `support`; the first entry of `Selection.ranking` is the choice."""
    t0 = time.perf_counter()
    if by not in ("auto", *SIGNALS):
        raise ConfigError(f"select by: {by!r} is not a signal; choose auto, {', '.join(SIGNALS)}")
    if k < 1:
        raise ConfigError(f"select k: must be >= 1, got {k}")
    library.check_not_empty()
    support = _as_support(support, library)
    if by == "learned" and library.selector is None:
        raise ConfigError("select by learned: this library has no learned selector; fit one first "
                          "(metalora library fit-selector, or AdapterLibrary.fit_selector)")
    signal = by if by != "auto" else ("learned" if library.selector is not None else "zero_step")
    enc = _Encodings(support.texts)
    rows, notes, zs_seconds = score_entries(library, support, enc, exclude)
    if not any(r["kind"] != "default" for r in rows):
        raise DataError("every adapter and meta-init of the library was skipped (see the warnings); nothing to select from")
    if signal == "few_steps":
        if few_steps < 1:
            raise ConfigError("select by few_steps needs few_steps >= 1")
        _few_steps(library, rows, support, enc, few_steps, few_candidates, seed)
    tops = {}
    for s in ("zero_step", "signature", "few_steps", "learned"):
        if s == "few_steps" and not any("fs_loss" in r for r in rows):
            continue
        if s == "learned" and library.selector is None:
            continue
        if s == "signature" and not any(r["sig_cos"] is not None for r in rows):
            continue
        tops[s] = _order(rows, s, library.selector)[0]["entry"].name
    ranked = _order(rows, signal, library.selector)[:k]
    keep = ("zs_loss", "zs_acc", "sig_cos", "fs_loss", "fs_acc", "learned")
    ranking = [Ranked(r["entry"], {key: r[key] for key in keep if key in r}) for r in ranked]
    return Selection(ranking, signal, tops, time.perf_counter() - t0, zs_seconds, len(rows), notes)


# -- the learned selector -----------------------------------------------------------------------
class _Relatedness:
    """Which entries were adapted on this scenario's own texts: the same scenario, or another one cut from
    the same rows (ARSC's t2/t4/t5 of a domain; two cards over one table). A new scenario never has such
    an adapter, so the selector must not learn from them either. Decided by text overlap with the
    entry's scenario (loaded once per entry), by name where that scenario is not known here."""

    def __init__(self, library):
        self.library = library
        self.texts: dict[str, set[str] | None] = {}

    def _entry_texts(self, e) -> set[str] | None:
        from metalora.scenarios import get_scenario

        if e.scenario not in self.texts:
            try:
                sc = get_scenario(e.scenario)
                self.texts[e.scenario] = {_norm(t) for t in sc.load((e.support or {}).get("split") or "train")["text"]}
            except Exception:  # not known on this machine: fall back to the name
                self.texts[e.scenario] = None
        return self.texts[e.scenario]

    def __call__(self, e, sc, probe: set[str]) -> bool:
        if not e.scenario or e.kind != "adapter":
            return False
        if e.scenario == sc.name:
            return True
        task = getattr(sc, "arsc_task", None)
        if task and e.scenario.startswith(f"{sc.card.name}/{task[0]}."):
            return True
        texts = self._entry_texts(e)
        return bool(texts) and len(probe & texts) > 0.01 * max(len(probe), 1)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def fit_selector(library, scenarios: Sequence, shots: int = 5, seeds: Sequence[int] = (0,), query_size: int = 64,
                 query_split: str = "test", support_split: str = "train", candidates: int | None = None,
                 steps: int | None = None, progress: bool = False) -> LearnedSelector:
    """Fit the selector on training scenarios (names or Scenario objects).

    For each scenario and seed: a support set of `shots` per class from `support_split`, the cheap
    signals for every entry EXCEPT adapters of that very scenario or of one sharing its texts (a new scenario
    never has its own),
    then every candidate (all entries, or the best `candidates` by zero-step plus the meta-inits and
    the default) adapted with its own settings (`steps` overrides the step count) and scored on up to
    `query_size` examples of `query_split`: the accuracy the selector learns to rank by.
    """
    from metalora.adapt import adapt
    from metalora.library.library import adapt_config_for
    from metalora.scenarios import Scenario, get_scenario, sample_support

    library.check_not_empty()
    scs = [s if isinstance(s, Scenario) else get_scenario(s) for s in scenarios]
    if not scs:
        raise ConfigError("fit-selector: name at least one training scenario")
    tasks, used = [], []
    related = _Relatedness(library)
    from tqdm.auto import tqdm

    for sc in tqdm(scs, desc="fit selector", disable=not progress):
        for seed in seeds:
            ds = sample_support(sc.load(support_split), shots, seed, sc.num_labels, where=f"{sc.name} ({support_split})")
            support = Support.from_dataset(ds, sc.num_labels, sc.label_names)
            q = sc.load(query_split)
            if len(q) > query_size:
                q = q.shuffle(seed=seed).select(range(query_size))
            probe = {_norm(t) for t in [*support.texts, *q["text"]]}
            own = [e.name for e in library.entries if related(e, sc, probe)]
            enc = _Encodings(support.texts)
            rows, _, _ = score_entries(library, support, enc, exclude=own)
            if candidates is not None:
                best = sorted(rows, key=lambda r: (r["zs_loss"], -r["zs_acc"]))[:candidates]
                rows = [r for r in rows if r in best or r["kind"] != "adapter"]
            qenc = _Encodings(list(q["text"]))
            y_q = np.asarray(q["label"])
            accs = []
            for r in rows:
                e = r["entry"]
                model, init = library.init_for(e)
                cfg = replace(adapt_config_for(library, e), seed=seed)
                if steps is not None:
                    cfg = replace(cfg, steps=steps)
                params = adapt(model, enc(model), support.labels, support.num_labels, init, cfg, where=f"{sc.name} from {e.name}")
                probs = model.predict_proba(params, qenc(model)).numpy()
                accs.append(float((probs.argmax(1) == y_q).mean()))
            tasks.append((feature_rows(rows), np.asarray(accs)))
            used.append(sc.name)
    return fit(tasks, trained_on={"scenarios": sorted(set(used)), "shots": shots, "seeds": list(seeds),
                                  "query_split": query_split, "query_size": query_size, "entries": len(library.entries)})
