"""One library entry: what an adapter or meta-init folder says about itself, read without loading a model.

Why metadata only: a library of a hundred adapters is indexed by reading a hundred small JSON files
(`metalora.json`, `adapter_config.json`) and at most one small signature file each; LoRA weights are
read only when an entry is scored, and the backbone is loaded once for the whole library.

The signature of an entry is the mean and spread of the frozen backbone's pooled, normalised
sentence embeddings of the texts it was adapted on (its support set; for a meta-init a sample of its
training suite). It travels with the adapter as `metalora_signature.safetensors`, so a pulled Hub
adapter brings its own; when it is absent the library computes it from the scenario named in
`metalora.json` if that scenario is known here, and otherwise the entry simply has none.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from metalora.errors import DataError
from metalora.jsonfile import read_object

SIGNATURE_FILE = "metalora_signature.safetensors"
DEFAULT_NAME = "peft-default"  # the always-present plain LoRA entry (peft's default init)
KINDS = ("adapter", "meta-init", "default")


@dataclass(frozen=True)
class LoraShape:
    """What must match for entries to share one model (and, for composition, to be blended)."""

    r: int
    alpha: int
    target_modules: tuple[str, ...] | None
    layers: tuple[int, ...] | None  # layers_to_transform; None = every layer

    def describe(self) -> str:
        layers = "all layers" if self.layers is None else f"layers {list(self.layers)}"
        targets = ",".join(self.target_modules) if self.target_modules else "default targets"
        return f"r={self.r}, alpha={self.alpha}, {targets}, {layers}"

    def to_dict(self) -> dict:
        return {"r": self.r, "alpha": self.alpha, "target_modules": list(self.target_modules) if self.target_modules else None,
                "layers": list(self.layers) if self.layers is not None else None}

    @classmethod
    def from_dict(cls, d: dict) -> LoraShape:
        return cls(int(d["r"]), int(d["alpha"]), tuple(d["target_modules"]) if d.get("target_modules") else None,
                   tuple(int(x) for x in d["layers"]) if d.get("layers") is not None else None)


@dataclass
class Entry:
    """An adapter, a meta-init, or peft's default LoRA init (`kind="default"`, no folder)."""

    name: str
    kind: str
    base_model: str | None
    lora: LoraShape | None
    folder: Path | None = None
    source: dict = field(default_factory=dict)  # {"path": ...} or {"repo_id": ..., "revision": ...}
    scenario: str | None = None
    card: str | None = None  # the scenario's data card as recorded (a path, maybe relative)
    family: str | None = None
    label_names: tuple[str, ...] = ()
    metrics: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    adapt: dict = field(default_factory=dict)  # the adaptation settings it recommends (optimizer, lr, head_lr, steps)
    suite: tuple[str, ...] = ()  # meta-inits: the scenarios they were trained on
    support: dict = field(default_factory=dict)  # adapters: split, shots, seed of the support set they saw
    fingerprint: str = ""
    signature: tuple[Tensor, Tensor] | None = None  # (mean [H], std [H]) of frozen embeddings

    @property
    def score(self) -> float | None:
        """The entry's own quality figure (its scenario's accuracy, or a meta-init's validation accuracy)."""
        for key in ("accuracy", "val_acc"):
            v = self.metrics.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        return None

    def to_json(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "base_model": self.base_model,
            "lora": self.lora.to_dict() if self.lora else None, "source": self.source,
            "scenario": self.scenario, "card": self.card, "family": self.family, "label_names": list(self.label_names),
            "metrics": self.metrics, "lineage": self.lineage, "adapt": self.adapt, "suite": list(self.suite),
            "support": self.support, "fingerprint": self.fingerprint, "has_signature": self.signature is not None,
        }

    @classmethod
    def from_json(cls, d: dict, folder: Path | None) -> Entry:
        return cls(name=d["name"], kind=d["kind"], base_model=d.get("base_model"),
                   lora=LoraShape.from_dict(d["lora"]) if d.get("lora") else None, folder=folder,
                   source=d.get("source") or {}, scenario=d.get("scenario"), card=d.get("card"), family=d.get("family"),
                   label_names=tuple(d.get("label_names") or ()), metrics=d.get("metrics") or {},
                   lineage=d.get("lineage") or {}, adapt=d.get("adapt") or {}, suite=tuple(d.get("suite") or ()),
                   support=d.get("support") or {}, fingerprint=d.get("fingerprint", ""))


def fingerprint(folder: Path) -> str:
    """Changes whenever the entry's files change: the JSON files' bytes and the weights' size and mtime."""
    h = hashlib.sha256()
    for name in ("metalora.json", "adapter_config.json"):
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    for f in sorted(folder.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _json(path: Path) -> dict:
    return read_object(path)


def lora_shape(config: dict, where: Path) -> LoraShape:
    targets = config.get("target_modules")
    if isinstance(targets, str):
        raise DataError(f"{where}: regex target_modules are not supported; list the module names")
    layers = config.get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    try:
        return LoraShape(int(config["r"]), int(config["lora_alpha"]), tuple(sorted(targets)) if targets else None,
                         tuple(sorted(int(x) for x in layers)) if layers else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: r / lora_alpha missing or not numbers ({exc})") from None


def read_entry(folder: Path, name: str, source: dict) -> Entry:
    """An entry from its folder's JSON files (no tensors read); DataError names what is wrong."""
    folder = Path(folder)
    for needed in ("adapter_config.json", "adapter_model.safetensors", "metalora.json"):
        if not (folder / needed).is_file():
            raise DataError(f"{folder}: {needed} is missing")
    meta = _json(folder / "metalora.json")
    config = _json(folder / "adapter_config.json")
    kind = meta.get("kind", "adapter")
    if kind not in ("adapter", "meta-init"):
        raise DataError(f"{folder}/metalora.json: kind must be adapter or meta-init, got {kind!r}")
    scenario = meta.get("scenario") or {}
    backbone = meta.get("backbone") or {}
    return Entry(
        name=name, kind=kind, folder=folder, source=source,
        base_model=backbone.get("base_model") or config.get("base_model_name_or_path"),
        lora=lora_shape(config, folder / "adapter_config.json"),
        scenario=scenario.get("name"), card=scenario.get("card"), family=scenario.get("family"),
        label_names=tuple(scenario.get("label_names") or ()),
        metrics={k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float, str))},
        lineage=meta.get("lineage") or {}, adapt=meta.get("adapt") or {},
        suite=tuple((meta.get("meta") or {}).get("suite") or ()), support=meta.get("support") or {},
        fingerprint=fingerprint(folder),
    )


def read_signature(folder: Path) -> tuple[Tensor, Tensor] | None:
    f = Path(folder) / SIGNATURE_FILE
    if not f.is_file():
        return None
    from safetensors.torch import load_file

    try:
        sd = load_file(str(f))
        return sd["mean"].float(), sd["std"].float()
    except Exception as exc:  # a corrupt file: the signature is dropped, the entry stays usable
        raise DataError(f"{f}: not a readable signature file ({type(exc).__name__}: {exc})") from None


def write_signature(folder: Path, signature: tuple[Tensor, Tensor]) -> None:
    from safetensors.torch import save_file

    mean, std = signature
    save_file({"mean": mean.contiguous().float(), "std": std.contiguous().float()}, str(Path(folder) / SIGNATURE_FILE))


def signature_of(features: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, std) over examples of pooled, normalised embeddings [N, H]."""
    features = features.float()
    std = features.std(0, unbiased=False) if len(features) > 1 else torch.zeros(features.shape[1])
    return features.mean(0), std
