"""Adapter and meta-init folders on disk: a plain peft folder plus metalora's own files.

Layout (what `PeftModel.from_pretrained` needs, and what metalora adds beside it):
  adapter_config.json, adapter_model.safetensors   peft's LoRA adapter over `AutoModel` of the backbone
  metalora_head.safetensors                        the scenario head as a plain linear layer (weight, bias)
  metalora_init.safetensors                        meta-inits only: logit scale, Meta-SGD learning rates
  metalora.json                                    metadata: kind, backbone + revision, scenario, labels,
                                                   metrics, lineage, metalora version
  README.md                                        model card
Writes go to a temporary sibling folder that is renamed into place at the end, so an interrupted
save never leaves a half-written adapter and never destroys the one that was there.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metalora import __version__
from metalora.errors import BackboneError, DataError
from metalora.label_words import BIAS_KEY, WORDS_KEY
from metalora.model import SCALE_KEY, LoraClassifier, Params, fold_head

META_FILE = "metalora.json"
HEAD_FILE = "metalora_head.safetensors"
INIT_FILE = "metalora_init.safetensors"
PICKLED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def to_peft_key(name: str) -> str:
    """Our module-relative LoRA name -> the key peft writes in adapter_model.safetensors."""
    name = name.removeprefix("peft.")
    return name.replace(".default.", ".")


def from_peft_key(key: str, names: tuple[str, ...]) -> str:
    table = {to_peft_key(n): n for n in names}
    return table[key]


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, to overwrite an existing folder unless asked to."""
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise DataError(f"{path} already exists and is not empty; choose another --out or pass --overwrite")


def atomic_folder(path: Path, write, overwrite: bool = False) -> Path:
    """Call `write(tmp_dir)`, then move tmp_dir to `path` in one rename (old content kept on failure)."""
    path = Path(path)
    check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            backup = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, backup)
            os.replace(tmp, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_folder(
    path: str | Path,
    model: LoraClassifier,
    params: Params,
    metadata: dict,
    overwrite: bool = False,
    init_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save LoRA (+ head) as a plain peft folder with metalora's metadata beside it."""
    meta = dict(metadata)
    meta.setdefault("metalora_version", __version__)
    meta["backbone"] = backbone_meta(model)

    def write(tmp: Path) -> None:
        model.load_lora(params)
        model.peft.save_pretrained(str(tmp), save_embedding_layers=False)  # no Hub look-up
        if "head.weight" in params:
            w, b = fold_head(params)
            save_file({"weight": w.contiguous().cpu(), "bias": b.contiguous().cpu()}, str(tmp / HEAD_FILE))
        elif WORDS_KEY in params:  # a label-word head: the label words' token ids and the calibration bias
            save_file({"words": params[WORDS_KEY].contiguous().cpu(), "bias": params[BIAS_KEY].detach().contiguous().cpu()},
                      str(tmp / HEAD_FILE))
        if init_tensors:
            save_file({k: v.detach().contiguous().cpu() for k, v in init_tensors.items()}, str(tmp / INIT_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False), encoding="utf-8")
        _write_card(tmp)

    return atomic_folder(Path(path), write, overwrite)


def _write_card(folder: Path) -> None:
    try:
        from metalora.model_card import build_model_card
    except ImportError:  # pragma: no cover - model_card ships with the package
        return
    build_model_card(folder).save(str(folder / "README.md"))


def backbone_meta(model: LoraClassifier) -> dict:
    bb = model.backbone
    return {
        "name": bb.name,
        "base_model": bb.base_model,
        "revision": bb.config.revision,
        "pooling": bb.pooling,
        "max_length": bb.config.max_length,
        "truncation": bb.config.truncation,
        "head_tokens": bb.config.head_tokens,
        "scoring": bb.config.scoring,
        "prompt": bb.config.prompt,
    }


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"adapter folder {path} does not exist")
    pickled = [p.name for p in path.iterdir() if p.suffix in PICKLED]
    if pickled:
        raise DataError(f"{path}: refusing pickled weight files ({', '.join(pickled)}); metalora loads safetensors only")
    for needed in ("adapter_config.json", "adapter_model.safetensors", META_FILE):
        if not (path / needed).is_file():
            raise DataError(f"{path} is not a metalora adapter folder: {needed} is missing")
    try:
        return json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path / META_FILE}: not valid JSON ({exc})") from None


def lora_settings_from(path: Path):
    from metalora.config import LoraSettings

    cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    layers = cfg.get("layers_to_transform")
    targets = cfg.get("target_modules")
    if isinstance(targets, str):
        raise DataError(f"{path}/adapter_config.json: regex target_modules are not supported; list the module names")
    return LoraSettings(
        r=int(cfg["r"]), alpha=int(cfg["lora_alpha"]), dropout=float(cfg.get("lora_dropout", 0.0)),
        target_modules=tuple(sorted(targets)) if targets else None,
        top_layers=len(layers) if layers else None,
    )


def check_backbone(path: Path, meta: dict, backbone) -> None:
    from metalora.backbones import ALIASES

    want = meta.get("backbone", {}).get("base_model")
    have = backbone.base_model
    if want and ALIASES.get(want, want) != ALIASES.get(have, have):
        raise BackboneError(
            f"{path} was trained on backbone {want!r} but the backbone in use is {have!r}; "
            f"load it with backbone {want!r} (omit --backbone to use the adapter's own)"
        )


def load_params(path: Path, model: LoraClassifier) -> Params:
    """LoRA weights of a saved folder, as our functional params (names checked against the model)."""
    sd = load_file(str(Path(path) / "adapter_model.safetensors"))
    table = {to_peft_key(n): n for n in model.lora_names}
    missing = [k for k in table if k not in sd]
    extra = [k for k in sd if k not in table]
    if missing or extra:
        raise BackboneError(
            f"{path}: the adapter's LoRA weights do not fit the model (missing {missing[:3]}, unexpected {extra[:3]}); "
            "was it saved for another backbone or LoRA config?"
        )
    params = {table[k]: v for k, v in sd.items()}
    named = dict(model.named_parameters())
    for n, v in params.items():
        if v.shape != named[n].shape:
            raise BackboneError(f"{path}: LoRA weight {to_peft_key(n)} has shape {tuple(v.shape)}, the model expects {tuple(named[n].shape)}")
    return params


def load_head(path: Path) -> Params | None:
    f = Path(path) / HEAD_FILE
    if not f.is_file():
        return None
    sd = load_file(str(f))
    if "words" in sd:
        return {WORDS_KEY: sd["words"], BIAS_KEY: sd["bias"]}
    return {"head.weight": sd["weight"], "head.bias": sd["bias"], SCALE_KEY: torch.tensor(0.0)}
