"""The Python API other repos import: adapt a scenario, load an adapter, predict, evaluate.

    import metalora
    model = metalora.adapt("synthetic/sentiment/kitchen", shots=5)      # or init="path/or/org/meta-init"
    model.predict(["the lid cracked in a week"]).labels
    model.save("adapters/kitchen")
    same = metalora.load_adapter("adapters/kitchen")
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metalora import __version__
from metalora.adapt import Init, Timer, adapt as _adapt
from metalora.adapter_io import (
    INIT_FILE, check_backbone, load_head, load_params, lora_settings_from, read_meta, save_folder,
)
from metalora.augment.calibration import load_feature_stats
from metalora.backbones import load_backbone
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.errors import DataError
from metalora.heads import HeadBank
from metalora.label_words import scenario_words
from metalora.model import HEAD_KEYS, PRIOR_KEY, SCALE_KEY, Encoded, LoraClassifier, Params
from metalora.scenarios import Scenario, check_support, get_scenario, sample_support


@dataclass
class Prediction:
    labels: list[str]
    label_ids: np.ndarray
    probabilities: np.ndarray  # [n, num_labels], columns in label_names order


class AdaptedModel:
    """A backbone + LoRA + head for one scenario, ready to predict, evaluate and save."""

    def __init__(self, model: LoraClassifier, params: Params, label_names: Sequence[str], metadata: dict):
        self.model = model
        self.params = params
        self.label_names = tuple(label_names)
        self.metadata = metadata

    def predict(self, texts: Sequence[str] | str, batch_size: int = 64) -> Prediction:
        if isinstance(texts, str):
            texts = [texts]
        probs = self.model.predict_proba(self.params, self.model.encode(list(texts)), batch_size).numpy()
        ids = probs.argmax(1)
        return Prediction([self.label_names[i] for i in ids], ids, probs)

    def evaluate(self, scenario: str | Scenario, split: str = "test", enc: Encoded | None = None) -> dict:
        from metalora.metrics import compute_metrics

        sc = get_scenario(scenario) if isinstance(scenario, str) else scenario
        ds = sc.load(split)
        enc = enc if enc is not None else self.model.encode(ds["text"])
        probs = self.model.predict_proba(self.params, enc).numpy()
        return compute_metrics(sc.card.metrics, ds["label"], probs, len(self.label_names))

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        return save_folder(path, self.model, self.params, self.metadata, overwrite=overwrite)


def build_classifier(backbone: BackboneConfig | str, lora: LoraSettings | None = None) -> LoraClassifier:
    return LoraClassifier(load_backbone(backbone), lora or LoraSettings())


def _resolve(spec: str | Path) -> tuple[Path, dict]:
    """A local folder as is; anything else is a Hub repo id (optionally hf://ORG/NAME@REV), pulled."""
    p = Path(spec)
    if p.is_dir():
        return p, {"path": str(p.resolve())}
    if os.path.sep in str(spec) and str(spec).startswith((".", "/")):
        raise DataError(f"folder {spec} does not exist")
    from metalora import hub

    repo_id, revision = hub.parse_spec(str(spec))
    folder = hub.pull(str(spec))
    # lineage names the exact commit, not a branch that may move
    return folder, hub.hub_origin(folder) or {"repo_id": repo_id, "revision": revision or "main"}


def _open_folder(spec: str | Path, backbone: BackboneConfig | str | None) -> tuple[Path, dict, dict, LoraClassifier, Params]:
    """Resolve, read metadata, check the backbone (before peft injects LoRA into it), load LoRA."""
    folder, lineage = _resolve(spec)
    meta = read_meta(folder)
    bb = load_backbone(_backbone_for(meta, backbone))
    check_backbone(folder, meta, bb)
    model = LoraClassifier(bb, lora_settings_from(folder))
    return folder, lineage, meta, model, load_params(folder, model)


def load_init(spec: str | Path, backbone: BackboneConfig | str | None = None) -> tuple[LoraClassifier, Init]:
    """A meta-init (or any adapter used as a starting point) and the classifier it fits."""
    from safetensors.torch import load_file

    from metalora.adapter_io import from_peft_key

    folder, lineage, meta, model, lora = _open_folder(spec, backbone)
    init = Init(lora=lora, lineage=lineage, meta=meta, feature_stats=load_feature_stats(folder))
    if (folder / INIT_FILE).is_file():
        extra = load_file(str(folder / INIT_FILE))
        init.head_bank = HeadBank.load(meta.get("head"), extra, where=str(folder))
        if SCALE_KEY in extra:
            init.logit_scale = extra[SCALE_KEY]
        init.head_prior = extra.get(PRIOR_KEY)
        lrs = {k.removeprefix("lr."): v for k, v in extra.items() if k.startswith("lr.")}  # bank.* tensors are the bank's
        if lrs:
            init.inner_lrs = {k if k in (*HEAD_KEYS, SCALE_KEY) else from_peft_key(k, model.lora_names): v
                              for k, v in lrs.items()}
    return model, init


def _backbone_for(meta: dict, backbone: BackboneConfig | str | None) -> BackboneConfig:
    saved = meta.get("backbone", {})
    if backbone is None:
        return BackboneConfig(name=saved.get("name") or saved.get("base_model"), revision=saved.get("revision"),
                              max_length=int(saved.get("max_length", 128)), pooling=saved.get("pooling", "auto"),
                              truncation=saved.get("truncation", "head"), head_tokens=int(saved.get("head_tokens", 32)),
                              scoring=saved.get("scoring", "pooled"), prompt=saved.get("prompt"))
    return BackboneConfig(name=backbone) if isinstance(backbone, str) else backbone


def load_adapter(spec: str | Path, backbone: BackboneConfig | str | None = None) -> AdaptedModel:
    folder, _, meta, model, params = _open_folder(spec, backbone)
    head = load_head(folder)
    if head is None:
        raise DataError(f"{folder} has no head (metalora_head.safetensors): it is a meta-init; adapt it to a scenario first")
    params.update(head)
    labels = meta.get("scenario", {}).get("label_names")
    if not labels:
        raise DataError(f"{folder}/metalora.json: scenario.label_names is missing")
    return AdaptedModel(model, params, labels, meta)


def init_metadata(spec: str | Path) -> dict:
    """An init's metalora.json (what it trained and validated on), without loading any model."""
    folder, _ = _resolve(spec)
    return read_meta(folder)


def init_adapt_defaults(spec: str | Path) -> dict:
    """The adaptation settings a meta-init recommends (its inner loop), as AdaptConfig fields."""
    if hasattr(spec, "defaults"):  # a metalora.library.LibraryStart: the chosen entry's settings
        return dict(spec.defaults)
    folder, _ = _resolve(spec)
    rec = read_meta(folder).get("adapt") or {}
    return {k: rec[k] for k in ("optimizer", "lr", "head_lr", "steps") if k in rec}


def scenario_meta(sc: Scenario) -> dict:
    card = sc.card.path
    try:
        card = card.relative_to(Path.cwd())
    except ValueError:
        pass
    return {"name": sc.name, "family": sc.family, "task_type": sc.task_type, "label_names": list(sc.label_names),
            "card": str(card)}


def adapt(
    scenario: str | Scenario,
    *,
    init: str | Path | None = None,  # also `library:PATH[/top1|/compose]`, or a metalora.library.LibraryStart
    config: AdaptConfig | None = None,
    shots: int | None = 5,
    support_split: str = "train",
    evaluate_split: str | None = "test",
    model: LoraClassifier | None = None,
    progress: bool = False,
) -> AdaptedModel:
    """Adapt to a scenario from `shots` examples per class (None = the whole split)."""
    cfg = config or AdaptConfig()
    sc = get_scenario(scenario) if isinstance(scenario, str) else scenario
    if isinstance(init, str) and init.startswith("library:"):  # select (or compose) on this support set first
        from metalora.library import Support, start_from

        ds = sc.load(support_split)
        if shots is not None:
            ds = sample_support(ds, shots, cfg.seed, sc.num_labels, where=f"scenario {sc.name} split {support_split}")
        init = start_from(init, Support.from_dataset(ds, sc.num_labels, sc.label_names), seed=cfg.seed)
        if config is None:
            cfg = AdaptConfig(**init.defaults)
    if hasattr(init, "model") and hasattr(init, "init"):  # a metalora.library.LibraryStart
        model, start = init.model, init.init
    elif init is not None:
        if config is None:
            cfg = AdaptConfig(**init_adapt_defaults(init))
        # the init brings its own backbone unless the caller chose one explicitly
        explicit = cfg.backbone if cfg.backbone != AdaptConfig().backbone else None
        model, start = load_init(init, explicit)
    else:
        model = model or LoraClassifier(load_backbone(cfg.backbone), cfg.lora)
        start = Init(lora=default_lora(model))
    ds = sc.load(support_split)
    if shots is not None:
        ds = sample_support(ds, shots, cfg.seed, sc.num_labels, where=f"scenario {sc.name} split {support_split}")
    check_support(ds, sc.num_labels, where=f"scenario {sc.name} split {support_split}")
    if evaluate_split is not None and evaluate_split not in sc.splits():
        raise DataError(f"scenario {sc.name} has no {evaluate_split!r} split to evaluate on (has {', '.join(sc.splits())})")
    texts, labels = list(ds["text"]), list(ds["label"])
    augmented = {}
    if cfg.augment.methods:
        from metalora.augment.text import TextAugmenter

        with Timer() as ta:
            text_aug = TextAugmenter(cfg.augment, model.backbone)
            texts, labels = text_aug(texts, labels, cfg.seed) if text_aug else (texts, labels)
        augmented = {"methods": list(cfg.augment.methods), "examples": len(texts), "text_seconds": round(ta.seconds, 3)}
    enc = model.encode(texts)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc=f"adapt {sc.name}", leave=False)
    with Timer() as t:
        head_info: dict = {}
        params = _adapt(model, enc, torch.tensor(labels), sc.num_labels, start, cfg, where=f"scenario {sc.name}",
                        label_names=sc.label_names, info=head_info,
                        on_step=(lambda step, _p: bar.update(1 if step else 0)) if bar else None,
                        label_words=scenario_words(model, sc))
    if bar:
        bar.close()
    meta = {
        "metalora_version": __version__,
        "kind": "adapter",
        "scenario": scenario_meta(sc),
        "support": {"split": support_split, "shots": shots, "examples": len(ds), "seed": cfg.seed},
        "adapt": {"steps": cfg.steps, "lr": cfg.lr, "head_lr": cfg.head_lr, "optimizer": cfg.optimizer, "seconds": round(t.seconds, 3),
                  "head": head_info, **({"augment": augmented} if augmented else {})},
        "lineage": {"init": start.lineage},
        "metrics": {},
    }
    adapted = AdaptedModel(model, params, sc.label_names, meta)
    if evaluate_split is not None:
        adapted.metadata["metrics"] = adapted.evaluate(sc, evaluate_split)
        adapted.metadata["metrics_split"] = evaluate_split
    return adapted


def default_lora(model: LoraClassifier) -> Params:
    """peft's own default LoRA init for this model (A random, B zero), fixed at construction."""
    return model.default_lora
