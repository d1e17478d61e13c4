"""Honest evaluation by construction: what a bench refuses before it trains or scores anything.

A target that an init trained or validated on, or whose test texts occur in the training data, would
score the init on what it has seen. Scenarios cut from one table share rows, so the check is on texts,
not on names; a few incidental duplicates (the same review posted in two ARSC domains) are dropped from
scoring and named instead of blocking the run.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from metalora.config import MetaTrainConfig
from metalora.errors import ConfigError, DataError
from metalora.scenarios import Scenario

if TYPE_CHECKING:
    from metalora.bench.compare import TargetTask, Training


def norm_text(text: str) -> str:
    return " ".join(str(text).lower().split())


def check_init_scenarios(init_meta: dict | None, targets: Sequence[TargetTask], flag: str) -> None:
    """Refuse an init whose recorded training or validation scenarios include a target."""
    meta = (init_meta or {}).get("meta") or {}
    seen = set(meta.get("suite") or []) | set(meta.get("val_scenarios") or [])
    hit = sorted(t.name for t in targets if t.name in seen)
    if hit:
        raise ConfigError(f"{flag}: this init was trained or validated on target(s) {', '.join(hit[:3])}"
                          f"{' and more' if len(hit) > 3 else ''} (its metalora.json meta.suite / meta.val_scenarios); "
                          "scoring it there would leak; train an init without them or choose other targets")


def overlap_with_training(targets: Sequence[TargetTask], scenarios: Sequence[tuple[Scenario, str]],
                          max_overlap: float) -> dict[str, set[str]]:
    """Normalised test texts of each target that also occur in a training split, refusing large overlaps.

    Scenarios cut from the same rows share texts; a target whose test set overlaps training by more
    than `max_overlap` is refused (naming the count and one example). Below that, the texts found are
    returned so the caller drops them from scoring and says so: incidental duplicates (the same review
    posted in two ARSC domains) must neither leak nor block the run.
    """
    seen: dict[str, str] = {}
    for sc, split in scenarios:
        if split not in sc.splits():
            continue
        for text in sc.load(split)["text"]:
            seen.setdefault(norm_text(text), sc.name)
    found: dict[str, set[str]] = {}
    for t in targets:
        texts = [norm_text(x) for x in t.test()["text"]]
        hits = {x for x in texts if x in seen}
        if not hits:
            continue
        share = sum(x in hits for x in texts) / len(texts)
        example = next(iter(sorted(hits)))
        if share > max_overlap:
            raise DataError(
                f"target {t.name}: {sum(x in hits for x in texts)} of its {len(texts)} test texts also occur in training "
                f"scenario(s) (e.g. {example[:80]!r} in {seen[example]}): the scenarios are cut from the same rows; "
                "exclude them from training (--train / exclude) or choose other targets"
            )
        found[t.name] = hits
    return found


def training_data(configs: dict[str, MetaTrainConfig], given: dict[str, dict], training: Training,
                   notes: list[str]) -> list[tuple[Scenario, str]]:
    """(scenario, split) pairs that the inits of this run train or validate on: from the configs of the
    inits to train, and from the scenarios a given init recorded (those this registry knows)."""
    from metalora.meta.episodes import select_scenarios
    from metalora.scenarios import all_scenarios

    used: list[tuple[Scenario, str]] = []
    for cfg in configs.values():
        used += [(sc, cfg.episodes.split) for sc in select_scenarios(cfg.scenarios, cfg.exclude, cfg.exclude_heldout,
                                                                        "scenarios", training.cards_dir)]
        if cfg.val_scenarios:
            used += [(sc, cfg.val_split) for sc in select_scenarios(cfg.val_scenarios, (), False, "val_scenarios",
                                                                    training.cards_dir)]
    if given:
        known = all_scenarios(training.cards_dir)
        for name, meta in given.items():
            rec = meta.get("meta") or {}
            config = rec.get("config") or {}
            pairs = [(n, (config.get("episodes") or {}).get("split", "train")) for n in rec.get("suite") or []]
            pairs += [(n, config.get("val_split", "test")) for n in rec.get("val_scenarios") or []]
            unknown = sorted({n for n, _ in pairs if n not in known})
            if unknown:
                notes.append(f"--{name}-init: {len(unknown)} of its recorded scenarios are not in this run's cards "
                             f"(e.g. {unknown[0]}); their texts were not checked against the targets")
            used += [(known[n], split) for n, split in pairs if n in known]
    return list(dict.fromkeys(used))
