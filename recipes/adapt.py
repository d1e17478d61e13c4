"""Adapt a meta-init (or peft's default LoRA init) to one scenario and save the adapter.

    accelerate launch --config_file accelerate_config.yaml recipes/adapt.py \
        --config recipes/configs/minilm_adapt.yaml --scenario synthetic/sentiment/beauty \
        --init runs/minilm_fomaml_synthetic/meta-init --out adapters/beauty [key=value ...]

Adaptation of one scenario is a single-process job: on several processes only the main one works.
"""
from __future__ import annotations

import argparse

from accelerate import PartialState

from metalora.api import adapt
from metalora.config import AdaptConfig, load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of AdaptConfig fields (recipes/configs/).")
    parser.add_argument("--scenario", required=True, help="Scenario name or card path.")
    parser.add_argument("--init", help="Meta-init folder or Hub id; default: peft's LoRA init.")
    parser.add_argument("--shots", type=int, default=5, help="Support examples per class.")
    parser.add_argument("--out", required=True, help="Adapter folder to write.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing adapter folder.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Config overrides, e.g. steps=10.")
    args = parser.parse_args(argv)

    state = PartialState()
    if not state.is_main_process:
        return
    cfg = load_config(AdaptConfig, args.config, args.overrides)
    from metalora.adapter_io import check_target

    check_target(args.out, args.overwrite)
    model = adapt(args.scenario, init=args.init, config=cfg if (args.config or args.overrides) else None, shots=args.shots)
    model.save(args.out, overwrite=args.overwrite)
    print(f"{args.scenario}: {model.metadata['metrics']} in {model.metadata['adapt']['seconds']:.1f}s -> {args.out}")


if __name__ == "__main__":
    main()
