"""The card-driven presets of the comparison bench: `bench suite` (any cards, targets by pattern) and
`bench synthetic` (the built-in suite's held-out scenarios).

A preset only says which scenarios are targets and which train the inits; `bench.compare.compare`
does the rest. Targets are refused when a training or validation pattern also matches them, so a
suite can never score a scenario it trained on, whatever the patterns say.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Sequence

from metalora.bench.compare import BenchOptions, TargetTask, Training, compare
from metalora.config import MetaTrainConfig, load_config
from metalora.errors import ConfigError, DataError


def parse_patterns(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """`a/*,b/c` -> ('a/*', 'b/c'); None or empty -> ()."""
    if not spec:
        return ()
    items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
    return tuple(dict.fromkeys(p.strip() for p in items if p.strip()))


def card_sources(extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """data_cards/ plus the card files or folders given with --cards (each must exist)."""
    from metalora.cards import default_cards_dir

    out = [default_cards_dir()]
    for item in extra:
        p = Path(item)
        if not p.exists():
            raise DataError(f"--cards: {p} does not exist; give a card file (.md) or a folder of cards")
        out.append(p)
    return tuple(dict.fromkeys(out))


def _match(names: Sequence[str], patterns: Sequence[str], flag: str) -> list[str]:
    out: dict[str, None] = {}
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ConfigError(f"{flag}: {pat!r} matches no scenario; see `metalora scenarios`")
        out.update(dict.fromkeys(hits))
    return list(out)


def parse_support_split(spec: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`train` or `arsc/*=dev,train`: a default split and (pattern, split) overrides, first match wins.

    Why per pattern: a suite mixes sources whose protocols differ; ECOM-dev draws ARSC-dev's supports
    from `.dev` (music has no `.train`) and the table scenarios' from `train`.
    """
    default, overrides = None, []
    for item in (x.strip() for x in str(spec).split(",")):
        if not item:
            continue
        if "=" in item:
            pattern, _, split = item.partition("=")
            if not pattern.strip() or not split.strip():
                raise ConfigError(f"--support-split: {item!r} must look like PATTERN=SPLIT, e.g. 'arsc/*=dev'")
            overrides.append((pattern.strip(), split.strip()))
        elif default is not None:
            raise ConfigError(f"--support-split: two default splits ({default!r}, {item!r}); give one, plus PATTERN=SPLIT overrides")
        else:
            default = item
    if default is None:
        raise ConfigError(f"--support-split: {spec!r} names no default split; e.g. 'train' or 'arsc/*=dev,train'")
    return default, tuple(overrides)


def suite_targets(patterns: Sequence[str], support_split: str, sources: Sequence[Path]) -> list[TargetTask]:
    """Every scenario a target pattern matches; each must have its support split and a test split."""
    from metalora.scenarios import all_scenarios

    if not patterns:
        raise ConfigError("--targets: give at least one scenario name or pattern, e.g. 'clothing/*/Blouses'")
    default, overrides = parse_support_split(support_split)
    known = all_scenarios(sources)
    tasks = []
    for name in _match(list(known), patterns, "--targets"):
        sc = known[name]
        split = next((s for pat, s in overrides if fnmatch.fnmatchcase(name, pat)), default)
        missing = [s for s in (split, "test") if s not in sc.splits()]
        if missing:
            raise DataError(f"target {name}: no {' or '.join(missing)} split (has {', '.join(sc.splits())}); "
                            f"its support comes from {split} (--support-split {support_split}) and its scores from test")
        tasks.append(TargetTask(name, sc, split))
    return tasks


def suite_training(train: Sequence[str], val: Sequence[str], opts: BenchOptions, targets: Sequence[TargetTask],
                   sources: Sequence[Path]) -> Training:
    """Training and validation scenarios: --train (else the meta config's scenarios) minus the config's exclude,
    and --val (else the config's val_scenarios).

    A target among them is refused, never silently dropped: the patterns say what the user believes
    the init trains on, and a pattern that covers a target means that belief is wrong.
    """
    from metalora.scenarios import all_scenarios

    cfg = load_config(MetaTrainConfig, opts.meta_config, list(opts.meta_overrides))
    known = all_scenarios(sources)
    patterns, exclude = (tuple(train) if train else cfg.scenarios), cfg.exclude
    names = [n for n in _match(list(known), patterns, "--train" if train else f"{opts.meta_config or 'meta config'}: scenarios")
             if not any(fnmatch.fnmatchcase(n, e) for e in exclude) and not (cfg.exclude_heldout and known[n].card.heldout)]
    target_names = {t.name for t in targets}
    hit = sorted(target_names & set(names))
    if hit:
        raise ConfigError(f"{'--train' if train else 'the meta config scenarios'} (minus exclude) also match target(s) "
                          f"{', '.join(hit[:3])}{' and more' if len(hit) > 3 else ''}; exclude them from training")
    val_patterns = tuple(val) if val else cfg.val_scenarios
    val_names = _match(list(known), val_patterns, "--val" if val else "val_scenarios") if val_patterns else []
    hit = sorted(target_names & set(val_names))
    if hit:
        raise ConfigError(f"{'--val' if val else 'val_scenarios'} also match target(s) {', '.join(hit[:3])}"
                          f"{' and more' if len(hit) > 3 else ''}; validate on scenarios that are neither trained on nor targets")
    families: dict[str, int] = {}
    for n in names:
        families[known[n].family] = families.get(known[n].family, 0) + 1
    return Training(tuple(names), cards_dir=tuple(sources), exclude=(), exclude_heldout=False,
                    val_pool=tuple(v for v in val_names if v not in names), val_scenarios=tuple(val_names),
                    describe={"domains": None, "scenarios": names, "families": families, "val_scenarios": val_names})


def run_suite(targets: Sequence[str], opts: BenchOptions, *, train: Sequence[str] = (), val: Sequence[str] = (),
              cards: Sequence[str | Path] = (), support_split: str = "train") -> dict:
    sources = card_sources(cards)
    tasks = suite_targets(targets, support_split, sources)
    needs_training = opts.needs_training
    training = (suite_training(train, val, opts, tasks, sources) if needs_training or train or val
                else Training((), cards_dir=tuple(sources), describe={"domains": None, "scenarios": []}))
    opts.benchmark = "suite"
    return compare(list(tasks), training, opts)


def synthetic_targets() -> list[TargetTask]:
    from metalora.scenarios import get_scenario
    from metalora.synthetic import heldout_names

    return [TargetTask(f"synthetic/{n}", get_scenario(f"synthetic/{n}"), "train") for n in heldout_names()]


def synthetic_training() -> Training:
    from metalora.synthetic import train_names

    return Training(("synthetic/*",), None, exclude_heldout=True,
                    describe={"domains": None, "scenarios": [f"synthetic/{n}" for n in train_names()]})


def run_synthetic(opts: BenchOptions) -> dict:
    opts.benchmark = "synthetic"
    return compare(synthetic_targets(), synthetic_training(), opts)

