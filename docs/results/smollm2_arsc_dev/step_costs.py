"""Seconds per example of a plain peft training step (the whole stack) vs a first-order meta-step (FOMAML,
the recipe's inner steps; from the prefix cache where the model has one, states computed at sampling, outside
the timer, as in `bench speed`) on the same ARSC episodes, SmolLM2 with the ARSC-dev recipe's settings (label words, LoRA on
the top 2 layers); and one 5-shot adaptation (vanilla, --adapt-steps AdamW steps) with its peak memory.

    OMP_NUM_THREADS=1 python docs/results/smollm2_arsc_dev/step_costs.py --repeats 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metalora.adapt import Init, Timer, adapt
from metalora.config import AdaptConfig, MetaTrainConfig, load_config
from metalora.label_words import scenario_words
from metalora.meta.trainer import MetaTrainer
from metalora.model import Encoded
from metalora.scenarios import get_scenario, sample_support

ROOT = Path(__file__).resolve().parents[3]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "recipes/configs/smollm2_fomaml_arsc_dev.yaml"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--adapt-steps", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(MetaTrainConfig, args.config, ["log_with=none", "output_dir=/tmp/metalora-step-costs", *args.overrides])
    trainer = MetaTrainer(cfg)
    model = trainer.model
    eps = [trainer.sampler.episode(0, i) for i in range(args.repeats + 1)]
    cached = eps[0].support.hidden is not None  # the meta-step reads the prefix cache where the model has one

    def fo(ep):
        res = trainer.episode_grads(ep)
        for name, t in zip(trainer.names, trainer.tensors):
            t.grad = res.grads[name].detach()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    lora = {k: v.detach().clone().requires_grad_(True) for k, v in model.default_lora.items()}
    opt = torch.optim.AdamW(list(lora.values()), lr=1e-4)

    def plain(ep):  # ordinary peft training on the same examples: one forward + backward of support and query,
        head = trainer._episode_words(ep) if trainer.words is not None else None  # through the whole stack (no cache)
        loss = 0.0
        for enc, y in ((Encoded(ep.support.ids, ep.support.mask), ep.support_labels), (Encoded(ep.query.ids, ep.query.mask), ep.query_labels)):
            params = {**lora, **head} if head is not None else lora
            logits = model.logits(params, enc) if head is not None else model.features(lora, enc)[:, :2]
            loss = loss + F.cross_entropy(logits, y, reduction="sum")
        (loss / (len(ep.support) + len(ep.query))).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out = {}
    for name, fn in (("plain_peft", plain), ("meta_first_order", fo)):
        fn(eps[0])  # warm-up
        times = []
        for ep in eps[1:]:
            t0 = time.perf_counter()
            fn(ep)
            times.append(time.perf_counter() - t0)
        n = statistics.mean(len(e.support) + len(e.query) for e in eps[1:])
        out[name] = {"seconds_per_step_median": statistics.median(times), "worst": max(times),
                     "examples_per_s": n / statistics.median(times), "examples_per_step": n}
    out["ratio_fo_vs_plain"] = out["meta_first_order"]["seconds_per_step_median"] / out["plain_peft"]["seconds_per_step_median"]
    sc = get_scenario("arsc/music.t4")
    sup = sample_support(sc.load("dev"), 5, 0, 2, where=sc.name)
    acfg = AdaptConfig(backbone=cfg.backbone, steps=args.adapt_steps, lr=1e-3)
    with Timer() as t:
        enc = model.encode(sup["text"])
        adapt(model, enc, torch.tensor(sup["label"]), 2, Init(lora=model.default_lora), acfg, label_words=scenario_words(model, sc))
    out["adaptation"] = {"task": sc.name, "shots": 5, "steps": args.adapt_steps, "seconds": t.seconds, "peak_rss_mb": t.peak_mb}
    out["threads"] = torch.get_num_threads()
    out["meta_step_uses_prefix_cache"] = cached
    out["config"] = {"scoring": cfg.backbone.scoring, "max_length": cfg.backbone.max_length, "top_layers": cfg.lora.top_layers,
                     "inner_steps": cfg.inner_steps, "k_shot": cfg.episodes.k_shot, "query_size": cfg.episodes.query_size}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
