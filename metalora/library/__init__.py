"""Model selection: an adapter library, ranked and blended for a new scenario's support set.

    from metalora.library import AdapterLibrary, Support
    lib = AdapterLibrary("adapters/")                       # + hub=["org/kitchen"], hub_author="org"
    sel = lib.select(Support(texts, labels, 2), k=5)        # sel.best.entry, sel.decided_by
    blend = lib.compose(Support(texts, labels, 2), k=3)     # blend.init: adapt from it, blend.save(path)

`metalora adapt SCENARIO --init library:PATH[/top1|/compose]` starts from the selected entry (or the
blend) of the library in PATH.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metalora.errors import ConfigError
from metalora.library.compose import ArrowRouter, Blend, compose, route
from metalora.library.entries import DEFAULT_NAME, Entry, LoraShape
from metalora.library.library import AdapterLibrary, LibraryWarning
from metalora.library.select import Ranked, Selection, fit_selector, select
from metalora.library.signals import Support

PREFIX = "library:"
MODES = ("top1", "compose")

__all__ = ["AdapterLibrary", "ArrowRouter", "Blend", "DEFAULT_NAME", "Entry", "LibraryStart", "LibraryWarning", "LoraShape",
           "Ranked", "Selection", "Support", "compose", "fit_selector", "is_library_spec", "parse_spec", "route", "select",
           "start_from"]


def is_library_spec(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse_spec(spec: str) -> tuple[Path, str]:
    """`library:PATH`, `library:PATH/top1`, `library:PATH/compose` -> (PATH, mode)."""
    rest = spec[len(PREFIX):]
    if not rest:
        raise ConfigError(f"--init {spec!r}: name the library folder, e.g. library:adapters/ or library:adapters/top1")
    head, _, tail = rest.rstrip("/").rpartition("/")
    if tail in MODES and head:
        return Path(head), tail
    return Path(rest), "top1"


@dataclass
class LibraryStart:
    """What `adapt --init library:...` starts from: the classifier, the init and why it was chosen."""

    model: object
    init: object
    defaults: dict  # the AdaptConfig fields the chosen entry (or the blend's lead) recommends
    selection: Selection | None
    blend: Blend | None = None

    def describe(self) -> str:
        return self.blend.describe() if self.blend is not None else self.selection.describe()


def start_from(spec: str, support: Support, seed: int = 0) -> LibraryStart:
    """Select (or compose) from the library named by `spec` for this support set."""
    folder, mode = parse_spec(spec)
    lib = AdapterLibrary(folder)
    if mode == "compose":
        blend = lib.compose(support, seed=seed)
        return LibraryStart(blend.model, blend.init, blend.defaults, None, blend)
    sel = lib.select(support, k=1, seed=seed)
    entry = sel.best.entry
    model, init = lib.init_for(entry)
    from dataclasses import replace

    lineage = {**(init.lineage or {}), "library": {"folder": folder.name, "entry": entry.name, "selected_by": sel.decided_by}}
    return LibraryStart(model, replace(init, lineage=lineage), lib.adapt_defaults(entry), sel)
