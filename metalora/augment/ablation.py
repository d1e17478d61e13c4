"""The augmentation ablation of the bench: `--augment` settings become rows of the one comparison loop.

    metalora bench arsc --data-dir ../shared/data/arsc --targets music,camera_photo,health_personal_care,toys_games \
        --methods meta --meta-init INIT --augment none,support,feature,task --out outputs/arsc-dev-augment

A setting is `none` (the `meta` row itself), a support augmentation (a name or group of
`metalora.config.SUPPORT_AUGMENTATIONS`: support, feature, dropout, calibrate, mixup, paraphrase, ...),
a task augmentation of meta-training (`task` = MLTI interpolation, `task-merge`, `task-vary`), or
several joined with `+`. Each other setting is a row `meta+SETTING` of `metalora.bench.compare`: the
same targets, support sets and seeds as `meta`, the same adaptation settings; a row with a task part
meta-trains its own init with the meta config plus that augmentation (its time sits beside the
others' in the report). Differences to `meta` are paired (same task and seed), which is what the
spread of a difference needs; `paired` computes them and `markdown_section` prints them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from metalora.config import AUGMENT_GROUPS, SUPPORT_AUGMENTATIONS, TEXT_AUGMENTATIONS, expand_augmentations
from metalora.errors import ConfigError

BASELINE = "meta"

TASK_PRESETS: dict[str, dict] = {
    "task": {"task_interpolation": 0.5},  # MLTI on half the episodes
    "task-merge": {"merge_scenarios": 0.3},
    "task-vary": {"k_shot_min": 1, "n_way_min": 2},
}


@dataclass(frozen=True)
class Setting:
    name: str
    support: tuple[str, ...] = ()  # AugmentConfig.methods
    task: tuple[tuple[str, object], ...] = ()  # EpisodeConfig overrides

    @property
    def row(self) -> str:
        """Its row in the comparison: `meta` for none, else `meta+<setting>`."""
        return BASELINE if not (self.support or self.task) else f"{BASELINE}+{self.name}"

    @property
    def text(self) -> bool:
        return any(m in TEXT_AUGMENTATIONS for m in self.support)


def parse_settings(spec: str | Sequence[str]) -> list[Setting]:
    """`none,support,feature,task,calibrate+task` -> settings; an unknown name lists the valid ones."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ConfigError("--augment: list at least one setting, e.g. none,support,feature,task")
    out = []
    for item in items:
        support, task = [], {}
        for part in item.split("+"):
            part = part.strip()
            if part in TASK_PRESETS:
                task.update(TASK_PRESETS[part])
            elif part in SUPPORT_AUGMENTATIONS or part in AUGMENT_GROUPS:
                support.append(part)
            else:
                import difflib

                valid = [*AUGMENT_GROUPS, *SUPPORT_AUGMENTATIONS, *TASK_PRESETS]
                close = difflib.get_close_matches(part, valid, n=1)
                raise ConfigError(f"--augment: unknown setting {part!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                  + f"; valid: {', '.join(valid)}, or several joined with +")
        out.append(Setting(item, expand_augmentations(support, "--augment"), tuple(sorted(task.items()))))
    rows = [s.row for s in out]
    if len(set(rows)) != len(rows):
        raise ConfigError("--augment: a setting is listed twice (none and an empty setting are the same row)")
    return out


def paired(runs: dict[str, dict[str, list[dict]]], rows: Sequence[str], families: dict[str, str],
           metrics: Sequence[str] = ("accuracy", "macro_f1")) -> dict:
    """Per row, per family and over all targets: the mean paired difference to `meta` (same task, same seed),
    its spread, and how many runs it wins and loses."""
    out: dict = {}
    groups: dict[str, list[str]] = {}
    for task, fam in families.items():
        groups.setdefault(fam, []).append(task)
    if len(groups) > 1:
        groups["all"] = list(families)
    for row in rows:
        out[row] = {}
        for fam, tasks in groups.items():
            entry = {}
            for m in metrics:
                diffs = []
                for t in tasks:
                    base = {r["seed"]: r[m] for r in runs[BASELINE][t]}
                    diffs += [r[m] - base[r["seed"]] for r in runs[row][t] if r["seed"] in base]
                d = np.asarray(diffs, dtype=float)
                entry[m] = {"delta": float(d.mean()) if len(d) else None, "std": float(d.std()) if len(d) > 1 else None,
                            "wins": int((d > 1e-9).sum()), "losses": int((d < -1e-9).sum()), "runs": int(len(d))}
            out[row][fam] = entry
    return out


def _f(x, digits: int = 3, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def markdown_section(report: dict) -> list[str]:
    """The ablation table of a comparison report: each setting's accuracy and macro-F1 (mean over tasks,
    ± spread over seeds), its paired difference to `meta`, the worst run, adaptation and meta-training time;
    one table per family when the targets span several, and one over all of them."""
    aug = report["augment"]
    families = sorted(set(report.get("families", {}).values()))
    groups = families + ["all"] if len(families) > 1 else ["all"]
    out = ["## Augmentation ablation (paired with `meta`: same tasks, support sets and seeds)", "",
           f"Settings: {', '.join(f'`{n}`' for n in aug['settings'])}; AugmentConfig overrides: "
           f"{', '.join(aug['overrides']) or 'none (defaults)'}. Adaptation seconds of text-augmented rows include augmenting "
           "and encoding their support texts.", ""]
    for group in groups:
        key = group if len(families) > 1 else next(iter(families), "all")
        out += [f"### {'all families' if group == 'all' else 'family ' + group}", "",
                "| setting | accuracy | Δ accuracy (wins/losses) | macro-F1 | Δ macro-F1 (wins/losses) | worst run | adapt s | meta-train s |",
                "|---|---|---|---|---|---|---|---|"]
        for name, row in aug["settings"].items():
            m = report["methods"][row]
            if group == "all":
                acc, f1, tail = m["summary"]["accuracy"], m["summary"]["macro_f1"], m.get("tail") or {}
                acc_s = f"{_f(acc['mean'])} ± {_f(acc.get('std_seeds'))}"
                f1_s = f"{_f(f1['mean'])} ± {_f(f1.get('std_seeds'))}"
            else:
                fam = m["families"][group]
                tail = fam.get("tail") or {}
                acc_s, f1_s = _f(fam["accuracy"]["mean"]), _f(fam["macro_f1"]["mean"])
            if row == BASELINE:
                da = df = "—"
            else:
                pa, pf = aug["paired"][row][key]["accuracy"], aug["paired"][row][key]["macro_f1"]
                da = f"{_f(pa['delta'], sign=True)} ± {_f(pa['std'])} ({pa['wins']}/{pa['losses']})"
                df = f"{_f(pf['delta'], sign=True)} ± {_f(pf['std'])} ({pf['wins']}/{pf['losses']})"
            own = row == BASELINE or bool(aug["rows"][row]["episodes"])  # else it adapts the meta row's init
            train = (report.get("meta_training") or {}).get(row if own else BASELINE, {}).get("seconds")
            train_s = ("given" if train is None else _f(train, 0)) if own else "none's init"
            out.append(f"| {name} | {acc_s} | {da} | {f1_s} | {df} | {_f(tail.get('worst'))} | {_f(m['summary']['seconds']['mean'], 2)} "
                       f"| {train_s} |")
        out.append("")
    return out
