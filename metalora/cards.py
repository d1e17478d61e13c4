"""Scenario cards: Hugging Face dataset cards (Markdown + YAML header) that describe a scenario.

The card is the single source of truth for where a scenario's data is, which columns are the
text inputs, which is the label, the label names, the task type and the metrics. It is parsed into a
frozen `ScenarioCard` and validated here, in one place, with messages that name the file and field.
One card can describe many scenarios: the ARSC card expands into one scenario per domain x threshold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from metalora.errors import DataError

FAMILIES = ("sentiment", "categorisation", "purchase", "fraud", "other")
TASK_TYPES = ("multiclass", "binary", "rare_positive")
SOURCE_TYPES = ("local", "hub", "synthetic", "arsc")
LOCAL_FORMATS = ("json", "csv", "parquet", "text")
ARSC_THRESHOLDS = ("t2", "t4", "t5")
ARSC_SPLITS = ("train", "dev", "test")

_HEADER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)


@dataclass(frozen=True)
class SourceSpec:
    type: str
    format: str | None = None  # local
    data_files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # local: (split, files), paths resolved
    dataset: str | None = None  # hub
    config: str | None = None
    revision: str | None = None
    generator: str | None = None  # synthetic
    seed: int = 0
    data_dir: Path | None = None  # arsc
    domains: tuple[str, ...] | None = None  # arsc: None = every domain found
    thresholds: tuple[str, ...] = ARSC_THRESHOLDS


@dataclass(frozen=True)
class ScenarioCard:
    path: Path
    name: str
    family: str
    task_type: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    source: SourceSpec
    heldout: bool = False
    pretty_name: str = ""
    body: str = field(default="", repr=False)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _read_header(path: Path) -> tuple[dict, str]:
    if not path.is_file():
        raise DataError(f"scenario card {path} does not exist; list the cards with `metalora scenarios`")
    text = path.read_text(encoding="utf-8")
    m = _HEADER.match(text)
    if not m:
        raise DataError(f"{path}: a scenario card must start with a YAML header between two `---` lines")
    try:
        header = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: the YAML header is not valid YAML ({exc})") from None
    if not isinstance(header, dict):
        raise DataError(f"{path}: the YAML header must be a mapping")
    return header, text[m.end():]


_CARD_KEYS = {"name", "family", "task_type", "text_columns", "label_column", "label_names", "metrics", "source", "heldout"}
_SOURCE_KEYS = {
    "local": {"type", "format", "data_files"},
    "hub": {"type", "dataset", "config", "revision"},
    "synthetic": {"type", "generator", "seed"},
    "arsc": {"type", "data_dir", "domains", "thresholds"},
}


def _str_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v) for v in value)
    return None


def load_card(path: str | Path) -> ScenarioCard:
    """Parse and validate one card; every problem in it is reported at once, naming the field."""
    from metalora.metrics import METRIC_NAMES

    path = Path(path)
    header, body = _read_header(path)
    meta = header.get("metalora")
    if not isinstance(meta, dict):
        raise DataError(f"{path}: the YAML header needs a `metalora:` mapping (see data_cards/README.md)")
    problems: list[str] = []

    def bad(fieldname: str, msg: str) -> None:
        problems.append(f"metalora.{fieldname}: {msg}")

    for key in meta:
        if key not in _CARD_KEYS:
            bad(key, f"unknown field; known fields are {', '.join(sorted(_CARD_KEYS))}")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        bad("name", "must be a non-empty string, e.g. synthetic/sentiment/kitchen")
    family = meta.get("family")
    if family not in FAMILIES:
        bad("family", f"got {family!r}; allowed: {', '.join(FAMILIES)}")
    task_type = meta.get("task_type")
    if task_type not in TASK_TYPES:
        bad("task_type", f"got {task_type!r}; allowed: {', '.join(TASK_TYPES)}")
    text_columns = _str_list(meta.get("text_columns"))
    if not text_columns:
        bad("text_columns", "must list one or more column names, e.g. [review] or [user_profile, item]")
    label_column = meta.get("label_column", "label")
    if not isinstance(label_column, str) or not label_column:
        bad("label_column", "must be a column name")
    label_names = _str_list(meta.get("label_names"))
    if not label_names or len(label_names) < 2:
        bad("label_names", "must list at least two label names")
    elif len(set(label_names)) != len(label_names):
        bad("label_names", f"names must be distinct, got {list(label_names)}")
    elif task_type in ("binary", "rare_positive") and len(label_names) != 2:
        bad("label_names", f"a {task_type} task has exactly two labels (negative first), got {list(label_names)}")
    metrics = _str_list(meta.get("metrics"))
    if metrics is None:
        from metalora.metrics import default_metrics

        metrics = default_metrics(task_type) if task_type in TASK_TYPES else ()
    for m_name in metrics:
        if m_name not in METRIC_NAMES:
            bad("metrics", f"unknown metric {m_name!r}; allowed: {', '.join(METRIC_NAMES)}")
    heldout = meta.get("heldout", False)
    if not isinstance(heldout, bool):
        bad("heldout", "must be true or false")
    source = _parse_source(path, meta.get("source"), bad)
    if problems:
        raise DataError(f"{path}: invalid scenario card:\n  " + "\n  ".join(problems))
    return ScenarioCard(
        path=path, name=name, family=family, task_type=task_type, text_columns=text_columns,
        label_column=label_column, label_names=label_names, metrics=tuple(metrics), source=source,
        heldout=heldout, pretty_name=str(header.get("pretty_name", name)), body=body,
    )


def _parse_source(path: Path, src: Any, bad) -> SourceSpec | None:
    if not isinstance(src, dict):
        bad("source", f"must be a mapping with a `type` ({', '.join(SOURCE_TYPES)})")
        return None
    kind = src.get("type")
    if kind not in SOURCE_TYPES:
        bad("source.type", f"got {kind!r}; allowed: {', '.join(SOURCE_TYPES)}")
        return None
    for key in src:
        if key not in _SOURCE_KEYS[kind]:
            bad(f"source.{key}", f"unknown field for a {kind} source; known: {', '.join(sorted(_SOURCE_KEYS[kind]))}")
    here = path.parent
    if kind == "local":
        fmt = src.get("format")
        if fmt not in LOCAL_FORMATS:
            bad("source.format", f"got {fmt!r}; allowed: {', '.join(LOCAL_FORMATS)}")
        files = src.get("data_files")
        if not isinstance(files, dict) or not files:
            bad("source.data_files", "must map split names to files, e.g. {train: train.jsonl, test: test.jsonl}")
            return None
        resolved = []
        for split, value in files.items():
            names = _str_list(value)
            if not names:
                bad(f"source.data_files.{split}", "must be a file path or a list of paths")
                continue
            resolved.append((str(split), tuple(str((here / n).resolve()) if not Path(n).is_absolute() else n for n in names)))
        return SourceSpec(type=kind, format=fmt, data_files=tuple(resolved))
    if kind == "hub":
        ds = src.get("dataset")
        if not isinstance(ds, str) or not ds:
            bad("source.dataset", "must be a Hub dataset id, e.g. org/name")
        return SourceSpec(type=kind, dataset=ds, config=src.get("config"), revision=src.get("revision"))
    if kind == "synthetic":
        gen = src.get("generator")
        seed = src.get("seed", 0)
        if not isinstance(gen, str):
            bad("source.generator", "must name a built-in generator (see `metalora scenarios`)")
        else:
            from metalora.synthetic import GENERATORS

            if gen not in GENERATORS:
                bad("source.generator", f"unknown generator {gen!r}; known: {', '.join(GENERATORS)}")
        if not isinstance(seed, int):
            bad("source.seed", "must be an integer")
        return SourceSpec(type=kind, generator=gen, seed=seed if isinstance(seed, int) else 0)
    # arsc
    data_dir = src.get("data_dir")
    if not isinstance(data_dir, str):
        bad("source.data_dir", "must be the folder that holds <domain>.<t2|t4|t5>.<split> files")
        return None
    domains = src.get("domains", "all")
    domain_list = None if domains == "all" else _str_list(domains)
    if domains != "all" and not domain_list:
        bad("source.domains", "must be `all` or a list of domain names")
    thresholds = _str_list(src.get("thresholds", list(ARSC_THRESHOLDS))) or ()
    for t in thresholds:
        if t not in ARSC_THRESHOLDS:
            bad("source.thresholds", f"unknown threshold {t!r}; allowed: {', '.join(ARSC_THRESHOLDS)}")
    dd = Path(data_dir)
    return SourceSpec(type=kind, data_dir=dd if dd.is_absolute() else (here / dd).resolve(), domains=domain_list, thresholds=thresholds)


def default_cards_dir() -> Path:
    """`data_cards/` of the source checkout, else the copy shipped inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "data_cards", here / "data_cards"):
        if candidate.is_dir():
            return candidate
    raise DataError("no data_cards folder found; pass --cards DIR")


def discover_cards(folder: str | Path | Sequence[str | Path] | None = None) -> list[ScenarioCard]:
    """Every card in a folder (recursively), a single card file, or a sequence of those."""
    if isinstance(folder, (list, tuple)):
        return [card for item in folder for card in discover_cards(item)]
    folder = Path(folder) if folder else default_cards_dir()
    if folder.is_file():
        return [load_card(folder)]
    if not folder.is_dir():
        raise DataError(f"card folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*.md") if p.name.lower() != "readme.md")
    return [load_card(p) for p in paths]
