"""`AdapterLibrary`: adapters and meta-inits (a local folder, Hub repos) indexed for selection.

Layout of a library folder: one sub-folder per adapter or meta-init (plain metalora folders), plus
  library.json                      sources that are not sub-folders: Hub repo ids, an author, tags
  library_index.json                the cached index: every entry's metadata and fingerprint
  library_signatures.safetensors    the cached data signatures (mean/std of frozen embeddings)
  library_selector.json             the learned selector, once fitted (`fit_selector`)
Re-indexing reads each entry's two JSON files and compares fingerprints; only new or changed
entries get a signature computed, with one backbone loaded once for all of them.

The library always holds peft's default LoRA init (`peft-default`) and every meta-init it finds, so
that selection can fall back to them when no stored adapter fits the new scenario.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from metalora.adapt import Init
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.errors import BackboneError, DataError, HubError
from metalora.library.entries import (
    DEFAULT_NAME, Entry, LoraShape, read_entry, read_signature, signature_of, write_signature,
)
from metalora.library.selector import SELECTOR_FILE, LearnedSelector
from metalora.model import Encoded, LoraClassifier

CONFIG_FILE = "library.json"
INDEX_FILE = "library_index.json"
SIGNATURES_FILE = "library_signatures.safetensors"
INDEX_VERSION = 1
SIGNATURE_TEXTS = 64  # at most this many texts go into one entry's signature


class LibraryWarning(UserWarning):
    """An entry was skipped or lacks something; the message names it."""


def _canon(base_model: str | None) -> str | None:
    from metalora.backbones import ALIASES, KNOWN

    if not base_model:
        return None
    name = ALIASES.get(base_model, base_model)
    return KNOWN[name].base_model if name in KNOWN else base_model


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AdapterLibrary:
    """Index of a folder of adapters / meta-inits and of Hub repos, with selection and composition."""

    def __init__(self, folder: str | Path | None = None, *, hub: Sequence[str] = (), hub_author: str | None = None,
                 hub_tags: Sequence[str] = (), backbone: BackboneConfig | str | None = None,
                 default_lora: LoraSettings | None = None, refresh: bool = False, signatures: bool = True):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None and not self.folder.is_dir():
            raise DataError(f"library folder {self.folder} does not exist; create it and put adapter folders in it "
                            "(or `metalora library index` a folder of adapters)")
        saved = self._read_config()
        self.hub_ids = tuple(dict.fromkeys([*saved.get("hub", []), *hub]))
        self.hub_author = hub_author or saved.get("hub_author")
        self.hub_tags = tuple(dict.fromkeys([*saved.get("hub_tags", []), *hub_tags]))
        if backbone is None and saved.get("backbone"):
            backbone = BackboneConfig(**saved["backbone"])
        self.notes: list[str] = []
        self._pristine = None
        self._models: dict[LoraShape, LoraClassifier] = {}
        self._inits: dict[str, Init] = {}
        found = self._discover()
        self.backbone_config = self._choose_backbone(backbone, found)
        self.entries = self._index(found, refresh, signatures)
        self.default_shape = self._default_shape(default_lora)
        self.entries.insert(0, Entry(name=DEFAULT_NAME, kind="default", base_model=self.base_model,
                                     lora=self.default_shape, source={"peft": "default LoRA init (A random, B zero)"},
                                     adapt={}))
        sel = self.folder / SELECTOR_FILE if self.folder else None
        self.selector = LearnedSelector.load(sel) if sel is not None and sel.is_file() else None

    # -- sources ---------------------------------------------------------------------------------
    def _note(self, message: str) -> None:
        self.notes.append(message)
        warnings.warn(message, LibraryWarning, stacklevel=3)

    def _read_config(self) -> dict:
        if self.folder is None or not (self.folder / CONFIG_FILE).is_file():
            return {}
        try:
            data = json.loads((self.folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.folder / CONFIG_FILE}: not valid JSON ({exc}); fix or delete it") from None
        if not isinstance(data, dict):
            raise DataError(f"{self.folder / CONFIG_FILE} must hold a JSON object")
        return data

    def save_config(self) -> None:
        """Record the Hub sources and the backbone in library.json, so later commands see the same library."""
        if self.folder is None:
            return
        bb = self.backbone_config
        data = {"backbone": {"name": bb.name, "revision": bb.revision, "max_length": bb.max_length, "pooling": bb.pooling,
                             "truncation": bb.truncation, "head_tokens": bb.head_tokens},
                "hub": list(self.hub_ids), "hub_author": self.hub_author, "hub_tags": list(self.hub_tags)}
        _atomic_write(self.folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(data, indent=2), encoding="utf-8"))

    def _discover(self) -> list[tuple[str, Path, dict] | tuple[str, None, dict]]:
        """(name, folder, source) for every local sub-folder and Hub repo; unreadable ones are named and skipped."""
        found: list = []
        if self.folder is not None:
            for sub in sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if any((sub / f).exists() for f in ("metalora.json", "adapter_config.json", "adapter_model.safetensors")):
                    found.append((sub.name, sub, {"path": str(sub.resolve())}))
        repos = list(self.hub_ids)
        if self.hub_author or self.hub_tags:
            repos += [r for r in self._list_hub() if r not in repos]
        if repos:
            from metalora import hub

            for spec in repos:
                try:
                    path = hub.pull(spec)
                except HubError as exc:
                    self._note(f"skipped Hub entry {spec}: {exc}")
                    continue
                origin = hub.hub_origin(path) or {"repo_id": hub.parse_spec(spec)[0]}
                found.append((spec, path, origin))
        return found

    def _list_hub(self) -> list[str]:
        from metalora import hub

        what = " and ".join(x for x in (f"author {self.hub_author}" if self.hub_author else "",
                                        f"tags {', '.join(self.hub_tags)}" if self.hub_tags else "") if x)
        if hub.offline():
            raise HubError(f"cannot list the Hub repos of {what}: offline mode is on (HF_HUB_OFFLINE=1); list cached "
                           "repos by id (--hub ORG/NAME) or unset HF_HUB_OFFLINE")
        token = hub._token(None)
        with hub._hub_errors("list the repos of", what, None, token):
            models = hub._api(token).list_models(author=self.hub_author, filter=list(self.hub_tags) or None)
            return [m.id for m in models]

    # -- backbone --------------------------------------------------------------------------------
    def _choose_backbone(self, backbone, found) -> BackboneConfig:
        if isinstance(backbone, BackboneConfig):
            return backbone
        if isinstance(backbone, str):
            return BackboneConfig(name=backbone)
        metas = []
        for _, folder, _ in found:
            try:
                meta = json.loads((folder / "metalora.json").read_text(encoding="utf-8"))
                metas.append(meta)
            except (OSError, ValueError):
                continue
        pick = next((m for m in metas if m.get("kind") == "meta-init"), None)
        if pick is None and metas:
            common = Counter(_canon((m.get("backbone") or {}).get("base_model")) for m in metas).most_common(1)[0][0]
            pick = next(m for m in metas if _canon((m.get("backbone") or {}).get("base_model")) == common)
        if pick is None:
            return BackboneConfig(name="minilm")
        saved = pick.get("backbone") or {}
        return BackboneConfig(name=saved.get("name") or saved.get("base_model"), revision=saved.get("revision"),
                              max_length=int(saved.get("max_length", 128)), pooling=saved.get("pooling", "auto"),
                              truncation=saved.get("truncation", "head"), head_tokens=int(saved.get("head_tokens", 32)))

    @property
    def base_model(self) -> str:
        from metalora.backbones import ALIASES, KNOWN

        name = ALIASES.get(self.backbone_config.name, self.backbone_config.name)
        return KNOWN[name].base_model if name in KNOWN else self.backbone_config.name

    def _default_shape(self, settings: LoraSettings | None) -> LoraShape:
        if settings is None:
            shapes = [e.lora for e in self.entries if e.kind == "meta-init"] or [e.lora for e in self.entries]
            if shapes:
                return Counter(shapes).most_common(1)[0][0]
            settings = LoraSettings()
        model = self.model_for_settings(settings)
        cfg = model.peft_config
        layers = cfg.layers_to_transform
        return LoraShape(settings.r, settings.alpha, tuple(sorted(cfg.target_modules)) if cfg.target_modules else None,
                         tuple(sorted(layers)) if layers else None)

    # -- index -----------------------------------------------------------------------------------
    def _cached(self) -> tuple[dict, dict]:
        if self.folder is None or not (self.folder / INDEX_FILE).is_file():
            return {}, {}
        try:
            data = json.loads((self.folder / INDEX_FILE).read_text(encoding="utf-8"))
            if data.get("version") != INDEX_VERSION or data.get("base_model") != _canon(self.base_model):
                return {}, {}
            sigs = {}
            if (self.folder / SIGNATURES_FILE).is_file():
                from safetensors.torch import load_file

                sigs = load_file(str(self.folder / SIGNATURES_FILE))
            return data.get("entries") or {}, sigs
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            self._note(f"{self.folder / INDEX_FILE}: unreadable index cache ({type(exc).__name__}); rebuilding it")
            return {}, {}

    def _index(self, found, refresh: bool, signatures: bool) -> list[Entry]:
        cached, cached_sigs = ({}, {}) if refresh else self._cached()
        want = _canon(self.base_model)
        entries: list[Entry] = []
        names: set[str] = set()
        known: set[str] = set()
        for name, folder, source in found:
            try:
                entry = read_entry(folder, name, source)
            except DataError as exc:
                self._note(f"skipped library entry {name}: {exc}")
                continue
            if _canon(entry.base_model) != want:
                self._note(f"skipped library entry {name}: trained on backbone {entry.base_model!r}, the library's is "
                           f"{self.base_model!r} (not loaded)")
                continue
            if name in names:
                self._note(f"skipped library entry {name}: a second entry has the same name")
                continue
            names.add(name)
            old = cached.get(name)
            if old and old.get("fingerprint") == entry.fingerprint:  # unchanged: the cached signature (or none)
                if f"{name}.mean" in cached_sigs:
                    entry.signature = (cached_sigs[f"{name}.mean"], cached_sigs[f"{name}.std"])
                known.add(name)
            else:
                try:
                    entry.signature = read_signature(folder)
                except DataError as exc:
                    self._note(f"library entry {name}: {exc}; computing it again")
            entries.append(entry)
        if signatures:
            todo = [e for e in entries if e.signature is None and e.name not in known]
            if todo:
                self._compute_signatures(todo)
        self.entries = entries
        self._write_index(entries, cached)
        return entries

    def _write_index(self, entries: list[Entry], cached: dict) -> None:
        if self.folder is None:
            return
        data = {"version": INDEX_VERSION, "base_model": _canon(self.base_model),
                "entries": {e.name: e.to_json() for e in entries}}
        if data["entries"] == cached and (self.folder / SIGNATURES_FILE).is_file():
            return  # nothing changed: leave the files (and their mtimes) alone
        sigs = {}
        for e in entries:
            if e.signature is not None:
                sigs[f"{e.name}.mean"] = e.signature[0].contiguous()
                sigs[f"{e.name}.std"] = e.signature[1].contiguous()
        from safetensors.torch import save_file

        _atomic_write(self.folder / SIGNATURES_FILE, lambda p: save_file(sigs, str(p)))
        _atomic_write(self.folder / INDEX_FILE, lambda p: p.write_text(json.dumps(data, indent=1), encoding="utf-8"))

    def _signature_texts(self, entry: Entry) -> list[str] | None:
        from metalora.scenarios import get_scenario, sample_support

        try:
            if entry.kind == "adapter" and entry.scenario:
                try:
                    sc = get_scenario(entry.scenario)
                except DataError:
                    if not entry.card or not Path(entry.card).is_file():
                        raise
                    sc = get_scenario(entry.card)
                sup = entry.support or {}
                ds = sc.load(sup.get("split") or "train")
                if sup.get("shots"):
                    ds = sample_support(ds, int(sup["shots"]), int(sup.get("seed") or 0), sc.num_labels, where=sc.name)
                return list(ds["text"][:SIGNATURE_TEXTS])
            if entry.kind == "meta-init" and entry.suite:
                per = max(1, SIGNATURE_TEXTS // len(entry.suite))
                texts: list[str] = []
                for name in entry.suite[:SIGNATURE_TEXTS]:
                    ds = get_scenario(name).load("train")
                    texts += list(ds.shuffle(seed=0)["text"][:per])
                return texts[:SIGNATURE_TEXTS * 2]
        except Exception as exc:  # the scenario is not known on this machine: no signature, said once
            self._note(f"library entry {entry.name}: no data signature ({str(exc).splitlines()[0][:160]})")
            return None
        self._note(f"library entry {entry.name}: no data signature (its metadata names no scenario or suite)")
        return None

    def any_model(self) -> LoraClassifier:
        """Some classifier over the library's backbone: under its default LoRA (B = 0) it IS the frozen backbone."""
        if self._models:
            return next(iter(self._models.values()))
        shapes = [e.lora for e in getattr(self, "entries", []) if e.lora is not None]
        return self.model_for_settings(self.settings_of(Counter(shapes).most_common(1)[0][0]) if shapes else LoraSettings())

    def _compute_signatures(self, entries: list[Entry]) -> None:
        self.entries = entries
        model = self.any_model()
        for e in entries:
            texts = self._signature_texts(e)
            if texts:
                e.signature = signature_of(self.frozen_features(model.encode(texts), model))

    def frozen_features(self, enc: Encoded, model: LoraClassifier | None = None) -> torch.Tensor:
        from metalora.library.signals import features

        model = model or self.any_model()
        return features(model, model.default_lora, enc)

    # -- models and inits ------------------------------------------------------------------------
    def _backbone(self):
        from metalora.backbones import load_backbone

        if self._pristine is None:
            self._pristine = load_backbone(self.backbone_config)
        import copy

        return dataclasses.replace(self._pristine, model=copy.deepcopy(self._pristine.model))

    @staticmethod
    def settings_of(shape: LoraShape) -> LoraSettings:
        return LoraSettings(r=shape.r, alpha=shape.alpha, target_modules=shape.target_modules,
                            top_layers=len(shape.layers) if shape.layers else None)

    def model_for_settings(self, settings: LoraSettings) -> LoraClassifier:
        key = ("settings", settings)
        if key not in self._models:
            self._models[key] = LoraClassifier(self._backbone(), settings)
        return self._models[key]

    def model_for(self, entry: Entry) -> LoraClassifier:
        """One classifier per distinct LoRA shape (layers, targets, rank), shared by its entries."""
        if entry.lora not in self._models:
            model = self.model_for_settings(self.settings_of(entry.lora))
            layers = model.peft_config.layers_to_transform
            if (tuple(sorted(layers)) if layers else None) != entry.lora.layers and entry.kind != "default":
                raise BackboneError(f"library entry {entry.name}: LoRA on layers {list(entry.lora.layers or [])} is not "
                                    "the top layers of the backbone, which is all metalora's classifier supports")
            self._models[entry.lora] = model
        return self._models[entry.lora]

    def init_for(self, entry: Entry) -> tuple[LoraClassifier, Init]:
        """The classifier and starting point of an entry (LoRA weights read now, then kept)."""
        model = self.model_for(entry)
        if entry.name in self._inits:
            return model, self._inits[entry.name]
        if entry.kind == "default":
            init = Init(lora=model.default_lora, lineage=None)
        else:
            init = _load_init(entry, model)
        self._inits[entry.name] = init
        return model, init

    def adapt_defaults(self, entry: Entry) -> dict:
        """The AdaptConfig fields an entry recommends (a meta-init's inner loop, an adapter's own run)."""
        return {k: entry.adapt[k] for k in ("optimizer", "lr", "head_lr", "steps") if k in entry.adapt}

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        import difflib

        close = difflib.get_close_matches(name, [e.name for e in self.entries], n=3)
        raise DataError(f"no entry {name!r} in the library" + (f"; did you mean {', '.join(close)}?" if close else ""))

    @property
    def learned(self) -> list[Entry]:
        return [e for e in self.entries if e.kind != "default"]

    def check_not_empty(self) -> None:
        if not self.learned:
            where = f"library {self.folder}" if self.folder else "the library"
            raise DataError(f"{where} is empty: it holds no adapter or meta-init folder (only peft's default init); "
                            "put adapter folders in it (metalora adapt --out LIBRARY/NAME) or add Hub repos (--hub)")

    # -- selection and composition --------------------------------------------------------------
    def select(self, support, k: int = 5, by: str = "auto", **kw):
        from metalora.library.select import select

        return select(self, support, k=k, by=by, **kw)

    def compose(self, support, **kw):
        from metalora.library.compose import compose

        return compose(self, support, **kw)

    def fit_selector(self, scenarios, **kw) -> LearnedSelector:
        from metalora.library.select import fit_selector

        sel = fit_selector(self, scenarios, **kw)
        self.selector = sel
        if self.folder is not None:
            sel.save(self.folder / SELECTOR_FILE)
        return sel

    def add(self, adapted, name: str, support_texts: Sequence[str] | None = None, overwrite: bool = False) -> Entry:
        """Save an adapted model into the library folder (with its data signature) and index it."""
        if self.folder is None:
            raise DataError("this library has no folder to add adapters to")
        path = adapted.save(self.folder / name, overwrite=overwrite)
        if support_texts:
            model = self.any_model()
            write_signature(path, signature_of(self.frozen_features(model.encode(list(support_texts)), model)))
        entry = read_entry(path, name, {"path": str(path.resolve())})
        entry.signature = read_signature(path)
        self.entries = [e for e in self.entries if e.name != name] + [entry]
        self._inits.pop(name, None)
        self._write_index([e for e in self.entries if e.kind != "default"], {})
        return entry

    def describe(self) -> list[dict]:
        rows = []
        for e in self.entries:
            rows.append({"name": e.name, "kind": e.kind, "scenario": e.scenario or "", "family": e.family or "",
                         "labels": "/".join(e.label_names), "lora": e.lora.describe() if e.lora else "",
                         "score": e.score, "signature": e.signature is not None,
                         "source": e.source.get("repo_id") or ("local" if e.source.get("path") else "peft")})
        return rows


def _load_init(entry: Entry, model: LoraClassifier) -> Init:
    """An entry folder as a starting point, read as `api.load_init` reads a meta-init (the one reading of the folder:
    a damaged file is one DataError line naming it)."""
    from metalora.adapter_io import AdapterFolder
    from metalora.api import init_from_folder

    folder = AdapterFolder.read(entry.folder, origin=dict(entry.source))
    return init_from_folder(folder, model, lineage=dict(entry.source), meta={"adapt": entry.adapt})


def adapt_config_for(library: AdapterLibrary, entry: Entry, base: AdaptConfig | None = None) -> AdaptConfig:
    base = base or AdaptConfig(backbone=library.backbone_config)
    return dataclasses.replace(base, **library.adapt_defaults(entry))
