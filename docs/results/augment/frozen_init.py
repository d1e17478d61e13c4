"""Write peft's default LoRA init (LoRA B = 0: the frozen backbone's features) as a meta-init folder with the
ARSC-dev recipe's backbone and LoRA settings and its training suite, so adapt/calibrate treat it like any init.
    python frozen_init.py OUT"""
import math, sys
import torch
from metalora import __version__
from metalora.adapter_io import save_folder
from metalora.backbones import load_backbone
from metalora.config import MetaTrainConfig, load_config, to_dict
from metalora.meta.episodes import select_scenarios
from metalora.model import SCALE_KEY, LoraClassifier

cfg = load_config(MetaTrainConfig, "recipes/configs/minilm_fomaml_arsc_dev.yaml")
model = LoraClassifier(load_backbone(cfg.backbone), cfg.lora)
suite = [s.name for s in select_scenarios(cfg.scenarios, cfg.exclude, cfg.exclude_heldout)]
meta = {"metalora_version": __version__, "kind": "meta-init",
        "meta": {"algorithm": "none (peft default LoRA: frozen backbone)", "suite": suite, "steps": 0, "config": to_dict(cfg)},
        "adapt": {"optimizer": "sgd", "lr": cfg.inner_lr, "head_lr": cfg.inner_lr, "steps": 0}, "lineage": {"init": None}, "metrics": {}}
save_folder(sys.argv[1], model, model.default_lora, meta, overwrite=True,
            init_tensors={SCALE_KEY: torch.tensor(math.log(cfg.logit_scale))})
print(sys.argv[1], len(suite), "training scenarios")
