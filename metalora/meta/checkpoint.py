"""Resumable checkpoints of a meta-training run: meta-parameters, optimizer state, counters.

Everything is safetensors + JSON (no pickle). A checkpoint folder is written atomically, so a run
killed at any point leaves the previous checkpoint intact. Together with episodes being a pure
function of (seed, step, index), restoring these files resumes to the same final init.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metalora.adapter_io import atomic_folder
from metalora.config import to_dict
from metalora.errors import ConfigError

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


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(p for p in Path(folder).glob("step-*") if (p / "state.json").is_file())
    return found[-1] if found else None


def load_checkpoint(path: Path, cfg, optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    now = fingerprint(cfg)
    if state["config"] != now:
        diff = sorted(k for k in set(now) | set(state["config"]) if now.get(k) != state["config"].get(k))
        raise ConfigError(
            f"checkpoint {path} was written by a run with a different config (differs in: {', '.join(diff)}); "
            "use another output_dir, or the original config to resume"
        )
    tensors = load_file(str(path / "meta.safetensors"))
    flat = load_file(str(path / "optimizer.safetensors"))
    opt_state = {"state": {}, "param_groups": state["param_groups"]}
    index = {n: i for i, n in enumerate(names)}
    for key, value in list(flat.items()) + list(state["optimizer_scalars"].items()):
        if key == "__empty__":
            continue
        name, _, field = key.rpartition("::")
        opt_state["state"].setdefault(index[name], {})[field] = value
    optimizer.load_state_dict(opt_state)
    return tensors, state
