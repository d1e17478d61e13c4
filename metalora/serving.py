"""Many scenarios on one backbone: every adapter's LoRA weights and head beside ONE frozen model.

Why: per-scenario adapters pay off when one backbone in memory serves every scenario. A LoRA adapter
of MiniLM is ~0.3 MB against the backbone's ~90 MB, so a process that loads one model per adapter
spends nearly all its memory on copies of the same frozen weights.

How: peft holds each adapter as a named LoRA adapter inside the same model. A batch that mixes
scenarios runs as one forward pass with peft's mixed-batch inference (`adapter_names=[...]`, one name
per row): each LoRA layer adds every row's own adapter to the shared frozen output. The forward is the
model's own (`LoraClassifier.features`: decoder positions, pooling, normalisation), run inside peft's
routing, so it cannot drift from what a single adapter computes. Each row then gets its own
scenario's head. `mixed=False` instead runs scenario by scenario with that adapter active (what a
process without mixed batches would do; the bench compares the two), and so do label-word heads,
whose scoring makes its own passes. Rows are sorted by length before batching (little padding).

Inputs are cut and pooled as each adapter was trained (`metalora.json` records it); adapters that
disagree on that are refused at load, as are adapters for another backbone.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from metalora.adapter_io import AdapterFolder
from metalora.backbones import load_backbone
from metalora.errors import BackboneError, DataError
from metalora.label_words import WORDS_KEY
from metalora.model import Encoded, LoraClassifier, Params, head_logits, lora_config

INPUT_FIELDS = ("max_length", "truncation", "head_tokens", "pooling", "scoring", "prompt")


def check_texts(texts: Sequence[str] | str) -> list[str]:
    """A list of non-empty texts (an empty one has no answer; a silent guess would look like one)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"text {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise DataError(f"text {i} is empty; every text needs some words to be labelled")
    return texts


@dataclass(frozen=True)
class ServedAdapter:
    """One loaded adapter: the scenario it serves, its peft adapter name and its head."""

    scenario: str
    adapter: str  # the peft adapter name inside the shared model
    label_names: tuple[str, ...]
    head: Params
    path: Path
    origin: dict
    meta: dict


@dataclass
class MultiPrediction:
    """One entry per text, in input order; each text's probabilities are over its own scenario's labels."""

    scenarios: list[str]
    labels: list[str]
    label_ids: np.ndarray
    probabilities: list[dict[str, float]]

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self) -> list[dict]:
        return [{"scenario": s, "label": lab, "probabilities": p}
                for s, lab, p in zip(self.scenarios, self.labels, self.probabilities)]


class MultiAdapterModel:
    """One frozen backbone + peft, and every loaded adapter's LoRA weights and head."""

    def __init__(self, model: LoraClassifier, adapters: Mapping[str, ServedAdapter]):
        self.model = model
        self.adapters = dict(adapters)
        self._lock = threading.Lock()  # peft's mixed-batch hooks live on the modules: one forward at a time

    # -- loading --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, specs, backbone=None) -> "MultiAdapterModel":
        """`specs`: a list of folders / Hub ids (each serves the scenario its metalora.json names), or a
        dict {scenario name: folder or Hub id}. Every folder is read and checked before any model is built."""
        if isinstance(specs, (str, Path, AdapterFolder)):
            specs = [specs]
        items = list(specs.items()) if isinstance(specs, Mapping) else [(None, s) for s in specs]
        if not items:
            raise DataError("no adapters to load: pass at least one adapter folder or Hub id")
        folders = [AdapterFolder.open(spec) for _, spec in items]
        names = [_served_name(name, f) for (name, _), f in zip(items, folders)]
        _check_unique(names, folders)
        _check_same_backbone(folders, names)
        _check_same_inputs(folders, names)

        bb = load_backbone(folders[0].backbone_config(backbone))
        for f in folders:
            f.check_backbone(bb)
        model = LoraClassifier(bb, folders[0].lora)
        served = {}
        for i, (name, f) in enumerate(zip(names, folders)):
            adapter = "default" if i == 0 else f"a{i}"
            if i:
                model.peft.add_adapter(adapter, lora_config(bb, f.lora))
            params = dict(model.named_parameters())
            with torch.no_grad():
                for key, value in f.lora_params(model, adapter).items():
                    params[key].copy_(value)
            served[name] = ServedAdapter(name, adapter, f.label_names, {k: v.to(model.device) for k, v in f.head.items()},
                                         f.path, f.origin, f.meta)
        for p in model.parameters():
            p.requires_grad_(False)
        model.peft.eval()  # adapters added after construction start in training mode
        return cls(model, served)

    @property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(self.adapters)

    @property
    def label_words(self) -> bool:
        """Label-word heads (decoders scoring each class's word) instead of a linear head on pooled features."""
        return any(WORDS_KEY in a.head for a in self.adapters.values())

    # -- prediction -----------------------------------------------------------------------------------
    def resolve_scenarios(self, scenario: str | Sequence[str] | None, n: int) -> list[str]:
        """One known scenario name per text (a single name serves all); errors name the loaded ones."""
        loaded = ", ".join(self.adapters)
        if scenario is None:
            if len(self.adapters) > 1:
                raise DataError(f"{len(self.adapters)} adapters are loaded: name the scenario of each text (one of {loaded})")
            scenario = next(iter(self.adapters))
        names = [scenario] * n if isinstance(scenario, str) else list(scenario)
        if len(names) != n:
            raise DataError(f"{n} texts but {len(names)} scenario names: give one per text, or a single name for all")
        for i, s in enumerate(names):
            if s not in self.adapters:
                raise DataError(f"text {i}: no loaded adapter serves scenario {s!r}; loaded: {loaded}")
        return names

    def predict(self, texts: Sequence[str] | str, scenario: str | Sequence[str] | None = None, batch_size: int = 64,
                mixed: bool = True) -> MultiPrediction:
        """Label each text with its scenario's adapter. `scenario`: one name per text, or one for all
        (optional when a single adapter is loaded). Everything is checked before any forward pass.

        mixed=True: batches mix scenarios (peft's `adapter_names`); label-word heads, whose scoring runs
        its own passes, and mixed=False go scenario by scenario with that adapter active."""
        texts = check_texts(texts)
        names = self.resolve_scenarios(scenario, len(texts))
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        probs = self.probabilities(texts, names, batch_size, mixed)
        labels, ids, out = [], np.zeros(len(texts), dtype=np.int64), []
        for i, (name, row) in enumerate(zip(names, probs)):
            served = self.adapters[name]
            k = int(row.argmax())
            labels.append(served.label_names[k])
            ids[i] = k
            out.append({label: float(v) for label, v in zip(served.label_names, row)})
        return MultiPrediction(names, labels, ids, out)

    @torch.no_grad()
    def probabilities(self, texts: list[str], names: list[str], batch_size: int = 64, mixed: bool = True) -> list[np.ndarray]:
        """Each text's class probabilities under its own scenario's adapter and head."""
        model = self.model
        ids, mask = model.tokenize(texts)
        enc = Encoded(ids, mask)
        lengths = mask.sum(1).tolist()
        out: list[np.ndarray | None] = [None] * len(texts)
        if mixed and not self.label_words:
            feats = self.features(texts, names, batch_size, enc=enc)
            for name in dict.fromkeys(names):
                rows = [i for i, s in enumerate(names) if s == name]
                head = self.adapters[name].head
                x = feats[rows].to(head["head.weight"].dtype)  # a bf16 / fp16 backbone, a float head
                for i, p in zip(rows, torch.softmax(head_logits(head, x), dim=-1).float().cpu().numpy()):
                    out[i] = p
            return out
        with self._lock:
            for name in dict.fromkeys(names):
                rows = sorted((i for i, s in enumerate(names) if s == name), key=lambda i: lengths[i])
                served = self.adapters[name]
                with self._active(served.adapter):  # what a process without mixed batches does
                    p = model.predict_proba(served.head, enc.select(rows), batch_size).float().numpy()
                for i, row in zip(rows, p):
                    out[i] = row
        return out

    @torch.no_grad()
    def features(self, texts: list[str], names: list[str], batch_size: int = 64, enc: Encoded | None = None) -> torch.Tensor:
        """Pooled, normalised features [N, H] of each text under its own scenario's LoRA weights: batches
        in length order that mix scenarios, each through the model's own forward with peft routing row i
        through adapter i (`adapter_names`)."""
        model = self.model
        if enc is None:
            ids, mask = model.tokenize(texts)
            enc = Encoded(ids, mask)
        order = sorted(range(len(texts)), key=lambda i: int(enc.mask[i].sum()))
        out = torch.zeros(len(texts), model.backbone.hidden_size, device=model.device)
        with self._lock:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                adapters = [self.adapters[names[i]].adapter for i in batch]
                with model.peft._enable_peft_forward_hooks(adapter_names=adapters):  # what forward(adapter_names=) does
                    out[batch] = model.features(None, enc.select(batch)).to(out.dtype)
        return out

    @contextlib.contextmanager
    def _active(self, adapter: str) -> Iterator[None]:
        """`adapter` as peft's active adapter for a block (then back to the first one, everything frozen)."""
        peft = self.model.peft
        peft.set_adapter(adapter)
        try:
            yield
        finally:
            peft.set_adapter("default")
            for p in self.model.parameters():
                p.requires_grad_(False)


# -- load-time checks ---------------------------------------------------------------------------------
def _served_name(name: str | None, folder: AdapterFolder) -> str:
    if folder.head is None:
        raise DataError(f"{folder.path} has no head: it is a {folder.kind}, not an adapted scenario; adapt it first")
    folder.label_names  # noqa: B018 - raises a clear error when the labels are missing
    name = name or folder.scenario
    if not name:
        raise DataError(f"{folder.path}/metalora.json names no scenario; load it as {{name: folder}} to give it one")
    return str(name)


def _check_unique(names: list[str], folders: list[AdapterFolder]) -> None:
    seen: dict[str, AdapterFolder] = {}
    for name, f in zip(names, folders):
        if name in seen:
            raise DataError(f"two adapters serve scenario {name!r} ({seen[name].path} and {f.path}); "
                            "load them as {name: folder} with distinct names")
        seen[name] = f


def _check_same_backbone(folders: list[AdapterFolder], names: list[str]) -> None:
    groups: dict[tuple, list[str]] = {}
    for name, f in zip(names, folders):
        groups.setdefault(f.backbone_key(), []).append(f"{name} ({f.path})")
    if len(groups) > 1:
        parts = [f"{base}{'@' + rev if rev else ''}: {', '.join(members)}" for (base, rev), members in groups.items()]
        raise BackboneError("adapters for different backbones cannot share one backbone; "
                            + "; ".join(parts) + ". Load each backbone's adapters in a separate load_adapters call")


def _check_same_inputs(folders: list[AdapterFolder], names: list[str]) -> None:
    def inputs(f: AdapterFolder) -> tuple:
        cfg = f.backbone_config()
        return tuple(getattr(cfg, k) for k in INPUT_FIELDS)

    first = inputs(folders[0])
    for name, f in zip(names[1:], folders[1:]):
        if inputs(f) != first:
            diff = [f"{k} {a!r} vs {b!r}" for k, a, b in zip(INPUT_FIELDS, first, inputs(f)) if a != b]
            raise DataError(f"adapters {names[0]} ({folders[0].path}) and {name} ({f.path}) were trained to read their inputs "
                            f"differently ({', '.join(diff)}); serve them in separate load_adapters calls")
