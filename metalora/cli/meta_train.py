"""`metalora meta-train`: learn a LoRA initialization across a suite of scenarios."""
from __future__ import annotations

import argparse

from metalora.cli._common import add_key_values, overrides


def register(sub) -> None:
    p = sub.add_parser("meta-train", help="Meta-train a LoRA init (MAML, FOMAML, Reptile, Meta-SGD) or the multi-task baseline.",
                       description="Run the meta-training outer loop on Accelerate (one process here; several under `accelerate launch`). "
                                   "Writes checkpoints, tensorboard logs and the meta-init (a peft adapter folder) under output_dir; "
                                   "a killed run resumes from its last checkpoint.")
    p.add_argument("--config", help="YAML file of MetaTrainConfig fields, e.g. recipes/configs/minilm_fomaml_synthetic.yaml.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a config field, e.g. --set steps=10 --set lora.r=4 (repeatable; plain steps=10 works too).")
    add_key_values(p)
    p.add_argument("--no-resume", action="store_true", help="Ignore existing checkpoints in output_dir and start over.")
    p.add_argument("--cpu", action="store_true", help="Force the CPU even where a GPU is present.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metalora.config import MetaTrainConfig, load_config
    from metalora.meta.trainer import MetaTrainer, make_accelerator

    cfg = load_config(MetaTrainConfig, args.config, overrides(args))
    result = MetaTrainer(cfg, accelerator=make_accelerator(cfg, cpu=args.cpu)).train(resume=not args.no_resume)
    if result.seconds > 0:
        print(f"meta-trained {result.steps} steps in {result.seconds:.1f}s "
              f"({result.episodes / result.seconds:.2f} episodes/s, {result.examples / result.seconds:.1f} examples/s on this process)")
    best = f", best validation accuracy {result.best_val:.4f}" if result.best_val is not None else ""
    print(f"meta-init -> {result.init_dir}{best}")
    return 0
