"""Composition: a weighted blend of library entries (LoraHub), or token-level routing (peft's Arrow).

LoraHub (Huang et al., "LoraHub: Efficient Cross-Task Generalization via Dynamic LoRA
Composition", 2023) blends the LoRA modules of several tasks with one weight each, found on the few
labelled examples by a gradient-free optimiser, because the weights are few and the objective (a
few-shot loss) is cheap to evaluate but not worth differentiating. Here:
- the ingredients are the best-ranked entries of the library of one LoRA shape, plus its meta-inits;
- the objective is the support set's leave-one-out prototype loss under the blended LoRA (one
  forward of the support set through the LoRA layers) plus LoraHub's L1 penalty on the weights;
- the optimiser is nevergrad's NGOpt over weights in [-1.5, 1.5] (LoraHub's bounds), started at the
  top-ranked entry alone, so the blend is never worse on the objective than that entry;
- the final merge is peft's own `add_weighted_adapter(combination_type="linear")`; the search
  evaluates the same formula functionally (A = sum sign(w) sqrt|w| A_i, B = sum sqrt|w| B_i, which
  for one entry at weight w is exactly w times its update), tested equal to peft's result.
The blend is an `Init` like any other: adapt from it, save it (its lineage lists ingredients and
weights), push it.

Arrow (Ostapenko et al., "Towards Modular LLMs by Building and Reusing a Library of LoRAs", 2024;
`peft.create_arrow_model`) routes every token to the top-k entries whose LoRA update aligns with it.
It needs no support-set search, but the routed model is not one LoRA: there is nothing to adapt or
save as an init, so `route` serves zero-step prediction (a prototype head on the support set).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from metalora.adapt import Init
from metalora.errors import ConfigError, DataError
from metalora.library.entries import Entry
from metalora.library.signals import features, loo_logits
from metalora.model import LoraClassifier, Params
from metalora.quiet import optimizer_calls

BOUND = 1.5  # LoraHub's weight bounds
L1 = 0.05  # LoraHub's L1 penalty on the weights


def merge_linear(loras: Sequence[Params], weights: Sequence[float]) -> Params:
    """peft's linear combination, in the ingredients' own scaling: A = sum sign(w_i) sqrt|w_i| A_i,
    B = sum sqrt|w_i| B_i (peft multiplies both by sqrt(alpha/r) and sets alpha = r; same update)."""
    out: Params = {}
    for k in loras[0]:
        side_a = ".lora_A." in k
        acc = torch.zeros_like(loras[0][k])
        for lora, w in zip(loras, weights):
            root = math.sqrt(abs(float(w)))
            acc = acc + (math.copysign(root, float(w)) if side_a else root) * lora[k]
        out[k] = acc
    return out


def merge_with_peft(model: LoraClassifier, loras: Sequence[Params], weights: Sequence[float]) -> Params:
    """The blend as peft's `add_weighted_adapter(..., combination_type="linear")` computes it, mapped
    back to the classifier's LoRA names and scaling."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from metalora.adapter_io import to_peft_key

    peft_model = copy.deepcopy(model.peft)
    names = []
    for i, lora in enumerate(loras):
        name = f"ingredient{i}"
        peft_model.add_adapter(name, copy.deepcopy(model.peft_config))
        set_peft_model_state_dict(peft_model, {to_peft_key(k): v for k, v in lora.items()}, adapter_name=name)
        names.append(name)
    peft_model.base_model.add_weighted_adapter(names, [float(w) for w in weights], "blend", combination_type="linear")
    merged = get_peft_model_state_dict(peft_model, adapter_name="blend", save_embedding_layers=False)  # no Hub look-up
    scaling = model.peft_config.lora_alpha / model.peft_config.r  # the blend's own scaling is 1 (alpha = r)
    table = {to_peft_key(n): n for n in model.lora_names}
    out = {table[k]: (v / math.sqrt(scaling)).detach().clone() for k, v in merged.items() if k in table}
    missing = set(model.lora_names) - set(out)
    if missing:  # pragma: no cover - a peft change in key naming
        raise DataError(f"peft's merged adapter lacks {len(missing)} LoRA weights (e.g. {sorted(missing)[0]})")
    return out


@dataclass
class Blend:
    """A LoraHub blend: ingredients, weights, and the `Init` it makes."""

    model: LoraClassifier
    init: Init
    entries: list[Entry]
    weights: list[float]
    objective: float  # support LOO loss + L1 at the chosen weights
    start_objective: float  # ... at the top entry alone
    seconds: float
    budget: int
    defaults: dict = field(default_factory=dict)  # adaptation settings (of the leading ingredient)
    notes: list[str] = field(default_factory=list)

    def lineage(self) -> dict:
        return {"blend": {
            "method": "lorahub (peft add_weighted_adapter, linear)", "optimizer": "nevergrad NGOpt", "budget": self.budget,
            "objective": "support leave-one-out prototype loss + 0.05 L1", "value": round(self.objective, 6),
            "ingredients": [{"name": e.name, "kind": e.kind, **{k: v for k, v in e.source.items() if k in ("repo_id", "revision")},
                             **({"path": Path(e.source["path"]).name} if e.source.get("path") else {}),
                             "weight": round(float(w), 6)} for e, w in zip(self.entries, self.weights)],
        }}

    def describe(self) -> str:
        parts = ", ".join(f"{e.name} {w:+.3f}" for e, w in zip(self.entries, self.weights))
        return f"blend of {len(self.entries)} entries ({parts}); support objective {self.start_objective:.4f} -> {self.objective:.4f}"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the blend as an init folder (plain peft LoRA + logit scale / prior), lineage in metalora.json."""
        from metalora import __version__
        from metalora.adapter_io import save_folder
        from metalora.model import PRIOR_KEY, SCALE_KEY

        extra = {SCALE_KEY: self.init.logit_scale}
        if self.init.head_prior is not None:
            extra[PRIOR_KEY] = self.init.head_prior
        meta = {"metalora_version": __version__, "kind": "meta-init",
                "meta": {"algorithm": "lorahub-blend", "suite": []},
                "adapt": self.defaults, "lineage": {"init": None, **self.lineage()}, "metrics": {}}
        return save_folder(path, self.model, self.init.lora, meta, overwrite=overwrite, init_tensors=extra)


def check_compatible(entries: Sequence[Entry]) -> None:
    """Entries can be blended only with one backbone and one LoRA shape; name the ones that differ."""
    if not entries:
        raise DataError("compose: no entries to blend")
    ref = entries[0]
    bad = []
    for e in entries[1:]:
        why = []
        if e.base_model != ref.base_model:
            why.append(f"backbone {e.base_model!r} vs {ref.base_model!r}")
        if e.lora.r != ref.lora.r:
            why.append(f"rank {e.lora.r} vs {ref.lora.r}")
        if e.lora.alpha != ref.lora.alpha:
            why.append(f"alpha {e.lora.alpha} vs {ref.lora.alpha}")
        if e.lora.target_modules != ref.lora.target_modules:
            why.append(f"target modules {list(e.lora.target_modules or [])} vs {list(ref.lora.target_modules or [])}")
        if e.lora.layers != ref.lora.layers:
            why.append(f"layers {list(e.lora.layers or [])} vs {list(ref.lora.layers or [])}")
        if why:
            bad.append(f"{e.name} differs from {ref.name} in {', '.join(why)}")
    if bad:
        raise DataError("compose: these entries cannot be blended into one LoRA: " + "; ".join(bad)
                        + " (blend entries of one backbone and one LoRA shape)")


def compose(library, support, k: int = 3, budget: int = 40, entries: Sequence[str] | None = None,
            weights: Sequence[float] | None = None, include_meta_inits: bool = True, seed: int = 0,
            ranking: Sequence[Entry] | None = None) -> Blend:
    """Blend the top `k` entries (or the named `entries`) with weights searched on the support set
    (or the given `weights`, no search) and merged by peft. `ranking` (every entry, best first, e.g. a
    `Selection`'s) replaces the zero-step ranking the top entries are otherwise taken from."""
    from metalora.library.select import _as_support, _Encodings, select

    t0 = time.perf_counter()
    library.check_not_empty()
    support = _as_support(support, library)
    notes: list[str] = []
    if entries:
        chosen = [library.entry(n) for n in entries]
        defaults = [e.name for e in chosen if e.kind == "default"]
        if defaults:
            raise DataError(f"compose: {defaults[0]} is peft's default init (B = 0, no update to blend); leave it out")
    else:
        if k < 1:
            raise ConfigError(f"compose k: must be >= 1, got {k}")
        order = list(ranking) if ranking is not None else [
            r.entry for r in select(library, support, k=len(library.entries), by="zero_step").ranking]
        learned = [e for e in order if e.kind != "default"]
        shape = learned[0].lora
        chosen = [e for e in learned if e.lora == shape][:k]
        if include_meta_inits:
            for e in learned:
                if e.kind == "meta-init" and e not in chosen:
                    if e.lora == shape:
                        chosen.append(e)
                    else:
                        notes.append(f"meta-init {e.name} not blended: its LoRA ({e.lora.describe()}) differs from the "
                                     f"top entry's ({shape.describe()})")
    check_compatible(chosen)
    if weights is not None and len(weights) != len(chosen):
        raise ConfigError(f"compose: {len(weights)} weights for {len(chosen)} entries")
    model, _ = library.init_for(chosen[0])
    inits = [library.init_for(e)[1] for e in chosen]
    loras = [model.lora_only(i.lora) for i in inits]
    enc = _Encodings(support.texts)(model)
    y = support.labels

    def lead(w) -> Init:
        return inits[int(np.argmax(np.abs(w)))]

    def objective(w) -> float:
        w = np.asarray(w, dtype=float)
        init = lead(w)
        with torch.no_grad():
            feats = features(model, merge_linear(loras, w), enc)
            logits = loo_logits(feats, y, support.num_labels, init.logit_scale.exp(), init.head_prior)
            loss = float(F.cross_entropy(logits, y.to(logits.device)))
        return loss + L1 * float(np.abs(w).sum())

    start = np.zeros(len(chosen))
    start[0] = 1.0
    start_obj = objective(start)
    if weights is not None:
        best = np.asarray(weights, dtype=float)
        used_budget = 0
    elif len(chosen) == 1:
        best, used_budget = start, 0
        notes.append("only one entry to blend: the blend is that entry")
    else:
        import nevergrad as ng

        param = ng.p.Array(init=start, lower=-BOUND, upper=BOUND)
        param.random_state = np.random.RandomState(seed)
        opt = ng.optimizers.NGOpt(parametrization=param, budget=budget, num_workers=1)
        with optimizer_calls():  # scipy's repaired-RHOEND line, from inside nevergrad (metalora.quiet)
            best = np.asarray(opt.minimize(objective).value, dtype=float)
        used_budget = budget
        if objective(best) > start_obj:
            notes.append(f"the search found no blend better than {chosen[0].name} alone; kept it")
            best = start
    obj = objective(best)
    merged = merge_with_peft(model, loras, best)
    top = lead(best)
    init = Init(lora=merged, logit_scale=top.logit_scale.clone(), head_prior=top.head_prior, inner_lrs=top.inner_lrs)
    blend = Blend(model, init, list(chosen), [float(w) for w in best], obj, start_obj, 0.0, used_budget,
                  library.adapt_defaults(chosen[int(np.argmax(np.abs(best)))]), notes)
    blend.init.lineage = blend.lineage()
    blend.seconds = time.perf_counter() - t0
    return blend


# -- Arrow routing ------------------------------------------------------------------------------
class ArrowRouter:
    """peft's Arrow over library entries, with a prototype head built on the support set (zero-step)."""

    def __init__(self, library, entries: Sequence[Entry], support, top_k: int = 2, temperature: float = 1.0):
        from peft import ArrowConfig, create_arrow_model

        from metalora.library.select import _as_support

        support = _as_support(support, library)
        entries = [e for e in entries if e.kind != "default"]
        if len(entries) < 2:
            raise DataError("route (Arrow): needs at least two adapters to route between")
        check_compatible(entries)
        local = [e for e in entries if e.folder is None]
        if local:
            raise DataError(f"route (Arrow): entry {local[0].name} has no folder")
        self.library, self.entries = library, list(entries)
        backbone = library._backbone()
        self.backbone = backbone
        cfg = ArrowConfig(top_k=min(top_k, len(entries)), router_temperature=temperature, rng_seed=0)
        try:
            if entries[0].lora.layers is None:
                self.model = create_arrow_model(backbone.model, [str(e.folder) for e in entries], cfg).eval()
            else:
                self.model = _arrow_on_layers(backbone, entries, cfg).eval()
        except ValueError as exc:
            raise DataError(f"route (Arrow) does not apply to {', '.join(e.name for e in entries)}: {exc}") from None
        feats = self.features(support.texts)
        from metalora.model import prototype_head

        self.weight, self.bias = prototype_head(feats, support.labels, support.num_labels)
        self.scale = library.init_for(entries[0])[1].logit_scale.exp()

    @torch.no_grad()
    def features(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        from metalora.model import pool

        tok = self.backbone.tokenizer
        out = []
        for i in range(0, len(texts), batch_size):
            b = tok(list(texts[i:i + batch_size]), padding=True, truncation=True,
                    max_length=self.backbone.config.max_length, return_tensors="pt")
            h = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            out.append(F.normalize(pool(h, b["attention_mask"], self.backbone.pooling), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        logits = self.scale * (self.features(texts) @ self.weight.T + self.bias)
        return torch.softmax(logits, dim=-1)


def _arrow_on_layers(backbone, entries: Sequence[Entry], cfg):
    """`peft.create_arrow_model` step by step, with the router on the adapters' own layers: peft's
    helper puts the router on every layer of the target modules, and a layer without task adapters
    then has nothing to route to (LoRA on the top layers only, as metalora trains it)."""
    from peft import LoraConfig, PeftModel
    from peft.tuners.lora.arrow import check_loaded_lora_compatibility_arrow, ensure_adapters_target_linear_layers_only

    names = [f"task_{i}" for i in range(len(entries))]
    model = PeftModel.from_pretrained(backbone.model, str(entries[0].folder), adapter_name=names[0])
    for name, e in zip(names[1:], entries[1:]):
        model.load_adapter(str(e.folder), adapter_name=name)
    cfg.task_adapter_names, cfg.gks_adapter_names = names, []
    targets, r = check_loaded_lora_compatibility_arrow(model, adapter_names=names)
    ensure_adapters_target_linear_layers_only(model, adapter_names=names)
    layers_pattern = backbone.layers_path.split(".")[-1] if backbone.layers_path else None
    model.add_adapter("arrow_router", LoraConfig(arrow_config=cfg, target_modules=targets, r=r,
                                                 layers_to_transform=list(entries[0].lora.layers), layers_pattern=layers_pattern))
    model.set_adapter("arrow_router")
    return model


def route(library, support, k: int = 3, top_k: int = 2) -> ArrowRouter:
    """Arrow routing over the top `k` adapters (zero-step ranking) of the support set's best LoRA shape."""
    from metalora.library.select import select

    ranking = select(library, support, k=len(library.entries), by="zero_step").ranking
    learned = [r.entry for r in ranking if r.entry.kind != "default"]
    shape = learned[0].lora
    return ArrowRouter(library, [e for e in learned if e.lora == shape][:k], support, top_k=top_k)
