"""Scenario cards: Hugging Face dataset cards (Markdown + YAML header) that describe a scenario.

The card is the single source of truth for where a scenario's data is, which columns are the
text inputs, which is the label, the label names, the task type and the metrics. It is parsed into a
frozen `ScenarioCard` and validated here, in one place, with messages that name the file and field.
One card can describe many scenarios: the ARSC card expands into one scenario per domain x threshold,
and a table card (`scenario_column`) into one scenario per value of that column (see metalora/tables.py).
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
EXTRA_FIELDS = ("error", "join_last")
CONDITION_OPS = ("<=", ">=", "!=", "==", "<", ">")
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
    extra_fields: str = "error"  # local csv: what a row with more fields than the header means


@dataclass(frozen=True)
class Condition:
    """A test on one cell: `in` a set of values (compared as text, 1 == 1.0) or a numeric comparison.

    Written in a card as a list of values (`[Apparel, Footwear]`), one value (`Bags`) or a comparison
    string (`"<= 2"`); used by `filter` (which rows a card keeps) and `label_rule` (which label a row gets).
    """

    op: str  # "in" or one of CONDITION_OPS
    values: tuple[str, ...] = ()
    number: float = 0.0

    def describe(self) -> str:
        return f"in {list(self.values)}" if self.op == "in" else f"{self.op} {self.number:g}"


@dataclass(frozen=True)
class SplitSpec:
    """How a table card cuts a test split out of `train` when the data has none.

    Per scenario, per class: the class's distinct texts are ordered by a seeded hash of the text and the
    first `test` fraction goes to test, so the split is stratified, reproducible, independent of row
    order, and a text never sits on both sides.
    """

    test: float = 0.3
    seed: int = 0
    test_max: int | None = None  # cap on a scenario's test rows (classes keep their proportions)


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
    verbalizer: tuple[tuple[str, str], ...] | None = None  # label-word scoring: (label name, its word); others are their own word
    pretty_name: str = ""
    body: str = field(default="", repr=False)
    # table cards (metalora/tables.py): one table -> many scenarios
    scenario_columns: tuple[str, ...] = ()
    filter: tuple[tuple[str, Condition], ...] = ()
    label_rule: tuple[tuple[str, Condition], ...] = ()
    min_per_class: int | None = None
    split: SplitSpec | None = None

    @property
    def num_labels(self) -> int:
        """The card's declared label count; 0 when the labels come from the data (see `Scenario.label_names`)."""
        return len(self.label_names)

    @property
    def is_table(self) -> bool:
        """Whether the card goes through metalora/tables.py (filter, label rule, expansion, split)."""
        return bool(self.scenario_columns or self.filter or self.label_rule or self.min_per_class or self.split)


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


_CARD_KEYS = {"name", "family", "task_type", "text_columns", "label_column", "label_names", "metrics", "source", "heldout",
              "scenario_column", "filter", "label_rule", "min_per_class", "split",
              "verbalizer"}
_SPLIT_KEYS = {"test", "seed", "test_max"}
_SOURCE_KEYS = {
    "local": {"type", "format", "data_files", "extra_fields"},
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
    scenario_columns = ()
    if "scenario_column" in meta:
        scenario_columns = _str_list(meta["scenario_column"]) or ()
        if not scenario_columns or len(set(scenario_columns)) != len(scenario_columns):
            bad("scenario_column", "must name one column or a list of distinct columns, e.g. subCategory or [polarity, hotel]")
    row_filter = _parse_conditions(meta.get("filter"), "filter", bad, what="column")
    label_rule = _parse_conditions(meta.get("label_rule"), "label_rule", bad, what="label name")
    min_per_class = meta.get("min_per_class")
    if min_per_class is not None and (isinstance(min_per_class, bool) or not isinstance(min_per_class, int) or min_per_class < 1):
        bad("min_per_class", f"must be a whole number >= 1, got {min_per_class!r}")
        min_per_class = None
    split = _parse_split(meta.get("split"), bad) if "split" in meta else None
    table = bool(scenario_columns or row_filter or label_rule or min_per_class or split)
    label_names = _str_list(meta.get("label_names"))
    if "label_rule" in meta:
        if "label_names" in meta:
            bad("label_names", "give label_names or label_rule, not both: the rule's keys are the label names, in order")
        label_names = tuple(lab for lab, _ in label_rule)
        if label_rule and task_type in ("binary", "rare_positive") and len(label_names) != 2:
            bad("label_rule", f"a {task_type} task has exactly two labels (negative first), got {list(label_names)}")
    elif label_names is None and table and task_type == "multiclass" and "label_names" not in meta:
        label_names = ()  # each scenario's labels are the classes its rows hold
    elif not label_names or len(label_names) < 2:
        bad("label_names", "must list at least two label names"
            + (" (only a multiclass table card may leave them out, to take its labels from the data)" if table else ""))
        label_names = label_names or ()
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
    if table and source is not None and source.type not in ("local", "hub"):
        bad("source.type", f"scenario_column, filter, label_rule, min_per_class and split need a table: a local or hub source, not {source.type}")
    verbalizer = meta.get("verbalizer")
    if verbalizer is not None:
        ok = isinstance(verbalizer, dict) and all(isinstance(v, str) and v.strip() for v in verbalizer.values())
        unknown = sorted(set(map(str, verbalizer)) - set(label_names)) if ok and label_names else []
        if not ok or unknown:
            bad("verbalizer", (f"names no label: {', '.join(unknown)}; " if unknown else "")
                + "must map label names to non-empty words, e.g. {negative: bad, positive: good} (a label left out is its own word)")
        verbalizer = tuple((str(k), v) for k, v in verbalizer.items()) if ok and not unknown else None
    if problems:
        raise DataError(f"{path}: invalid scenario card:\n  " + "\n  ".join(problems))
    return ScenarioCard(
        path=path, name=name, family=family, task_type=task_type, text_columns=text_columns,
        label_column=label_column, label_names=label_names, metrics=tuple(metrics), source=source,
        heldout=heldout, verbalizer=verbalizer, pretty_name=str(header.get("pretty_name", name)), body=body,
        scenario_columns=scenario_columns, filter=row_filter, label_rule=label_rule, min_per_class=min_per_class,
        split=split,
    )


def parse_condition(value: Any) -> Condition | None:
    """`[a, b]` / `a` -> membership; `"<= 2"` -> a numeric comparison; None when it is neither."""
    if isinstance(value, str):
        text = value.strip()
        for op in CONDITION_OPS:
            if text.startswith(op):
                try:
                    return Condition(op, number=float(text[len(op):].strip()))
                except ValueError:
                    return None
    if isinstance(value, (list, tuple)) and value and all(_scalar(v) for v in value):
        return Condition("in", tuple(cell_text(v) for v in value))
    if _scalar(value):
        return Condition("in", (cell_text(value),))
    return None


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) != ""


def cell_text(value: Any) -> str:
    """How a cell (or a value in a card) is compared as text: 1, 1.0 and "1" are all "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return cell_text(value.item())
    return str(value)


def _parse_conditions(spec: Any, fieldname: str, bad, what: str) -> tuple[tuple[str, Condition], ...]:
    if spec is None:
        return ()
    if not isinstance(spec, dict) or not spec:
        bad(fieldname, f"must map each {what} to values (a list, or one value) or a comparison such as \"<= 2\"")
        return ()
    out = []
    for key, value in spec.items():
        cond = parse_condition(value)
        if cond is None:
            bad(f"{fieldname}.{key}", f"got {value!r}; write a list of values, one value, or a comparison "
                                      f"({', '.join(CONDITION_OPS)} followed by a number, e.g. \"<= 2\")")
            continue
        out.append((str(key), cond))
    if fieldname == "label_rule" and len(out) < 2 and len(out) == len(spec):
        bad(fieldname, "must give at least two labels, e.g. {negative: \"<= 2\", positive: \">= 4\"}")
    return tuple(out)


def _parse_split(spec: Any, bad) -> SplitSpec | None:
    if not isinstance(spec, dict):
        bad("split", "must be a mapping such as {test: 0.3, seed: 0} (optional: test_max)")
        return None
    for key in spec:
        if key not in _SPLIT_KEYS:
            bad(f"split.{key}", f"unknown field; known: {', '.join(sorted(_SPLIT_KEYS))}")
    default = SplitSpec()
    test, seed, test_max = spec.get("test", default.test), spec.get("seed", default.seed), spec.get("test_max")
    ok = True
    if isinstance(test, bool) or not isinstance(test, (int, float)) or not 0 < test < 1:
        bad("split.test", f"must be a fraction between 0 and 1 (exclusive), got {test!r}")
        ok = False
    if isinstance(seed, bool) or not isinstance(seed, int):
        bad("split.seed", f"must be an integer, got {seed!r}")
        ok = False
    if test_max is not None and (isinstance(test_max, bool) or not isinstance(test_max, int) or test_max < 1):
        bad("split.test_max", f"must be a whole number >= 1, got {test_max!r}")
        ok = False
    return SplitSpec(float(test), seed, test_max) if ok else None


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
        extra = src.get("extra_fields", "error")
        if extra not in EXTRA_FIELDS:
            bad("source.extra_fields", f"got {extra!r}; allowed: {', '.join(EXTRA_FIELDS)} "
                                       "(join_last: a csv row with more fields than the header joins the rest into its last column)")
        elif extra != "error" and fmt != "csv":
            bad("source.extra_fields", "only applies to format: csv")
        return SourceSpec(type=kind, format=fmt, data_files=tuple(resolved), extra_fields=extra if extra in EXTRA_FIELDS else "error")
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
