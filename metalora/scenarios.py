"""Scenarios: a card resolved to concrete data, loaded as `datasets.Dataset`s with `text` and `label`.

Every split is normalised to two columns, `text` (the card's text columns joined, each prefixed by its
name when there are several, so that "user profile" and "item" stay distinguishable to the encoder)
and `label` (an integer index into the card's label names). All checks on the data (files, columns,
labels) happen here, before any training starts, with errors that name the file and the field.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from metalora.cards import ARSC_SPLITS, ScenarioCard, discover_cards, load_card
from metalora.errors import DataError
from metalora.tables import ScenarioInfo, Skipped, expand_table


@dataclass(frozen=True)
class Scenario:
    """One scenario: a card plus, for multi-scenario cards, which part of it.

    ARSC cards set `arsc_task` (domain, threshold); table cards (metalora/tables.py) set `labels` (the
    classes this scenario keeps, which differ from scenario to scenario) and `info` (its key, label
    counts, dropped classes, split sizes and source table).
    """

    card: ScenarioCard
    name: str
    arsc_task: tuple[str, str] | None = None  # (domain, threshold)
    labels: tuple[str, ...] | None = None
    info: ScenarioInfo | None = field(default=None, compare=False, repr=False)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.labels if self.labels is not None else self.card.label_names

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def task_type(self) -> str:
        return self.card.task_type

    @property
    def family(self) -> str:
        return self.card.family

    @property
    def key(self) -> dict[str, str]:
        """For a table scenario, the value of each scenario column (e.g. {"subCategory": "Bags"}); else {}."""
        return dict(self.info.key) if self.info else {}

    def splits(self) -> tuple[str, ...]:
        src = self.card.source
        if self.info is not None:
            return tuple(s for s, _ in self.info.split_sizes)
        if src.type == "local":
            return tuple(s for s, _ in src.data_files)
        if src.type == "arsc":
            d, t = self.arsc_task
            return tuple(s for s in ARSC_SPLITS if arsc_file(src.data_dir, d, t, s).is_file())
        return ("train", "dev", "test")

    def load(self, split: str):
        """The split as a `datasets.Dataset` with columns `text` (str) and `label` (int)."""
        return _load_split(self, split)

    def source_rows(self, split: str) -> list[tuple[str, int]]:
        """For a table scenario, where each row of `load(split)` comes from: (split of the source table, row
        number in it, 0-based), in the same order; rows of different cards over one table are comparable when
        their `info.source_id` is equal. A text repeated in the table is kept once, with its first row."""
        if self.info is None:
            raise DataError(f"scenario {self.name}: source rows are known for table cards only (scenario_column, filter, ...)")
        return list(_part(self).rows[self._split(split)])

    def _split(self, split: str) -> str:
        if split not in self.splits():
            raise DataError(f"scenario {self.name}: no split {split!r}; available: {', '.join(self.splits())}")
        return split


def arsc_file(data_dir: Path, domain: str, threshold: str, split: str) -> Path:
    return Path(data_dir) / f"{domain}.{threshold}.{split}"


def arsc_domains(data_dir: Path) -> list[str]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"ARSC data folder {data_dir} does not exist; point source.data_dir (or --data-dir) at it")
    names = {p.name.split(".")[0] for p in data_dir.iterdir() if p.name.count(".") == 2 and p.name.split(".")[1] in ("t2", "t4", "t5")}
    return sorted(names)


def expand(card: ScenarioCard, domains: Sequence[str] | None = None) -> list[Scenario]:
    """A card's scenarios: one per ARSC domain x threshold (optionally only `domains`), one per value of a table
    card's scenario_column (scenarios left with fewer than two classes are skipped: see `skipped`), else one."""
    src = card.source
    if card.is_table:
        exp = expand_table(card)
        return [Scenario(card, name, labels=part.label_names, info=exp.infos[name]) for name, part in exp.parts.items()]
    if src.type != "arsc":
        return [Scenario(card, card.name)]
    available = arsc_domains(src.data_dir)
    wanted = list(domains) if domains is not None else (list(src.domains) if src.domains else available)
    missing = [d for d in wanted if d not in available]
    if missing:
        raise DataError(
            f"{card.path}: ARSC domain(s) {', '.join(missing)} have no files in {src.data_dir}; available: {', '.join(available)}"
        )
    return [Scenario(card, f"{card.name}/{d}.{t}", (d, t)) for d in wanted for t in src.thresholds]


def skipped(card: ScenarioCard) -> list[Skipped]:
    """A table card's scenarios that were not kept (fewer than two classes with min_per_class rows), with why."""
    return list(expand_table(card).skipped) if card.is_table else []


def all_scenarios(cards_dir: str | Path | None = None) -> dict[str, Scenario]:
    """Every scenario of every card; two cards that give the same scenario name are an error naming both."""
    out: dict[str, Scenario] = {}
    for card in discover_cards(cards_dir):
        for sc in expand(card):
            if sc.name in out:
                other = out[sc.name].card.path
                if other.resolve() == card.path.resolve():  # the same card reached twice (a folder and a file in it)
                    continue
                raise DataError(f"scenario name {sc.name!r} comes from two cards, {other} and {card.path}; "
                                "change metalora.name in one of them")
            out[sc.name] = sc
    return out


def get_scenario(name: str, cards_dir: str | Path | None = None) -> Scenario:
    """A scenario by name (`synthetic/sentiment/kitchen`, `arsc/music.t2`, `fashion/article_type/Bags`) or by
    card path (a card with one scenario)."""
    if name.endswith(".md") or Path(name).is_file():
        card = load_card(name)
        scenarios = expand(card)
        if len(scenarios) != 1 and card.is_table:
            raise DataError(f"card {name} expands into {len(scenarios)} scenarios; name one of them, e.g. "
                            f"{', '.join(sc.name for sc in scenarios[:3])} (see `metalora scenarios`)")
        return scenarios[0]
    for card in discover_cards(cards_dir):
        if not (name == card.name or name.startswith(card.name + "/")):
            continue
        if card.source.type == "arsc":  # resolve ARSC names without reading every other card
            domain, _, thr = name[len(card.name) + 1:].rpartition(".")
            if thr not in card.source.thresholds:
                raise DataError(f"unknown ARSC threshold {thr!r} in {name!r}; use one of {', '.join(card.source.thresholds)}")
            return expand(replace(card, source=replace(card.source, thresholds=(thr,))), [domain])[0]
        if name == card.name and not card.is_table:
            return expand(card)[0]
        if card.is_table:  # read only this card's table
            for sc in expand(card):
                if sc.name == name:
                    return sc
            for sk in skipped(card):
                if sk.name == name:
                    raise DataError(f"scenario {name!r} of {card.path} was skipped: {sk.reason}; lower metalora.min_per_class "
                                    "or choose another scenario")
    scenarios = all_scenarios(cards_dir)
    if name not in scenarios:
        import difflib

        close = difflib.get_close_matches(name, scenarios, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else " List them with `metalora scenarios`."
        raise DataError(f"unknown scenario {name!r}.{hint}")
    return scenarios[name]


# ---------------------------------------------------------------------------------------------
# loading


def _join(row: dict, columns: Sequence[str]) -> str:
    if len(columns) == 1:
        return str(row[columns[0]])
    return " | ".join(f"{c.replace('_', ' ')}: {row[c]}" for c in columns)


def _normalise(ds, sc: Scenario, where: str):
    from datasets import Dataset

    card = sc.card
    missing = [c for c in (*card.text_columns, card.label_column) if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{where}: column(s) {', '.join(missing)} not found (columns present: {', '.join(ds.column_names)}); "
            f"fix text_columns / label_column in {card.path}"
        )
    names = list(card.label_names)
    index = {n: i for i, n in enumerate(names)}
    labels = []
    for row_no, raw in enumerate(ds[card.label_column]):
        if isinstance(raw, str) and raw in index:
            labels.append(index[raw])
        elif isinstance(raw, (int, np.integer)) and not isinstance(raw, bool) and 0 <= int(raw) < len(names):
            labels.append(int(raw))
        else:
            raise DataError(
                f"{where}: row {row_no} has label {raw!r} in column {card.label_column!r}, which is not one of the card's "
                f"label_names {names} (nor an index 0..{len(names) - 1}); fix the data or label_names in {card.path}"
            )
    texts = [_join(row, card.text_columns) for row in ds.select_columns(list(card.text_columns))]
    return Dataset.from_dict({"text": texts, "label": labels})


def _read_arsc(path: Path, where_label: str):
    from datasets import Dataset

    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            text, sep, label = line.rpartition("\t")
            label = label.strip()
            if not sep or label not in ("1", "-1"):
                raise DataError(f"{path}:{line_no}: expected `text<TAB>1` or `text<TAB>-1`, got label {label!r}")
            texts.append(text.strip())
            labels.append(1 if label == "1" else 0)
    return Dataset.from_dict({"text": texts, "label": labels})


def _part(sc: Scenario):
    part = expand_table(sc.card).parts.get(sc.name)
    if part is None:
        raise DataError(f"scenario {sc.name} is no longer in {sc.card.path} (its data changed); list them with `metalora scenarios`")
    return part


@functools.lru_cache(maxsize=256)
def _load_split(sc: Scenario, split: str):
    src = sc.card.source
    if sc.card.is_table:
        from datasets import Dataset

        part = _part(sc)
        split = sc._split(split)
        return Dataset.from_dict({"text": part.texts[split], "label": part.labels[split].tolist()})
    if src.type == "arsc":
        domain, thr = sc.arsc_task
        path = arsc_file(src.data_dir, domain, thr, split)
        if not path.is_file():
            raise DataError(f"scenario {sc.name}: file {path} does not exist (splits found: {', '.join(sc.splits()) or 'none'})")
        return _read_arsc(path, sc.name)
    if src.type == "synthetic":
        from metalora.synthetic import generate

        dsd = generate(src.generator, seed=src.seed)
        if split not in dsd:
            raise DataError(f"scenario {sc.name}: no split {split!r}; available: {', '.join(dsd)}")
        return _normalise(dsd[split], sc, f"{sc.card.path} (generator {src.generator}, split {split})")
    if src.type == "local":
        files = dict(src.data_files)
        if split not in files:
            raise DataError(f"{sc.card.path}: no data file for split {split!r}; source.data_files has {', '.join(files)}")
        for f in files[split]:
            if not Path(f).is_file():
                raise DataError(f"{sc.card.path}: data file {f} (split {split}) does not exist; fix source.data_files")
        from datasets import load_dataset

        try:
            ds = load_dataset(src.format, data_files={split: list(files[split])}, split=split)
        except Exception as exc:  # datasets raises many types for unreadable files
            raise DataError(f"{sc.card.path}: cannot read {', '.join(files[split])} as {src.format}: {exc}") from None
        return _normalise(ds, sc, f"{', '.join(files[split])}")
    # hub
    from datasets import load_dataset

    try:
        ds = load_dataset(src.dataset, src.config, split=split, revision=src.revision)
    except Exception as exc:
        raise DataError(
            f"{sc.card.path}: cannot load Hub dataset {src.dataset!r} split {split!r} ({type(exc).__name__}: {str(exc)[:200]}); "
            "it must be in the local datasets cache when there is no internet"
        ) from None
    return _normalise(ds, sc, f"Hub dataset {src.dataset} split {split}")


# ---------------------------------------------------------------------------------------------
# support sets


def sample_support(ds, shots: int, seed: int, num_labels: int, where: str = "support"):
    """K examples per class, drawn without replacement with a seeded generator (reproducible)."""
    if shots <= 0:
        raise DataError(f"{where}: shots must be >= 1, got {shots}")
    labels = np.asarray(ds["label"])
    if len(labels) == 0:
        raise DataError(f"{where}: the split is empty, there is nothing to sample a support set from")
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < shots:
            raise DataError(
                f"{where}: asked for {shots} shots of class {c} but the split has only {len(idx)}; lower --shots to {len(idx)} or less"
            )
        picked.extend(rng.choice(idx, size=shots, replace=False).tolist())
    rng.shuffle(picked)
    return ds.select(picked)


def check_support(ds, num_labels: int, where: str) -> None:
    if len(ds) == 0:
        raise DataError(f"{where}: the support set is empty; give at least one labelled example per class")
    present = set(int(x) for x in ds["label"])
    if len(present) < 2:
        raise DataError(f"{where}: the support set has examples of one class only ({sorted(present)}); give at least two classes")
