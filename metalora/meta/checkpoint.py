"""Resumable checkpoints of a meta-training run: meta-parameters, optimizer state, counters.

Everything is safetensors + JSON (no pickle). A checkpoint folder is written atomically, so a run
killed at any point leaves the previous checkpoint intact; one damaged later (a full disk, a partial
copy) is skipped on resume, with a warning naming it, in favour of the newest intact one. Together with episodes being a pure
function of (seed, step, index), restoring these files resumes to the same final init.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from metalora.adapter_io import atomic_folder, read_safetensors
from metalora.config import to_dict
from metalora.errors import ConfigError, DataError, TrainingError
from metalora.jsonfile import read_object

logger = logging.getLogger(__name__)

# Fields that may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = {"steps", "eval_every", "checkpoint_every", "output_dir", "log_with"}


def fingerprint(cfg) -> dict:
    return {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE_CHANGES}


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    names: list[str], cfg, extra: dict) -> Path:
    """`names` maps the optimizer's parameter order to stable tensor names."""
    opt_state = optimizer.state_dict()
    flat, scalars = {}, {}
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                flat[f"{names[idx]}::{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{names[idx]}::{key}"] = value

    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "meta.safetensors"))
        save_file(flat or {"__empty__": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
        state = {"step": step, "config": fingerprint(cfg), "param_groups": opt_state["param_groups"],
                 "optimizer_scalars": scalars, **extra}
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")

    return atomic_folder(folder / f"step-{step:07d}", write, overwrite=True)


def remove_partial(folder: Path) -> None:
    """Delete the temporary folders (`.NAME.tmp-*`) that a run killed in the middle of a save leaves."""
    import shutil

    for tmp in Path(folder).glob(".*.tmp-*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


def checkpoints(folder: Path) -> list[Path]:
    """Every checkpoint folder of a run, oldest first (damaged ones included)."""
    return sorted(p for p in Path(folder).glob("step-*") if p.is_dir())


def latest_checkpoint(folder: Path) -> Path | None:
    found = [p for p in checkpoints(folder) if (p / "state.json").is_file()]
    return found[-1] if found else None


def _read_state(path: Path) -> dict:
    file = path / "state.json"
    state = read_object(file, "the checkpoint is damaged or incomplete")
    if not {"step", "config", "param_groups", "optimizer_scalars"} <= set(state):
        raise DataError(f"{file} is damaged or incomplete (fields missing)")
    return state


def load_checkpoint(path: Path, cfg, optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore the optimizer from `path` and return (meta-tensors, state). A damaged file is a DataError
    naming it (nothing is restored then); a checkpoint of another config is a ConfigError."""
    state = _read_state(path)
    now = fingerprint(cfg)
    if state["config"] != now:
        diff = sorted(k for k in set(now) | set(state["config"]) if now.get(k) != state["config"].get(k))
        raise ConfigError(
            f"checkpoint {path} was written by a run with a different config (differs in: {', '.join(diff)}); "
            "use another output_dir, or the original config to resume"
        )
    fix = "an older checkpoint can be resumed from, or start over with --no-resume"
    tensors = read_safetensors(path / "meta.safetensors", fix)
    flat = read_safetensors(path / "optimizer.safetensors", fix)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise DataError(f"{path / 'meta.safetensors'} is damaged or incomplete (no tensor {missing[0]}); {fix}")
    opt_state = {"state": {}, "param_groups": state["param_groups"]}
    index = {n: i for i, n in enumerate(names)}
    for key, value in list(flat.items()) + list(state["optimizer_scalars"].items()):
        if key == "__empty__":
            continue
        name, _, field = key.rpartition("::")
        if name not in index:
            raise DataError(f"{path / 'optimizer.safetensors'} is damaged or incomplete (unknown entry {key}); {fix}")
        opt_state["state"].setdefault(index[name], {})[field] = value
    optimizer.load_state_dict(opt_state)
    return tensors, state


def resume(folder: Path, cfg, optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[Path, dict[str, torch.Tensor], dict] | None:
    """Restore the newest INTACT checkpoint of `folder`; None when there is none at all.

    A damaged checkpoint (a file cut off by a full disk or a partial copy) is skipped with a warning
    naming it; when every checkpoint is damaged, one TrainingError line says so (nothing is deleted).
    """
    found = checkpoints(folder)
    damaged: list[tuple[Path, str]] = []
    for path in reversed(found):
        try:
            tensors, state = load_checkpoint(path, cfg, optimizer, names)
        except DataError as exc:
            damaged.append((path, str(exc)))
            continue
        for bad, why in damaged:
            logger.warning("checkpoint %s is damaged (%s); resuming from %s, the newest intact checkpoint", bad, why, path.name)
        return path, tensors, state
    if damaged:
        raise TrainingError(
            f"no intact checkpoint to resume from in {folder}: {'; '.join(f'{p.name}: {why}' for p, why in damaged)}. "
            "Start over with --no-resume (the damaged checkpoints are replaced as the new run saves), or restore them"
        )
    return None
