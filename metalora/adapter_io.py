"""Adapter and meta-init folders on disk: a plain peft folder plus metalora's own files.

Layout (what `PeftModel.from_pretrained` needs, and what metalora adds beside it):
  adapter_config.json, adapter_model.safetensors   peft's LoRA adapter over `AutoModel` of the backbone
  metalora_head.safetensors                        the scenario head as a plain linear layer (weight, bias)
  metalora_init.safetensors                        meta-inits only: logit scale, Meta-SGD learning rates
  metalora.json                                    metadata: kind, backbone + revision, scenario, labels,
                                                   metrics, lineage, metalora version
  README.md                                        model card
Reading is done once, at the edge: `AdapterFolder.open(spec)` turns a folder (or a Hub id, pulled)
into one typed record that the API, the multi-adapter server and the adapter library pass on.
Writes go to a temporary sibling folder that is renamed into place at the end, so an interrupted
save never leaves a half-written adapter and never destroys the one that was there.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metalora import __version__
from metalora.config import LoraSettings
from metalora.errors import BackboneError, DataError
from metalora.jsonfile import read_object
from metalora.label_words import BIAS_KEY, WORDS_KEY
from metalora.model import SCALE_KEY, LoraClassifier, Params, fold_head

META_FILE = "metalora.json"
HEAD_FILE = "metalora_head.safetensors"
INIT_FILE = "metalora_init.safetensors"
PICKLED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def to_peft_key(name: str, adapter: str = "default") -> str:
    """Our module-relative LoRA name -> the key peft writes in adapter_model.safetensors."""
    name = name.removeprefix("peft.")
    return name.replace(f".{adapter}.", ".")


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


# -- reading ---------------------------------------------------------------------------------------
DAMAGED_FIX = "copy or pull the folder again, or re-create it (metalora adapt / meta-train)"


def read_safetensors(path: Path, fix: str = DAMAGED_FIX) -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file`, with a damaged file (cut off by a full disk, a partial copy or
    download) reported as one line that names the file and the fix instead of a SafetensorError."""
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        detail = str(exc).removeprefix("Error while deserializing header: ")
        raise DataError(f"{path} is damaged or incomplete (not a whole safetensors file: {detail}); {fix}") from None


def _read_json(path: Path) -> dict:
    return read_object(path, DAMAGED_FIX)


def _lora_settings(path: Path, cfg: dict) -> LoraSettings:
    layers = cfg.get("layers_to_transform")
    targets = cfg.get("target_modules")
    if isinstance(targets, str):
        raise DataError(f"{path}: regex target_modules are not supported; list the module names")
    if layers is not None and not isinstance(layers, list):
        layers = [layers]
    try:
        return LoraSettings(
            r=int(cfg["r"]), alpha=int(cfg["lora_alpha"]), dropout=float(cfg.get("lora_dropout") or 0.0),
            target_modules=tuple(sorted(targets)) if targets else None,
            top_layers=len(layers) if layers else None,
        )
    except KeyError as exc:
        raise DataError(f"{path}: field {exc.args[0]} is missing; is it a peft LoRA adapter?") from None
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class AdapterFolder:
    """An adapter or meta-init folder read once, at the edge, into one typed record.

    Why: following a folder from `api.adapt` used to read its `metalora.json` four times in three
    modules. Everything later code needs from disk is here (and nothing is read again):

    - `meta`: metalora.json (kind, backbone + revision, scenario and labels, metrics, lineage, adapt settings)
    - `lora`: the LoRA settings of adapter_config.json, as `LoraSettings`
    - `tensors`: adapter_model.safetensors under peft's keys (`...query.lora_A.weight`)
    - `head`: the scenario head as functional params (`head.weight`, `head.bias`, a zero log-scale:
      the saved head has its scale folded in; or a label-word head's word ids and class bias), None
      for a meta-init
    - `init_tensors`: metalora_init.safetensors (logit scale, class prior, Meta-SGD rates), {} if none
    - `origin`: where it came from, for lineage: {"path": ...} or {"repo_id", "revision": exact commit}

    `AdapterFolder.open(spec)` takes a local folder or a Hub spec (pulled on demand); `read(path)` a
    local folder. Every problem with the files is a `DataError` naming the file and the fix.
    """

    path: Path
    meta: dict
    peft_config: dict
    lora: LoraSettings
    tensors: dict[str, torch.Tensor]
    head: Params | None
    init_tensors: dict[str, torch.Tensor]
    origin: dict

    @classmethod
    def open(cls, spec: str | Path | AdapterFolder) -> AdapterFolder:
        """A local folder as is; anything else is a Hub repo id (`ORG/NAME`, `ORG/NAME@REV`, `hf://...`), pulled."""
        if isinstance(spec, AdapterFolder):
            return spec
        from metalora import hub

        local = Path(spec).expanduser()
        if local.is_dir():
            return cls.read(local)
        if str(spec).startswith((".", "/", "~")) or not hub.looks_like_spec(str(spec)):
            raise DataError(f"adapter folder {spec} does not exist (and it is not a Hub repo id ORG/NAME[@REVISION])")
        folder = hub.pull(str(spec))
        origin = hub.hub_origin(folder)
        if not origin or not origin.get("revision"):
            # lineage promises the exact commit: never record a branch name that may move
            raise DataError(f"pulled {spec} into {folder} but cannot tell which commit it is; pull it again")
        return cls.read(folder, origin=origin)

    @classmethod
    def read(cls, path: str | Path, origin: dict | None = None) -> AdapterFolder:
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"adapter folder {path} does not exist")
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED)
        if pickled:
            raise DataError(f"{path}: refusing pickled weight files ({', '.join(pickled)}); metalora loads safetensors only")
        for needed in ("adapter_config.json", "adapter_model.safetensors", META_FILE):
            if not (path / needed).is_file():
                raise DataError(f"{path} is not a metalora adapter folder: {needed} is missing")
        meta = _read_json(path / META_FILE)
        peft_config = _read_json(path / "adapter_config.json")
        lora = _lora_settings(path / "adapter_config.json", peft_config)
        tensors = read_safetensors(path / "adapter_model.safetensors")
        head = None
        if (path / HEAD_FILE).is_file():
            sd = read_safetensors(path / HEAD_FILE)
            if "words" in sd and "bias" in sd:  # a label-word head (metalora.label_words): token ids + class bias
                head = {WORDS_KEY: sd["words"], BIAS_KEY: sd["bias"]}
            elif "weight" in sd and "bias" in sd:
                head = {"head.weight": sd["weight"], "head.bias": sd["bias"], SCALE_KEY: torch.tensor(0.0)}
            else:
                raise DataError(f"{path / HEAD_FILE}: needs tensors `weight` and `bias` (or `words` and `bias`), has {sorted(sd)}")
        init_tensors = read_safetensors(path / INIT_FILE) if (path / INIT_FILE).is_file() else {}
        if origin is None:
            from metalora.hub import hub_origin

            # a `metalora pull --to DIR` copy knows its repo and commit; a plain folder is its path
            origin = hub_origin(path) or {"path": str(path.resolve())}
        return cls(path, meta, peft_config, lora, tensors, head, init_tensors, origin)

    # -- what the metadata says ---------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.meta.get("kind", "adapter")

    @property
    def backbone_meta(self) -> dict:
        return self.meta.get("backbone") or {}

    @property
    def base_model(self) -> str | None:
        return self.backbone_meta.get("base_model") or self.peft_config.get("base_model_name_or_path")

    @property
    def scenario(self) -> str | None:
        return (self.meta.get("scenario") or {}).get("name")

    @property
    def label_names(self) -> tuple[str, ...]:
        labels = (self.meta.get("scenario") or {}).get("label_names")
        if not labels:
            raise DataError(f"{self.path / META_FILE}: scenario.label_names is missing")
        return tuple(labels)

    def adapt_defaults(self, family: str | None = None) -> dict:
        """The adaptation settings a meta-init recommends (its validated inner loop), as AdaptConfig fields; with the
        scenario's `family`, that family's own budget where the init chose one per family (metalora/meta/budget.py)."""
        rec = self.meta.get("adapt") or {}
        by_family = self.meta.get("adapt_by_family") or {}
        if family is not None and isinstance(by_family.get(family), dict):
            rec = {**rec, **by_family[family]}
        return {k: rec[k] for k in ("optimizer", "lr", "head_lr", "steps", "fallback", "fallback_margin") if k in rec}

    def backbone_config(self, override=None):
        """The backbone this folder was trained on (and how its inputs were cut), unless `override` is given."""
        from metalora.config import BackboneConfig

        if override is not None:
            return BackboneConfig(name=override) if isinstance(override, str) else override
        saved = self.backbone_meta
        name = saved.get("name") or self.base_model
        if not name:
            raise DataError(f"{self.path}: neither {META_FILE} nor adapter_config.json names the backbone")
        return BackboneConfig(name=name, revision=saved.get("revision"), max_length=int(saved.get("max_length", 128)),
                              pooling=saved.get("pooling", "auto"), truncation=saved.get("truncation", "head"),
                              head_tokens=int(saved.get("head_tokens", 32)), scoring=saved.get("scoring", "pooled"),
                              prompt=saved.get("prompt"))

    def backbone_key(self) -> tuple[str | None, str | None]:
        """(canonical base model, revision): two folders with the same key fit the same frozen weights."""
        from metalora.backbones import ALIASES

        want = self.base_model
        return ALIASES.get(want, want), self.backbone_meta.get("revision")

    def check_backbone(self, backbone) -> None:
        """Refuse (before peft injects LoRA) a backbone other than the one these LoRA weights were trained on."""
        from metalora.backbones import ALIASES

        want, have = self.base_model, backbone.base_model
        if want and ALIASES.get(want, want) != ALIASES.get(have, have):
            raise BackboneError(
                f"{self.path} was trained on backbone {want!r} but the backbone in use is {have!r}; "
                f"load it with backbone {want!r} (omit --backbone to use the adapter's own)"
            )

    # -- tensors for a model -------------------------------------------------------------------------
    def lora_params(self, model: torch.nn.Module, adapter: str = "default") -> Params:
        """The LoRA weights as functional params of `model`'s peft adapter `adapter` (names and shapes checked)."""
        named = {n: p for n, p in model.named_parameters() if "lora_" in n and f".{adapter}." in n}
        table = {to_peft_key(n, adapter): n for n in named}
        missing = [k for k in table if k not in self.tensors]
        extra = [k for k in self.tensors if k not in table]
        if missing or extra:
            raise BackboneError(
                f"{self.path}: the adapter's LoRA weights do not fit the model (missing {missing[:3]}, unexpected {extra[:3]}); "
                "was it saved for another backbone or LoRA config?"
            )
        for key, name in table.items():
            if self.tensors[key].shape != named[name].shape:
                raise BackboneError(f"{self.path}: LoRA weight {key} has shape {tuple(self.tensors[key].shape)}, "
                                    f"the model expects {tuple(named[name].shape)}")
        return {name: self.tensors[key] for key, name in table.items()}


def load_params(path: str | Path, model: LoraClassifier) -> Params:
    """The LoRA weights of a saved folder as `model`'s functional params (a shortcut over `AdapterFolder`)."""
    return AdapterFolder.read(path).lora_params(model)
