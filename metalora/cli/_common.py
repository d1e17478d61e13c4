"""Flags shared by several subcommands, and the one way they become an `AdaptConfig`."""
from __future__ import annotations

import argparse
import json

from metalora.config import AdaptConfig, load_config


def add_adapt_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adaptation")
    g.add_argument("--config", help="YAML file of AdaptConfig fields (see recipes/configs/); flags below override it.")
    g.add_argument("--backbone", help="Backbone short name (minilm, smollm2, tiny-bert, ...), Hub id or local folder. Default: minilm, or the init's own backbone with --init.")
    g.add_argument("--steps", type=int, help="Gradient steps on the support set (default 30).")
    g.add_argument("--lr", type=float, help="Learning rate of the LoRA weights (default 1e-3).")
    g.add_argument("--seed", type=int, help="Seed for support sampling and training (default 0).")
    g.add_argument("--augment", help="Support-set augmentations, comma-separated: dropout, swap, neighbours, paraphrase, calibrate, "
                   "mixup, or the groups support (= dropout,swap,neighbours) and feature (= calibrate); `none` for none. "
                   "Settings under augment.* (e.g. --set augment.copies=4).")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override any config field, e.g. --set lora.r=4 --set head_lr=0.05 (repeatable).")


def adapt_config(args: argparse.Namespace, base: dict | None = None) -> AdaptConfig:
    overrides = list(args.overrides)
    for flag in ("steps", "lr", "seed"):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{flag}={getattr(args, flag)}")
    if getattr(args, "augment", None):
        overrides.append(f"augment.methods=[{args.augment}]")
    if getattr(args, "backbone", None):
        overrides.append(f"backbone.name={args.backbone}")
    return load_config(AdaptConfig, args.config, overrides, base=base)


def print_metrics(metrics: dict, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    for k, v in metrics.items():
        print(f"  {k:>10}: {v:.4f}" if isinstance(v, float) else f"  {k:>10}: {v}")
