"""`select` and `compose` as methods of the comparison bench (`bench arsc|suite|synthetic --methods ...`).

The bench builds the library the way a team accumulates one: every training scenario adapted once
(from the meta-init when the run has one, else from peft's default init) on `library_shots`
examples per class of its train split, saved with its data signature, plus the meta-init itself.
The learned selector is then fitted across the same training scenarios (an adapter is never scored
on its own scenario). Library and selector are cached in `--library DIR` and reused by later runs
with the same training scenarios and meta-init.

Same adaptation budget: the chosen entry is adapted the way its kind is adapted in the bench: peft's
default init with vanilla's settings, a meta-init or a library adapter (a meta-init refined on one
scenario) with the meta-init's validated settings; a blend with those of its leading ingredient.
The reported seconds of `select` / `compose` include the selection (or the blend's search).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metalora.adapt import Init, Timer, adapt
from metalora.config import AdaptConfig
from metalora.errors import ConfigError

LIBRARY_METHODS = ("select", "compose")
BUILD_FILE = "library_build.json"


@dataclass
class LibraryMethods:
    library: object
    plain: AdaptConfig  # vanilla's adaptation settings in this run
    meta: AdaptConfig | None  # the meta-init's validated settings in this run
    build: dict
    stats: dict = field(default_factory=lambda: {m: {"seconds": [], "chosen": {}, "decided_by": {}} for m in LIBRARY_METHODS})
    _test_enc: dict = field(default_factory=dict)

    def budget(self, kind: str, defaults: dict) -> AdaptConfig:
        if kind == "default" or self.meta is None:
            return replace(self.plain, **{k: v for k, v in defaults.items() if kind != "default"})
        return self.meta

    def run(self, method: str, support, num_labels: int, label_names, test_texts, test_y, seed: int, where: str):
        """One run of `select` or `compose` on one support draw; returns (RunResult, extra row fields)."""
        from metalora.bench.methods import METRICS, RunResult, scores
        from metalora.library import Support

        sup = Support(list(support["text"]), torch.tensor(list(support["label"])), num_labels, tuple(label_names))
        with Timer() as timer:
            if method == "select":
                sel = self.library.select(sup, k=3, seed=seed)
                entry = sel.best.entry
                model, init = self.library.init_for(entry)
                kind, info = entry.kind, {"chosen": entry.name, "decided_by": sel.decided_by, "select_seconds": sel.seconds}
                cfg = self.budget(kind, self.library.adapt_defaults(entry))
            else:
                blend = self.library.compose(sup, seed=seed)
                model, init = blend.model, blend.init
                lead = blend.entries[int(np.argmax(np.abs(blend.weights)))]
                info = {"chosen": "+".join(f"{e.name}:{w:.2f}" for e, w in zip(blend.entries, blend.weights)),
                        "decided_by": "lorahub", "select_seconds": blend.seconds}
                cfg = self.budget(lead.kind, blend.defaults)
            enc = model.encode(sup.texts)
            params = adapt(model, enc, sup.labels, num_labels, init, replace(cfg, seed=seed), where=where)
        key = (where.split(" seed ")[0], model.cut)  # one task's test set, through one prefix: encoded once
        if key not in self._test_enc:
            self._test_enc = {k: v for k, v in self._test_enc.items() if k[0] == key[0]}  # keep the current task only
            self._test_enc[key] = model.encode(list(test_texts))
        probs = model.predict_proba(params, self._test_enc[key], cfg.eval_batch_size).numpy()
        st = self.stats[method]
        st["seconds"].append(info["select_seconds"])
        key = info["chosen"] if method == "select" else "blend"
        st["chosen"][key] = st["chosen"].get(key, 0) + 1
        st["decided_by"][info["decided_by"]] = st["decided_by"].get(info["decided_by"], 0) + 1
        res = RunResult(scores(METRICS, np.asarray(test_y), probs, num_labels), timer.seconds, timer.peak_mb)
        return res, info

    def report(self, method: str) -> dict:
        st = self.stats[method]
        secs = np.asarray(st["seconds"] or [0.0])
        return {"library_size": len(self.library.entries), "adapters": sum(e.kind == "adapter" for e in self.library.entries),
                "meta_inits": sum(e.kind == "meta-init" for e in self.library.entries),
                "selection_seconds": {"mean": float(secs.mean()), "max": float(secs.max())},
                "selection_seconds_per_entry": float(secs.mean() / max(len(self.library.entries), 1)),
                "decided_by": st["decided_by"], "chosen": dict(sorted(st["chosen"].items(), key=lambda kv: -kv[1])[:10]),
                "selector": bool(self.library.selector), "build": self.build}

    def describe(self, method: str) -> dict:
        return {"rule": "learned selector" if self.library.selector is not None and method == "select" else
                "zero-step LOO prototype loss" if method == "select" else "LoraHub blend (nevergrad NGOpt, peft linear merge)",
                "budget": "the chosen entry's kind: vanilla's settings for peft-default, the meta-init's for meta-inits and "
                          "library adapters"}


def prepare(training, opts, meta_dir: str | None, meta_cfg: AdaptConfig | None, plain: AdaptConfig, notes: list[str]) -> LibraryMethods:
    """Build (or reuse) the bench's library and selector, before any target is touched."""
    from metalora.library import AdapterLibrary
    from metalora.meta.episodes import select_scenarios

    folder = Path(opts.library or Path(opts.out) / "library")
    folder.mkdir(parents=True, exist_ok=True)
    names = list(training.describe.get("scenarios") or [])
    if not names:
        raise ConfigError("--methods select/compose: the library is built from the training scenarios, and this run has none "
                          "(give --train, or --meta-config scenarios)")
    scenarios = select_scenarios(names, (), False, "library scenarios", training.cards_dir)
    want = {"scenarios": sorted(names), "meta_init": str(Path(meta_dir).resolve()) if meta_dir else None,
            "shots": opts.library_shots, "backbone": plain.backbone.name}
    build_file = folder / BUILD_FILE
    have = json.loads(build_file.read_text()) if build_file.is_file() else None
    t0 = time.perf_counter()
    if have != want:
        if have is not None:
            notes.append(f"library {folder}: built for other training scenarios or another meta-init; rebuilt")
        _build(folder, scenarios, meta_dir, opts.library_shots, plain)
        build_file.write_text(json.dumps(want, indent=1))
        (folder / "library_selector.json").unlink(missing_ok=True)
    lib = AdapterLibrary(folder, backbone=plain.backbone)
    build_seconds = time.perf_counter() - t0
    if lib.selector is None:
        t1 = time.perf_counter()
        split = next((q for q in ("test", "dev") if all(q in s.splits() for s in scenarios)), "train")
        lib.fit_selector(scenarios, shots=opts.shots, seeds=(0,), query_split=split, candidates=opts.selector_candidates,
                         progress=opts.progress)
        notes.append(f"learned selector fitted on {len(scenarios)} training scenarios in {time.perf_counter() - t1:.0f}s")
    return LibraryMethods(lib, plain, meta_cfg, {**want, "folder": str(folder), "seconds": round(build_seconds, 1)})


def _build(folder: Path, scenarios: Sequence, meta_dir: str | None, shots: int, plain: AdaptConfig) -> None:
    """One adapter per training scenario, adapted on `shots` per class of its train split."""
    import shutil

    from tqdm.auto import tqdm

    from metalora.api import AdaptedModel, load_init, scenario_meta
    from metalora.library.entries import signature_of, write_signature
    from metalora.library.signals import features
    from metalora.scenarios import sample_support

    for sub in folder.iterdir():
        if sub.is_dir():
            shutil.rmtree(sub)
    if meta_dir:
        model, start = load_init(meta_dir)
        shutil.copytree(meta_dir, folder / "meta-init")
        rec = (start.meta or {}).get("adapt") or {}
    else:
        from metalora.backbones import load_backbone
        from metalora.config import MetaTrainConfig
        from metalora.model import LoraClassifier

        model = LoraClassifier(load_backbone(plain.backbone), MetaTrainConfig().lora)
        start, rec = Init(lora=model.default_lora), {}
    cfg = replace(AdaptConfig(backbone=plain.backbone), steps=30, lr=1e-3)  # AdaptConfig's ordinary fine-tuning
    for sc in tqdm(scenarios, desc="build library"):
        pool = sc.load("train")
        counts = np.bincount(np.asarray(pool["label"]), minlength=sc.num_labels)
        k = int(min(shots, counts.min()))
        if k < 1:
            continue
        ds = sample_support(pool, k, 0, sc.num_labels, where=f"{sc.name} (train)")
        enc = model.encode(ds["text"])
        with Timer() as t:
            params = adapt(model, enc, torch.tensor(ds["label"]), sc.num_labels, start, cfg, where=sc.name)
        meta = {"kind": "adapter", "scenario": scenario_meta(sc), "support": {"split": "train", "shots": k, "seed": 0},
                # as an init it is a meta-init refined on one scenario: adapted like the meta-init
                "adapt": {k2: rec[k2] for k2 in ("optimizer", "lr", "head_lr", "steps") if k2 in rec},
                "library_training": {"steps": cfg.steps, "lr": cfg.lr, "optimizer": cfg.optimizer, "seconds": round(t.seconds, 3),
                                     "from": "meta-init" if meta_dir else "peft default"},
                "lineage": {"init": start.lineage}, "metrics": {}}
        name = sc.name.replace("/", "__")
        path = AdaptedModel(model, params, sc.label_names, meta).save(folder / name, overwrite=True)
        with torch.no_grad():
            write_signature(path, signature_of(features(model, model.default_lora, enc)))
