"""Table cards: one table (local files or a Hub dataset) cut into many scenarios, as a marketplace holds its data.

A card with a `scenario_column` says "one scenario per value of this column (or combination of these
columns)"; `filter` keeps some rows, `label_rule` derives the label from a column (star rating -> negative /
positive), and `min_per_class` keeps a scenario's classes that have enough rows for a support set and a
test split. The table is read once per process (cached on the files' size and mtime) and every scenario of
a card is cut from that one frame, so listing hundreds of scenarios takes about a second.

Rules that keep evaluation honest by construction (each is counted and shown by `metalora scenarios`):
- a text that occurs under two scenario keys of one card is dropped from both, so holding out scenarios by
  name (`fashion/*/Bags`) never leaves a held-out text in a training scenario of that card;
- within a scenario a text is kept once; a text carrying two labels there is dropped (it cannot be right);
- when the data has no test split, test is cut per scenario and per class by a seeded hash of the text
  (`SplitSpec`): stratified, reproducible, independent of row order, and a text never straddles train and
  test. When the data brings its own test split, texts found in both are reported with a `DataWarning`.
"""
from __future__ import annotations

import functools
import hashlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metalora.cards import Condition, ScenarioCard, SourceSpec, SplitSpec, cell_text
from metalora.errors import DataError, DataWarning

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
MIN_TEST_PER_CLASS = 5


def slug(value: str) -> str:
    """A value as one scenario-name part: runs of characters other than letters, digits, `.`, `_`, `-`
    become `_` (so names have no spaces, slashes or glob characters); case is kept (`Fine gauge` ->
    `Fine_gauge`)."""
    return _SLUG.sub("_", value).strip("_")


@dataclass(frozen=True)
class ScenarioInfo:
    """What the expansion found for one scenario (shown by `metalora scenarios`)."""

    key: tuple[tuple[str, str], ...]  # (scenario column, value) pairs, values as in the table
    label_counts: tuple[tuple[str, int], ...]  # kept classes (rows after de-duplication)
    dropped_classes: tuple[tuple[str, int], ...]  # classes below min_per_class
    split_sizes: tuple[tuple[str, int], ...]
    source_id: str  # the table the rows come from (its files or Hub id), for comparing rows across cards


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass
class Part:
    """One scenario's rows, per split: texts, label indices and (source split, row) of each row."""

    label_names: tuple[str, ...]
    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    rows: dict[str, list[tuple[str, int]]]


@dataclass
class Expansion:
    card: ScenarioCard
    parts: dict[str, Part]
    infos: dict[str, ScenarioInfo]
    skipped: list[Skipped]
    dropped_rows: dict[str, int] = field(default_factory=dict)  # reason -> rows left out of every scenario
    table_rows: int = 0


# ---------------------------------------------------------------------------------------------
# reading


def source_id(src: SourceSpec) -> str:
    if src.type == "hub":
        return f"hub:{src.dataset}:{src.config or ''}:{src.revision or ''}"
    return "local:" + ";".join(f"{s}={','.join(fs)}" for s, fs in src.data_files)


def _stamp(src: SourceSpec) -> tuple:
    """Size and mtime of every local file, so an edited file is read again."""
    out = []
    for _, files in src.data_files:
        for f in files:
            p = Path(f)
            st = p.stat() if p.is_file() else None
            out.append((f, st.st_size if st else -1, st.st_mtime_ns if st else -1))
    return tuple(out)


def read_table(card: ScenarioCard):
    """Every split of the card's source as one pandas frame, plus `__split__` and `__row__` columns."""
    return _read_table(card.source, _stamp(card.source), card.path)


@functools.lru_cache(maxsize=16)
def _read_table(src: SourceSpec, stamp: tuple, card_path: Path):
    import pandas as pd

    frames = []
    if src.type == "hub":
        from datasets import load_dataset

        try:
            dsd = load_dataset(src.dataset, src.config, revision=src.revision)
        except Exception as exc:
            raise DataError(f"{card_path}: cannot load Hub dataset {src.dataset!r} ({type(exc).__name__}: {str(exc)[:200]}); "
                            "it must be in the local datasets cache when there is no internet") from None
        splits = [(s, dsd[s].to_pandas()) for s in dsd]
    else:
        splits = [(split, _read_local(src, split, files, card_path)) for split, files in src.data_files]
    for split, df in splits:
        df = df.reset_index(drop=True)
        df["__split__"] = split
        df["__row__"] = np.arange(len(df))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _read_local(src: SourceSpec, split: str, files: tuple[str, ...], card_path: Path):
    import pandas as pd

    for f in files:
        if not Path(f).is_file():
            raise DataError(f"{card_path}: data file {f} (split {split}) does not exist; fix source.data_files")
    if src.format == "csv":
        return pd.concat([_read_csv(f, src.extra_fields, card_path) for f in files], ignore_index=True)
    from datasets import load_dataset

    try:
        ds = load_dataset(src.format, data_files={split: list(files)}, split=split)
    except Exception as exc:  # datasets raises many types for unreadable files
        raise DataError(f"{card_path}: cannot read {', '.join(files)} as {src.format}: {exc}") from None
    return ds.to_pandas()


def _read_csv(path: str, extra_fields: str, card_path: Path):
    """pandas' CSV reader, after a pass of the csv module that catches rows with more fields than the header
    (pandas would silently shift such a file by one column when the first data row is the long one). With
    `join_last` such rows get their extra fields folded back into the last column instead."""
    import csv
    import io

    import pandas as pd

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            rows, width, long_rows = [], None, 0
            for row in reader:
                if width is None:
                    width = len(row)
                elif len(row) > width:
                    if extra_fields != "join_last":
                        raise DataError(f"{card_path}: cannot read {path} as csv: line {reader.line_num} has {len(row)} "
                                        f"fields where the header has {width}; quote that field, or set "
                                        "source.extra_fields: join_last when the last column holds unquoted commas")
                    row = row[:width - 1] + [",".join(row[width - 1:])]
                    long_rows += 1
                rows.append(row)
        if not long_rows:
            return pd.read_csv(path)
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        buf.seek(0)
        return pd.read_csv(buf)
    except (UnicodeDecodeError, OSError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{card_path}: cannot read {path} as csv: {str(exc).strip()}") from None


# ---------------------------------------------------------------------------------------------
# expansion


def expand_table(card: ScenarioCard) -> Expansion:
    """The card's scenarios, cut from its table (cached per card and file stamp)."""
    return _expand(card, _stamp(card.source))


def _files(card: ScenarioCard) -> str:
    if card.source.type == "hub":
        return f"Hub dataset {card.source.dataset}"
    return ", ".join(Path(f).name for _, fs in card.source.data_files for f in fs)


def _check_columns(card: ScenarioCard, columns: list[str]) -> None:
    wanted = [("scenario_column", c) for c in card.scenario_columns] + [("filter", c) for c, _ in card.filter]
    wanted += [("label_column", card.label_column)] + [("text_columns", c) for c in card.text_columns]
    for fieldname, col in wanted:
        if col not in columns:
            raise DataError(f"{card.path}: metalora.{fieldname}: column {col!r} is not in {_files(card)} "
                            f"(columns: {', '.join(c for c in columns if not c.startswith('__'))})")


def _matches(card: ScenarioCard, fieldname: str, column: str, values, cond: Condition) -> np.ndarray:
    """Boolean mask of the cells meeting `cond`; missing cells never match."""
    import pandas as pd

    present = values.notna().to_numpy()
    if cond.op == "in":
        return present & np.isin(cells(values).astype(str), list(cond.values))
    numbers = pd.to_numeric(values, errors="coerce")
    bad = present & numbers.isna().to_numpy()
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(f"{card.path}: metalora.{fieldname}: column {column!r} holds non-numbers (e.g. {example!r}), "
                        f"so {cond.op} {cond.number:g} cannot apply; list the values instead")
    ops = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal}
    return present & ops[cond.op](numbers.to_numpy(dtype=float, na_value=np.nan), cond.number)


def cells(values) -> np.ndarray:
    """A column as text (object array), None where the cell is missing; whole floats lose their `.0`
    (a column of ints with a gap is read as floats), as `cards.cell_text` does for one value."""
    import pandas as pd

    present = values.notna().to_numpy()
    out = np.full(len(values), None, dtype=object)
    kept = values[present]
    if pd.api.types.is_float_dtype(kept.dtype) and (kept == kept.round()).all():
        kept = kept.astype("int64")
    out[present] = kept.astype(str).to_numpy(dtype=object)
    return out


@functools.lru_cache(maxsize=32)
def _table_texts(src: SourceSpec, stamp: tuple, card_path: Path, columns: tuple[str, ...]) -> np.ndarray:
    """The text columns of the whole table as one string per row (None when every part is empty); with
    several columns each part is prefixed by its column name (`Title: ... | Review Text: ...`) and empty
    cells are left out. Cached: the cards over one table usually share their text columns."""
    table = _read_table(src, stamp, card_path)
    stripped = [[None if v is None else (v.strip() or None) for v in cells(table[c])] for c in columns]
    if len(columns) == 1:
        return np.array(stripped[0], dtype=object)
    names = [c.replace("_", " ") for c in columns]
    out = []
    for parts in zip(*stripped):
        joined = " | ".join(f"{n}: {v}" for n, v in zip(names, parts) if v is not None)
        out.append(joined or None)
    return np.array(out, dtype=object)


def _labels(card: ScenarioCard, df) -> np.ndarray:
    """Each row's label name, or None for a row the card leaves out (missing cell, rule matching none)."""
    values = df[card.label_column]
    n = len(df)
    if card.label_rule:
        out = np.full(n, None, dtype=object)
        hits = np.zeros(n, dtype=int)
        for name, cond in card.label_rule:
            mask = _matches(card, f"label_rule.{name}", card.label_column, values, cond)
            both = mask & (hits > 0)
            if both.any():
                i = int(np.flatnonzero(both)[0])
                raise DataError(f"{card.path}: metalora.label_rule: value {values.iloc[i]!r} of column {card.label_column!r} "
                                f"matches both {out[i]!r} and {name!r}; make the conditions exclusive")
            out[mask] = name
            hits += mask
        return out
    text = cells(values)
    if not card.label_names:
        return text
    raw = values.to_numpy()
    names = list(card.label_names)
    out = np.full(n, None, dtype=object)
    named = np.isin(text.astype(str), names) & (text != None)  # noqa: E711 (elementwise)
    out[named] = text[named]
    for i in np.flatnonzero((text != None) & ~named):  # noqa: E711
        v = raw[i]
        if isinstance(v, (int, np.integer, float, np.floating)) and float(v).is_integer() and 0 <= int(v) < len(names):
            out[i] = names[int(v)]
        else:
            raise DataError(
                f"{_files(card)}: row {df['__row__'].iloc[i]} of split {df['__split__'].iloc[i]} has label {v!r} in column "
                f"{card.label_column!r}, which is not one of the card's label_names {names} (nor an index 0..{len(names) - 1}); "
                f"fix the data or label_names in {card.path}")
    return out


@functools.lru_cache(maxsize=64)
def _expand(card: ScenarioCard, stamp: tuple) -> Expansion:
    import pandas as pd

    table = _read_table(card.source, stamp, card.path)
    _check_columns(card, list(table.columns))
    dropped: Counter = Counter()
    keep = np.ones(len(table), dtype=bool)
    for column, cond in card.filter:
        mask = _matches(card, f"filter.{column}", column, table[column], cond)
        if not mask.any():
            seen = sorted({cell_text(v) for v in table[column].dropna().unique()})
            raise DataError(f"{card.path}: metalora.filter: {column} {cond.describe()} keeps no rows of {_files(card)} "
                            f"(values there: {', '.join(seen[:15])}{', ...' if len(seen) > 15 else ''})")
        keep &= mask
    if not keep.any():
        raise DataError(f"{card.path}: metalora.filter keeps no rows of {_files(card)}: each condition matches some rows, "
                        "but no row meets all of them")
    dropped["filtered out"] = int((~keep).sum())
    df = table[keep]

    texts = _table_texts(card.source, stamp, card.path, card.text_columns)[keep]
    columns = [cells(df[c]) for c in card.scenario_columns]
    keys = ["\x1f".join(k) if None not in k else None for k in zip(*columns)] if columns else [""] * len(df)
    with pd.option_context("future.infer_string", False):  # plain object columns: no arrow copies per filter
        frame = pd.DataFrame({"split": df["__split__"].to_numpy(dtype=object), "row": df["__row__"].to_numpy(),
                              "text": texts, "label": _labels(card, df), "key": np.array(keys, dtype=object)})
    for reason, column in (("empty text", "text"), ("missing scenario_column value", "key")):
        mask = frame[column].isna()
        dropped[reason] += int(mask.sum())
        frame = frame[~mask]
    if card.scenario_columns:  # the same text under two scenario keys: dropped from both (no leak across keys)
        per_text = frame.groupby("text")["key"].nunique()
        shared = frame["text"].isin(per_text.index[per_text > 1])
        dropped["text under two scenario keys"] = int(shared.sum())
        frame = frame[~shared]
    unlabelled = frame["label"].isna()
    dropped["no label (missing cell" + (" or no label_rule match)" if card.label_rule else ")")] = int(unlabelled.sum())
    frame = frame[~unlabelled]
    # within a scenario and split: a text with two labels is dropped, a repeated text is kept once
    nlab = frame.groupby(["key", "split", "text"])["label"].transform("nunique")
    dropped["same text, two labels"] = int((nlab > 1).sum())
    frame = frame[nlab <= 1]
    dup = frame.duplicated(["key", "split", "text"])
    dropped["repeated text"] = int(dup.sum())
    frame = frame[~dup]

    _check_slugs(card, [k.split("\x1f") for k in frame["key"].unique()] if card.scenario_columns else [])
    splits_present = [s for s, _ in card.source.data_files] if card.source.type == "local" else sorted(table["__split__"].unique())
    cut = "test" not in splits_present and bool(card.split or card.scenario_columns)
    if cut and "train" not in splits_present:
        raise DataError(f"{card.path}: metalora.split: the data has no test split and no train split to cut one from "
                        f"(splits: {', '.join(splits_present)}); name one of source.data_files `train`")
    spec = card.split or SplitSpec()
    order = list(card.label_names)
    exp = Expansion(card, {}, {}, [], {k: v for k, v in dropped.items() if v}, len(table))
    for key_text, group in frame.groupby("key", sort=True):
        key = tuple(key_text.split("\x1f")) if card.scenario_columns else ()
        name = "/".join([card.name, *(slug(v) for v in key)])
        counts = group["label"].value_counts()
        floor = card.min_per_class or 1
        kept = [lab for lab in (order or sorted(counts.index)) if counts.get(lab, 0) >= floor]
        low = [(lab, int(counts[lab])) for lab in (order or sorted(counts.index)) if lab in counts.index and lab not in kept]
        if len(kept) < 2:
            left = ", ".join(f"{lab}={int(counts[lab])}" for lab in kept) or "none"
            below = f"; below min_per_class={floor}: " + ", ".join(f"{lab}={n}" for lab, n in low) if low else ""
            exp.skipped.append(Skipped(name, f"fewer than two classes left ({left}{below})"))
            continue
        group = group[group["label"].isin(kept)]
        index = {lab: i for i, lab in enumerate(kept)}
        assign = group["split"].to_numpy().copy()
        if cut:
            is_train = assign == "train"
            assign[is_train] = _cut(group[is_train], spec)
        part = Part(tuple(kept), {}, {}, {})
        for split in dict.fromkeys([*splits_present, *(["test"] if cut else [])]):
            rows = group[assign == split]
            part.texts[split] = rows["text"].tolist()
            part.labels[split] = np.array([index[lab] for lab in rows["label"]], dtype=np.int64)
            part.rows[split] = list(zip(rows["split"].tolist(), rows["row"].astype(int).tolist()))
        if not cut and "test" in part.texts:
            _warn_overlap(card, name, part)
        exp.parts[name] = part
        exp.infos[name] = ScenarioInfo(
            key=tuple(zip(card.scenario_columns, key)),
            label_counts=tuple((lab, int(counts[lab])) for lab in kept),
            dropped_classes=tuple(low),
            split_sizes=tuple((s, len(t)) for s, t in part.texts.items()),
            source_id=source_id(card.source),
        )
    return exp


def _check_slugs(card: ScenarioCard, keys) -> None:
    for i, column in enumerate(card.scenario_columns):
        by_slug: dict[str, set] = {}
        for k in keys:
            by_slug.setdefault(slug(k[i]), set()).add(k[i])
        for s, raw in by_slug.items():
            if not s:
                raise DataError(f"{card.path}: metalora.scenario_column: value {sorted(raw)[0]!r} of column {column!r} "
                                "has no letter or digit to name a scenario by; filter those rows out")
            if len(raw) > 1:
                raise DataError(f"{card.path}: metalora.scenario_column: values {sorted(raw)} of column {column!r} would "
                                f"all name scenarios {s!r}; filter or merge them")


def _rank(texts, seed: int) -> np.ndarray:
    """A seeded pseudo-random order of texts that depends on the texts only (not on row order)."""
    keys = [hashlib.blake2b(f"{seed}\x00{t}".encode("utf-8"), digest_size=8).digest() for t in texts]
    return np.argsort(np.array(keys, dtype="S8"), kind="stable")


def _cut(rows, spec: SplitSpec) -> np.ndarray:
    """`train`/`test` for each of a scenario's train rows: per class, the texts with the smallest seeded hash
    go to test, `spec.test` of the class (at least one row, never all). `test_max` caps the scenario's test
    rows, shared out by class size, but a class keeps at least `MIN_TEST_PER_CLASS` test rows (or its uncapped
    share when that is smaller) so that per-class scores (macro-F1) still mean something."""
    labels = rows["label"].to_numpy()
    texts = rows["text"].to_numpy()
    n = len(rows)
    out = np.full(n, "train", dtype=object)
    total = min(spec.test * n, spec.test_max) if spec.test_max is not None else spec.test * n
    for lab in dict.fromkeys(labels):
        idx = np.flatnonzero(labels == lab)
        if len(idx) < 2:
            continue
        share = spec.test * len(idx)
        want = max(total * len(idx) / n, min(share, MIN_TEST_PER_CLASS))
        k = min(max(int(round(want)), 1), len(idx) - 1)
        out[idx[_rank(texts[idx], spec.seed)[:k]]] = "test"
    return out


def _warn_overlap(card: ScenarioCard, name: str, part: Part) -> None:
    train = set(part.texts.get("train", ()))
    both = [t for t in part.texts["test"] if t in train]
    if both:
        warnings.warn(f"{card.path}: scenario {name}: {len(both)} of {len(part.texts['test'])} test texts also occur in "
                      f"its train split (e.g. {both[0][:60]!r}); scores on them measure memory, not adaptation. "
                      "Drop the test file from source.data_files to have metalora cut a clean split", DataWarning, stacklevel=2)
