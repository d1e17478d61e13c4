"""The ARSC preset of the comparison bench: targets and training domains from any folder in the ARSC layout.

ARSC layout: `<domain>.<t2|t4|t5>.<train|dev|test>`, lines `text<TAB>1|-1`. Training on ARSC data
from an arbitrary `--data-dir` works by writing a one-card folder (an `arsc` card whose data_dir is
that folder) and handing it to `MetaTrainer(cards_dir=...)`, so `metalora.meta` needs no change. The
comparison itself is `bench.compare.compare`, shared with `bench suite` and `bench synthetic`.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from metalora.bench.compare import BenchOptions, TargetTask, Training, compare
from metalora.bench.methods import parse_methods
from metalora.cards import ScenarioCard
from metalora.config import MetaTrainConfig, load_config
from metalora.errors import ConfigError, DataError
from metalora.scenarios import Scenario, arsc_domains, arsc_file

THRESHOLDS = ("t2", "t4", "t5")


def arsc_card(data_dir: Path, domains: Sequence[str] | None = None) -> ScenarioCard:
    """The ARSC card with its data folder replaced by `data_dir`."""
    from metalora.cards import default_cards_dir, load_card

    base = load_card(default_cards_dir() / "arsc.md")
    src = replace(base.source, data_dir=Path(data_dir).resolve(), domains=tuple(domains) if domains else base.source.domains,
                  thresholds=THRESHOLDS)
    return replace(base, source=src)


def _task(card: ScenarioCard, domain: str, thr: str, support_split: str) -> TargetTask:
    sc = Scenario(card, f"{card.name}/{domain}.{thr}", (domain, thr))
    return TargetTask(sc.name, sc, support_split, fixed_if_exact=(support_split == "train"))


def arsc_targets(data_dir: Path, targets: Sequence[str], support_split: str) -> list[TargetTask]:
    """`music` -> its t2/t4/t5 tasks (those with files); `music.t2` -> that task. Missing files are errors."""
    data_dir = Path(data_dir)
    if support_split not in ("train", "dev"):
        raise ConfigError(f"--support-split must be train or dev, got {support_split!r}")
    available = arsc_domains(data_dir)
    if not targets:
        raise ConfigError("--targets: name at least one target domain (e.g. music,camera_photo)")
    card = arsc_card(data_dir)
    tasks: list[TargetTask] = []
    for spec in targets:
        domain, _, thr = spec.partition(".")
        if thr and thr not in THRESHOLDS:
            raise ConfigError(f"--targets: {spec!r} has unknown threshold {thr!r}; use one of {', '.join(THRESHOLDS)}")
        if domain not in available:
            raise DataError(f"--targets: no files for domain {domain!r} in {data_dir} (domains there: {', '.join(available) or 'none'})")
        thrs = [thr] if thr else [t for t in THRESHOLDS if any(arsc_file(data_dir, domain, t, s).is_file() for s in ("train", "dev", "test"))]
        for t in thrs:
            for split in (support_split, "test"):
                path = arsc_file(data_dir, domain, t, split)
                if not path.is_file():
                    raise DataError(f"target {domain}.{t}: file {path} is missing (needed for the {'support set' if split != 'test' else 'evaluation'})")
            tasks.append(_task(card, domain, t, support_split))
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--targets: {', '.join(dup)} listed twice")
    return tasks


def _smallest_class(path: Path) -> int:
    counts = {"1": 0, "-1": 0}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            label = line.rstrip("\n").rpartition("\t")[2].strip()
            if label in counts:
                counts[label] += 1
    return min(counts.values())


def arsc_training(data_dir: Path, train_domains: str | Sequence[str], targets: Sequence[TargetTask],
                  cards_dir: Path, min_per_class: int = 0, val_split: str = "dev") -> Training:
    """Training tasks: every (domain, threshold) of the training domains that has a .train file.

    With `all`, a domain whose .train files cannot fill one episode (a class with fewer than
    `min_per_class` examples, e.g. tools_hardware) is skipped and named in the report. The tasks of
    the remaining non-target domains that have a `val_split` file form the validation pool.
    """
    data_dir = Path(data_dir)
    available = arsc_domains(data_dir)
    target_domains = sorted({t.scenario.arsc_task[0] for t in targets})
    explicit = not (isinstance(train_domains, str) and train_domains == "all")
    if explicit:
        wanted = [d.strip() for d in (train_domains.split(",") if isinstance(train_domains, str) else train_domains) if d.strip()]
        leak = [d for d in wanted if d in target_domains]
        if leak:
            raise ConfigError(f"--train-domains: {', '.join(leak)} {'is' if len(leak) == 1 else 'are'} also a target; "
                              "training on a target domain leaks its data into the comparison")
        missing = [d for d in wanted if d not in available]
        if missing:
            raise DataError(f"--train-domains: no files for {', '.join(missing)} in {data_dir}")
    else:
        wanted = [d for d in available if d not in target_domains]
    used, skipped, names = [], {}, []
    for d in wanted:
        thrs = [t for t in THRESHOLDS if arsc_file(data_dir, d, t, "train").is_file()]
        if not thrs:
            if explicit:
                raise DataError(f"--train-domains: domain {d!r} has no .train file in {data_dir}; it cannot be trained on")
            skipped[d] = "no .train file"
            continue
        if not explicit and min_per_class:
            small = min(_smallest_class(arsc_file(data_dir, d, t, "train")) for t in thrs)
            if small < min_per_class:
                skipped[d] = f"a class with {small} .train examples, fewer than one episode needs ({min_per_class})"
                continue
        used.append(d)
        names += [f"arsc/{d}.{t}" for t in thrs]
    val_tasks = [(d, t) for d in available if d not in target_domains and d not in used
                 for t in THRESHOLDS if arsc_file(data_dir, d, t, val_split).is_file()]
    return Training(tuple(names), cards_dir=cards_dir, exclude_heldout=False,
                    val_pool=tuple(f"arsc/{d}.{t}" for d, t in val_tasks),
                    describe={"data_dir": str(data_dir.resolve()), "domains": used, "skipped": skipped, "scenarios": names,
                              "val_domains": sorted({d for d, _ in val_tasks})})


def write_arsc_cards(data_dir: Path, domains: Sequence[str], folder: Path) -> Path:
    """A one-card folder: the ARSC card pointing at `data_dir`, restricted to `domains`."""
    from metalora.cards import default_cards_dir

    folder.mkdir(parents=True, exist_ok=True)
    text = (default_cards_dir() / "arsc.md").read_text(encoding="utf-8")
    import re

    text = re.sub(r"(?m)^(\s*data_dir:).*$", lambda m: f"{m.group(1)} {Path(data_dir).resolve()}", text, count=1)
    text = re.sub(r"(?m)^(\s*domains:).*$", lambda m: f"{m.group(1)} [{', '.join(domains)}]" if domains else f"{m.group(1)} all",
                  text, count=1)
    (folder / "arsc.md").write_text(text, encoding="utf-8")
    return folder


def run_arsc(data_dir: str | Path, targets: Sequence[str], train_domains: str | Sequence[str], support_split: str,
             opts: BenchOptions) -> dict:
    data_dir = Path(data_dir)
    parse_methods(opts.methods)
    tasks = arsc_targets(data_dir, targets, support_split)
    needs_training = opts.needs_training
    with tempfile.TemporaryDirectory(prefix="metalora-bench-cards-") as tmp:
        train_cfg = load_config(MetaTrainConfig, opts.meta_config, list(opts.meta_overrides))
        episodes, val_split = train_cfg.episodes, train_cfg.val_split
        need = episodes.k_shot + (-(-episodes.query_size // 2) if episodes.query_balance == "balanced" else 1)
        training = arsc_training(data_dir, train_domains, tasks, Path(tmp), min_per_class=need if needs_training else 0,
                                 val_split=val_split)
        if needs_training or any(m in opts.methods for m in ("select", "compose")):  # the library adapts to them too
            if not training.scenarios:
                raise DataError(f"no training domain with a .train file in {data_dir}; cannot train the meta / multitask inits")
            write_arsc_cards(data_dir, list(training.describe["domains"]) + training.describe["val_domains"], Path(tmp))
            print(f"training domains ({len(training.describe['domains'])}): {', '.join(training.describe['domains'])}"
                  + (f"; skipped: {', '.join(f'{d} ({w})' for d, w in training.describe['skipped'].items())}" if training.describe["skipped"] else ""),
                  file=sys.stderr)
        opts.extra.setdefault("data_dir", str(data_dir.resolve()))
        opts.benchmark = "arsc"
        return compare(tasks, training, opts)
