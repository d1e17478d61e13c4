"""Meta-train a LoRA initialization across a scenario suite.

    accelerate launch --config_file accelerate_config.yaml recipes/meta_train.py \
        --config recipes/configs/minilm_fomaml_synthetic.yaml [key=value ...]

Two processes on a CPU machine (gloo): note `--cpu --num_processes 2` starts only ONE process;
    accelerate launch --config_file accelerate_config.yaml --multi_gpu --num_processes 2 \
        recipes/meta_train.py --cpu --config recipes/configs/smoke_fomaml_tiny.yaml
"""
from __future__ import annotations

import argparse

from metalora.config import MetaTrainConfig, load_config
from metalora.meta.trainer import MetaTrainer, make_accelerator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file of MetaTrainConfig fields (recipes/configs/).")
    parser.add_argument("--cpu", action="store_true", help="Accelerator(cpu=True): processes on the CPU even with GPUs present.")
    parser.add_argument("--no-resume", action="store_true", help="Start over instead of resuming from output_dir's checkpoints.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Config overrides, e.g. steps=10 lora.r=4.")
    args = parser.parse_args(argv)

    cfg = load_config(MetaTrainConfig, args.config, args.overrides)
    accelerator = make_accelerator(cfg, cpu=args.cpu)
    result = MetaTrainer(cfg, accelerator=accelerator).train(resume=not args.no_resume)
    if accelerator.is_main_process:
        print(f"processes={accelerator.num_processes} distributed_type={accelerator.distributed_type} "
              f"steps={result.steps} seconds={result.seconds:.1f} meta-init={result.init_dir}")


if __name__ == "__main__":
    main()
