"""The Python API other repos import: adapt a scenario, load an adapter, predict, evaluate.

    import metalora
    model = metalora.adapt("synthetic/sentiment/kitchen", shots=5)      # or init="path/or/org/meta-init"
    model.predict(["the lid cracked in a week"]).labels
    model.save("adapters/kitchen")
    same = metalora.load_adapter("adapters/kitchen")
    many = metalora.api.load_adapters(["adapters/kitchen", "org/garden-topics"])   # one backbone, mixed batches
    many.predict(["the lid cracked", "needs full sun"], scenario=["kitchen", "garden"]).labels
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metalora import __version__
from metalora.adapt import Init, Timer, adapt as _adapt
from metalora.adapter_io import HEAD_FILE, AdapterFolder, from_peft_key, save_folder
from metalora.augment.calibration import load_feature_stats
from metalora.backbones import load_backbone
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.errors import DataError
from metalora.heads import HeadBank
from metalora.label_words import scenario_words
from metalora.model import HEAD_KEYS, PRIOR_KEY, SCALE_KEY, Encoded, LoraClassifier, Params
from metalora.scenarios import Scenario, check_support, get_scenario, sample_support
from metalora.serving import MultiAdapterModel, check_texts


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
        texts = check_texts(texts)
        # shortest first, so each batch pads to texts of about its own length (the order changes no result)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        sorted_probs = self.model.predict_proba(self.params, self.model.encode([texts[i] for i in order]), batch_size).numpy()
        probs = np.empty_like(sorted_probs)
        probs[order] = sorted_probs
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


def _classifier(folder: AdapterFolder, backbone: BackboneConfig | str | None) -> LoraClassifier:
    """The folder's backbone (or `backbone`), checked before peft injects LoRA into it, with the folder's LoRA settings."""
    bb = load_backbone(folder.backbone_config(backbone))
    folder.check_backbone(bb)
    return LoraClassifier(bb, folder.lora)


def load_init(spec: str | Path | AdapterFolder, backbone: BackboneConfig | str | None = None) -> tuple[LoraClassifier, Init]:
    """A meta-init (or any adapter used as a starting point) and the classifier it fits."""
    folder = AdapterFolder.open(spec)
    model = _classifier(folder, backbone)
    return model, init_from_folder(folder, model)


def init_from_folder(folder: AdapterFolder, model: LoraClassifier, lineage: dict | None = None,
                     meta: dict | None = None) -> Init:
    """Everything a folder carries for adaptation: LoRA, logit scale, class prior, Meta-SGD rates, head bank and
    augment's feature statistics. One place, so the library's entries start exactly as `load_init` would."""
    init = Init(lora=folder.lora_params(model), lineage=lineage or folder.origin, meta=folder.meta if meta is None else meta,
                feature_stats=load_feature_stats(folder.path))  # augment's statistics file, read by its owner
    extra = folder.init_tensors
    init.head_bank = HeadBank.load(folder.meta.get("head"), extra, where=str(folder.path))
    if SCALE_KEY in extra:
        init.logit_scale = extra[SCALE_KEY]
    init.head_prior = extra.get(PRIOR_KEY)
    lrs = {k.removeprefix("lr."): v for k, v in extra.items() if k.startswith("lr.")}  # bank.* tensors are the bank's
    if lrs:
        init.inner_lrs = {k if k in (*HEAD_KEYS, SCALE_KEY) else from_peft_key(k, model.lora_names): v
                          for k, v in lrs.items()}
    return init


def load_adapter(spec: str | Path | AdapterFolder, backbone: BackboneConfig | str | None = None) -> AdaptedModel:
    """An adapted scenario (local folder or Hub id) ready to predict; see `load_adapters` for several on one backbone."""
    folder = AdapterFolder.open(spec)
    if folder.head is None:
        raise DataError(f"{folder.path} has no head ({HEAD_FILE}): it is a meta-init; adapt it to a scenario first")
    labels = folder.label_names
    model = _classifier(folder, backbone)
    params = {**folder.lora_params(model), **folder.head}
    return AdaptedModel(model, params, labels, folder.meta)


def load_adapters(specs, backbone: BackboneConfig | str | None = None) -> MultiAdapterModel:
    """Several adapters (folders or Hub ids) on ONE backbone in memory, predicting mixed batches.

    `specs` is a list (each adapter serves the scenario named in its metalora.json) or a dict
    {name: spec}. Adapters for another backbone are refused here, naming them. Then
    `model.predict(texts, scenario=[...])` labels each text with its own scenario's adapter, a mixed
    batch in one forward pass. See `metalora.serving`.
    """
    return MultiAdapterModel.load(specs, backbone)


def init_metadata(spec: str | Path | AdapterFolder) -> dict:
    """An init's metalora.json (what it trained and validated on), without loading any model.
    (Pass the `AdapterFolder` on to `load_init` to avoid reading or pulling it twice.)"""
    return AdapterFolder.open(spec).meta


def init_adapt_defaults(spec: str | Path | AdapterFolder, family: str | None = None) -> dict:
    """The adaptation settings a meta-init recommends (its inner loop), as AdaptConfig fields; for a scenario of
    `family`, that family's budget where the init chose one per family."""
    if hasattr(spec, "defaults"):  # a metalora.library.LibraryStart: the chosen entry's settings
        return dict(spec.defaults)
    return AdapterFolder.open(spec).adapt_defaults(family)


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
    init: str | Path | AdapterFolder | None = None,  # also `library:PATH[/top1|/compose]`, or a metalora.library.LibraryStart
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
        init = AdapterFolder.open(init)  # read (or pulled) once; the record travels on
        if config is None:
            cfg = AdaptConfig(**init.adapt_defaults(sc.family))
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
    fallback = None
    if cfg.fallback == "auto" and init is not None:  # a trained start: is it worse than the plain backbone here?
        from metalora.fallback import check, fallback_config

        fallback = check(model, start.lora, enc, torch.tensor(labels), sc.num_labels, cfg.fallback_margin)
        if fallback.fell_back:  # lineage then says peft's default init; the rejected init is named under adapt.fallback
            rejected, start = start.lineage, Init(lora=default_lora(model))
            cfg = fallback_config(cfg)
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
                  "head": head_info, **({"augment": augmented} if augmented else {}),
                  **({"fallback": {**fallback.to_dict(), **({"rejected_init": rejected} if fallback.fell_back else {})}}
                     if fallback is not None else {})},
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
