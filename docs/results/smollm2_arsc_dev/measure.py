"""SmolLM2 on ARSC-dev, a reduced protocol that fits a shared 2-core CPU: every target task, its test file
subsampled to --test-cap examples (fixed seed 0), support sets of 5 per class from the .dev file with seeds
--seeds, methods `zero-shot` (label words, no adaptation), `vanilla` (peft's init, AdamW) and `meta` (--init,
its recommended adaptation). Adaptation seconds and peak memory per run. Writes report.json / report.md.

    python docs/results/smollm2_arsc_dev/measure.py --out /work/runs/gpt/arsc --methods zero-shot,vanilla
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from metalora.adapt import Init
from metalora.api import load_init
from metalora.backbones import load_backbone
from metalora.bench.methods import meta_adapt_config, run_lora
from metalora.config import AdaptConfig, MetaTrainConfig, load_config
from metalora.label_words import scenario_words
from metalora.model import LoraClassifier
from metalora.scenarios import get_scenario, sample_support

ROOT = Path(__file__).resolve().parents[3]
TARGETS = ("music", "camera_photo", "health_personal_care", "toys_games")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", default="zero-shot,vanilla")
    ap.add_argument("--config", default=str(ROOT / "recipes/configs/smollm2_fomaml_arsc_dev.yaml"))
    ap.add_argument("--init", help="meta-init folder (method meta)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--test-cap", type=int, default=50)
    ap.add_argument("--vanilla-steps", type=int, default=10)
    ap.add_argument("--vanilla-lr", type=float, default=1e-3)
    args = ap.parse_args()
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = load_config(MetaTrainConfig, args.config)
    base_model = LoraClassifier(load_backbone(cfg.backbone), cfg.lora)
    setups = {}
    if "zero-shot" in methods:
        setups["zero-shot"] = (base_model, Init(lora=base_model.default_lora), AdaptConfig(backbone=cfg.backbone, steps=0))
    if "vanilla" in methods:
        setups["vanilla"] = (base_model, Init(lora=base_model.default_lora),
                             AdaptConfig(backbone=cfg.backbone, steps=args.vanilla_steps, lr=args.vanilla_lr))
    if "meta" in methods:
        model, init = load_init(args.init)
        setups["meta"] = (model, init, meta_adapt_config(AdaptConfig(backbone=model.backbone.config), init, None))
    rows: dict = {m: {} for m in setups}
    t_all = time.perf_counter()
    for domain in TARGETS:
        for thr in ("t2", "t4", "t5"):
            sc = get_scenario(f"arsc/{domain}.{thr}")
            test = sc.load("test")
            rng = np.random.default_rng(0)
            pick = sorted(rng.choice(len(test), size=min(args.test_cap, len(test)), replace=False).tolist())
            test = test.select(pick)
            dev = sc.load("dev")
            encs = {}
            for m, (model, init, acfg) in setups.items():
                key = id(model)
                if key not in encs:
                    encs[key] = model.encode(test["text"])
                words = scenario_words(model, sc)
                for seed in (seeds[:1] if acfg.steps == 0 else seeds):  # 0 steps: the support set changes nothing
                    sup = sample_support(dev, 5, seed, sc.num_labels, where=sc.name)
                    res = run_lora(model, init, replace(acfg, seed=seed), model.encode(sup["text"]), sup["label"], sc.num_labels,
                                   encs[key], test["label"], where=f"{sc.name} seed {seed} ({m})", label_words=words)
                    rows[m].setdefault(sc.name, []).append({"seed": seed, **res.row()})
                    print(m, sc.name, seed, {k: round(v, 3) for k, v in res.row().items()}, flush=True)
    report = {"protocol": f"ARSC-dev, 12 tasks, test capped at {args.test_cap} per task (seed 0), 5 shots from .dev",
              "seeds": seeds, "config": args.config, "init": args.init, "seconds_total": time.perf_counter() - t_all,
              "threads": torch.get_num_threads(), "methods": {}}
    for m, tasks in rows.items():
        runs = [r for rs in tasks.values() for r in rs]
        acc = [r["accuracy"] for r in runs]
        report["methods"][m] = {
            "adapt": {k: getattr(setups[m][2], k) for k in ("optimizer", "steps", "lr", "head_lr")},
            "accuracy_mean": statistics.mean(acc), "accuracy_worst": min(acc),
            "accuracy_task_mean_spread": statistics.pstdev([statistics.mean(r["accuracy"] for r in rs) for rs in tasks.values()]),
            "macro_f1_mean": statistics.mean(r["macro_f1"] for r in runs),
            "adapt_seconds_mean": statistics.mean(r["seconds"] for r in runs), "adapt_seconds_worst": max(r["seconds"] for r in runs),
            "peak_mb_max": max(r["peak_mb"] for r in runs), "tasks": tasks}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    lines = ["| method | accuracy (mean) | worst run | macro-F1 | adapt s (mean / worst) | peak MB |", "|---|---|---|---|---|---|"]
    for m, r in report["methods"].items():
        lines.append(f"| {m} | {r['accuracy_mean']:.3f} | {r['accuracy_worst']:.3f} | {r['macro_f1_mean']:.3f} | "
                     f"{r['adapt_seconds_mean']:.1f} / {r['adapt_seconds_worst']:.1f} | {r['peak_mb_max']:.0f} |")
    (out / "report.md").write_text(report["protocol"] + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
