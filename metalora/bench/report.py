"""Bench reports: aggregation over seeds and tasks, and the three outputs (report.json, report.md, a PNG).

Schema of a comparison report (`report.json`):

    {"benchmark", "metalora_version", "backbone", "shots", "support_split", "support_sampling", "seeds", "steps",
     "curve_steps", "targets": [task, ...], "families": {task: family}, "majority": {task: rate},
     "training": {...domains/scenarios used...}, "meta_training": {method: {...}}, "notes": [...],
     "methods": {method: {"adapt": {...settings...},
                          "tasks": {task: {"runs": [{"seed", "accuracy", "macro_f1", "seconds", "peak_mb"}],
                                           "<metric>": {"mean", "std"},          # std over runs (None: one run)
                                           "tail": {...task_tail...}},
                          "summary": {"<metric>": {"mean", "std_seeds", "std_tasks", "n_tasks"}},
                          "tail": {...method_tail...},
                          "families": {family: {"<metric>": {"mean", "std_tasks", "n_tasks"}}},
                          "curve": {"steps": [...], "accuracy": [...]} | null}}}

`summary.<metric>.mean` is the mean of the per-task means; `std_seeds` the mean over tasks of the
spread over seeds; `std_tasks` the spread of the per-task means.

The tail is what a user meets, who adapts from one support set and not from the mean of five: per
task, the worst run, the 10th percentile of accuracy over its runs (numpy's linear interpolation) and
the number of runs below the test set's majority-class rate; per method the same over all runs, and
the largest gap between a task's majority rate and its 10th percentile.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

REPORT_METRICS = ("accuracy", "macro_f1", "seconds", "peak_mb")
TAIL_PERCENTILE = 10


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else float("nan")


def _std(xs: Sequence[float]) -> float | None:
    """Population spread; None for fewer than two values (one run has no spread, not a spread of 0)."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.std(xs)) if len(xs) > 1 else None


def task_entry(runs: list[dict], majority: float | None = None) -> dict:
    entry: dict = {"runs": runs}
    for m in REPORT_METRICS:
        vals = [r[m] for r in runs if m in r]
        entry[m] = {"mean": _mean(vals), "std": _std(vals)}
    entry["tail"] = task_tail([r["accuracy"] for r in runs if "accuracy" in r], majority)
    return entry


def task_tail(accuracies: Sequence[float], majority: float | None) -> dict:
    """Worst run, 10th percentile and runs below the majority rate of one task's runs."""
    acc = np.asarray([a for a in accuracies if a is not None], dtype=np.float64)
    if not len(acc):
        return {"runs": 0, "worst": None, "p10": None, "below_majority": None, "majority": majority}
    p10 = float(np.percentile(acc, TAIL_PERCENTILE))
    return {"runs": int(len(acc)), "worst": float(acc.min()), "p10": p10, "majority": majority,
            "below_majority": None if majority is None else int((acc < majority).sum()),
            "p10_gap": None if majority is None else float(majority - p10)}


def method_tail(tasks: dict[str, dict]) -> dict:
    """The tail over every run of a method: worst run (and where), 10th percentile, runs below majority."""
    runs = [(name, r) for name, t in tasks.items() for r in t["runs"] if r.get("accuracy") is not None]
    if not runs:
        return {"runs": 0}
    acc = np.asarray([r["accuracy"] for _, r in runs], dtype=np.float64)
    worst_task, worst_run = runs[int(acc.argmin())]
    gaps = [(t["tail"]["p10_gap"], name) for name, t in tasks.items() if t.get("tail", {}).get("p10_gap") is not None]
    below = [t["tail"]["below_majority"] for t in tasks.values() if t.get("tail", {}).get("below_majority") is not None]
    out = {"runs": int(len(acc)), "worst": float(acc.min()), "worst_task": worst_task, "worst_seed": worst_run.get("seed"),
           "p10": float(np.percentile(acc, TAIL_PERCENTILE)), "below_majority": int(sum(below)) if below else None}
    if gaps:
        gap, name = max(gaps)
        out.update(max_p10_gap=float(gap), max_p10_gap_task=name)
    return out


def summarize(tasks: dict[str, dict]) -> dict:
    out = {}
    for m in REPORT_METRICS:
        means = [t[m]["mean"] for t in tasks.values() if m in t]
        stds = [t[m]["std"] for t in tasks.values() if m in t and t[m]["std"] is not None]
        out[m] = {"mean": _mean(means), "std_seeds": _mean(stds) if stds else None, "std_tasks": _std(means),
                  "n_tasks": len(means)}
    return out


def family_summaries(tasks: dict[str, dict], families: dict[str, str]) -> dict[str, dict]:
    """Per-family means of the per-task means (only when the targets span more than one family)."""
    by: dict[str, dict[str, dict]] = {}
    for name, t in tasks.items():
        by.setdefault(families.get(name, "other"), {})[name] = t
    out = {}
    for fam, fam_tasks in sorted(by.items()):
        s = summarize(fam_tasks)
        out[fam] = {m: {"mean": s[m]["mean"], "std_tasks": s[m]["std_tasks"], "n_tasks": s[m]["n_tasks"]}
                    for m in REPORT_METRICS}
        out[fam]["tail"] = method_tail(fam_tasks)
    return out


def mean_curve(curves: list[dict[int, float]]) -> dict | None:
    curves = [c for c in curves if c]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return {"steps": steps, "accuracy": [_mean([c[s] for c in curves]) for s in steps],
            "std": [_std([c[s] for c in curves]) for s in steps]}


# -- writing ---------------------------------------------------------------------------------------


def _clean(obj):
    """JSON-safe: NaN -> None, numpy scalars -> Python, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(report), indent=2), encoding="utf-8")
    return path


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _spread(mean, std, digits: int = 3) -> str:
    """`mean ± std`, or `mean (one run: no spread)` when there is nothing to spread over."""
    if std is None:
        return f"{_fmt(mean, digits)} (one run: no spread)"
    return f"{_fmt(mean, digits)} ± {_fmt(std, digits)}"


def summary_table(report: dict) -> str:
    """The per-method summary as a Markdown table (also what the CLI prints), the tail beside the mean."""
    lines = ["| method | accuracy | macro-F1 | worst run | p10 | runs < majority | adapt s | peak MB | tasks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["methods"].items():
        s = m["summary"]
        acc, f1 = s["accuracy"], s["macro_f1"]
        tail = m.get("tail") or {}
        tasks = f" (tasks ± {_fmt(acc['std_tasks'])})" if acc["std_tasks"] is not None else ""
        below = "n/a" if tail.get("below_majority") is None else f"{tail['below_majority']}/{tail['runs']}"
        lines.append(
            f"| {name} | {_spread(acc['mean'], acc['std_seeds'])}{tasks} | {_spread(f1['mean'], f1['std_seeds'])} "
            f"| {_fmt(tail.get('worst'))} | {_fmt(tail.get('p10'))} | {below} "
            f"| {_fmt(s['seconds']['mean'], 2)} | {_fmt(s['peak_mb']['mean'], 0)} | {acc['n_tasks']} |"
        )
    return "\n".join(lines)


def family_table(report: dict) -> str:
    """Accuracy / macro-F1 per family and the mean over families, one row per method."""
    fams = sorted({f for m in report["methods"].values() for f in (m.get("families") or {})})
    head = "| method | " + " | ".join(f"{f} acc / F1" for f in fams) + " | mean over families |"
    lines = [head, "|---" * (len(fams) + 2) + "|"]
    for name, m in report["methods"].items():
        by = m.get("families") or {}
        cells = [f"{_fmt(by[f]['accuracy']['mean'])} / {_fmt(by[f]['macro_f1']['mean'])}" if f in by else "" for f in fams]
        over = m.get("over_families") or {}
        cells.append(f"{_fmt(over.get('accuracy'))} / {_fmt(over.get('macro_f1'))}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_markdown(report: dict) -> str:
    out = [f"# metalora bench {report['benchmark']}", ""]
    out.append(f"- backbone: `{report['backbone']}`; shots: {report['shots']} per class from `{report['support_split']}` "
               f"({report.get('support_sampling', 'random')} draws); seeds: {', '.join(map(str, report['seeds']))}; "
               f"metalora {report['metalora_version']}")
    tr = report.get("training") or {}
    if tr.get("domains") is not None:
        out.append(f"- training domains: {', '.join(tr['domains']) or 'none'}")
    if tr.get("skipped"):
        out.append("- skipped training domains: " + "; ".join(f"{d} ({why})" for d, why in tr["skipped"].items()))
    for name, mt in (report.get("meta_training") or {}).items():
        if mt.get("seconds") is not None:
            out.append(f"- {name} init trained in {mt['seconds']:.1f}s ({mt.get('episodes')} episodes) -> `{mt.get('init')}`"
                       + (f"; validated on {', '.join(mt['val_scenarios'])}" if mt.get("val_scenarios") else ""))
        else:
            out.append(f"- {name} init: `{mt.get('init')}` (given)")
    for note in report.get("notes", []):
        out.append(f"- note: {note}")
    out += ["", "## Summary (mean over tasks; ± spread over seeds; the tail over every run)", "", summary_table(report), ""]
    if len({f for m in report["methods"].values() for f in (m.get("families") or {})}) > 1:
        out += ["## Per family (mean over the family's tasks)", "", family_table(report), ""]
    out += ["## Accuracy per task (mean ± std over runs; worst run / 10th percentile; majority rate)", ""]
    methods = list(report["methods"])
    out.append("| task | majority | " + " | ".join(methods) + " |")
    out.append("|---" * (len(methods) + 2) + "|")
    majority = report.get("majority") or {}
    for task in report["targets"]:
        cells = []
        for m in methods:
            t = report["methods"][m]["tasks"].get(task)
            if not t:
                cells.append("")
                continue
            tail = t.get("tail") or {}
            cells.append(f"{_spread(t['accuracy']['mean'], t['accuracy']['std'])}; {_fmt(tail.get('worst'))} / {_fmt(tail.get('p10'))}")
        out.append(f"| {task} | {_fmt(majority.get(task))} | " + " | ".join(cells) + " |")
    if report.get("augment"):
        from metalora.augment.ablation import markdown_section

        out += ["", *markdown_section(report)]
    curves = {m: v["curve"] for m, v in report["methods"].items() if v.get("curve")}
    if curves:
        out += ["", "## Accuracy vs adaptation steps (mean over tasks and seeds)", ""]
        steps = sorted(set().union(*(c["steps"] for c in curves.values())))
        out.append("| method | " + " | ".join(str(s) for s in steps) + " |")
        out.append("|---" * (len(steps) + 1) + "|")
        for m, c in curves.items():
            by = dict(zip(c["steps"], c["accuracy"]))
            out.append(f"| {m} | " + " | ".join(_fmt(by.get(s)) for s in steps) + " |")
    return "\n".join(out) + "\n"


def curve_png(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    any_curve = False
    for name, m in report["methods"].items():
        c = m.get("curve")
        if not c:
            continue
        any_curve = True
        xs = [max(s, 0.5) for s in c["steps"]]  # step 0 on a log axis
        yerr = [np.nan if v is None else v for v in c["std"]] if c.get("std") else None
        ax.errorbar(xs, c["accuracy"], yerr=yerr, marker="o", capsize=3, label=name)
    if any_curve:
        ax.set_xscale("log")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no curve recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("adaptation steps (0 plotted at 0.5)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"metalora bench {report['benchmark']}: {report['backbone']}, {report['shots']}-shot")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _write_outputs(report: dict, out: Path, stem: str, png_name: str, markdown, plot) -> dict[str, Path]:
    """The three outputs every bench writes: STEM.json, STEM.md and a PNG."""
    out = Path(out)
    paths = {"json": write_json(report, out / f"{stem}.json"), "md": out / f"{stem}.md", "png": out / png_name}
    paths["md"].write_text(markdown(report), encoding="utf-8")
    plot(report, paths["png"])
    return paths


def write_comparison(report: dict, out: Path) -> dict[str, Path]:
    return _write_outputs(report, out, "report", "curve.png", comparison_markdown, curve_png)


# -- speed ----------------------------------------------------------------------------------------------


def speed_markdown(report: dict) -> str:
    out = ["# metalora bench speed", "",
           f"metalora {report['metalora_version']}, torch {report['torch']}, device {report['device']}, "
           f"{report['threads']} threads; median of {report['repeats']} timed repeats after a warm-up.", "",
           "Plain step: peft LoRA (same settings) over the whole backbone, forward + backward through every layer, "
           "AdamW. Meta-steps: `MetaTrainer.episode_grads` + outer step on the same episodes (frozen prefix cached). "
           "Ratio = meta-step seconds per example / plain-step seconds per example.", "",
           "| backbone | plain ex/s | FO meta ex/s | FO ratio | SO meta ex/s | SO ratio |", "|---|---|---|---|---|---|"]
    for b, r in report["backbones"].items():
        s = r["steps"]
        out.append(f"| {b} | {_fmt(s['plain_peft']['examples_per_s'], 1)} | {_fmt(s['meta_first_order']['examples_per_s'], 1)} "
                   f"| {_fmt(s['meta_first_order']['ratio_vs_plain'], 2)} | {_fmt(s['meta_second_order']['examples_per_s'], 1)} "
                   f"| {_fmt(s['meta_second_order']['ratio_vs_plain'], 2)} |")
    out += ["", "## Adaptation cost (peft init, AdaptConfig defaults; encoding included)", "",
            "| backbone | shots/class | examples | seconds | peak MB |", "|---|---|---|---|---|"]
    for b, r in report["backbones"].items():
        for k, a in r["adaptation"]["shots"].items():
            out.append(f"| {b} | {k} | {a['examples']} | {_fmt(a['seconds'], 2)} | {_fmt(a['peak_mb'], 0)} |")
    out += ["", "## Meta-training throughput by process count", "", "| backbone | processes | episodes | seconds | episodes/s |",
            "|---|---|---|---|---|"]
    for b, r in report["backbones"].items():
        for n, p in r["processes"].items():
            if "error" in p:
                out.append(f"| {b} | {n} | n/a | n/a | error: {p['error']} |")
                continue
            out.append(f"| {b} | {n} | {p['episodes']:.0f} | {_fmt(p['seconds'], 2)} | {_fmt(p['episodes_per_s'], 2)} |")
    return "\n".join(out) + "\n"


def speed_png(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["backbones"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    kinds = [("plain_peft", "plain peft"), ("meta_first_order", "meta FO"), ("meta_second_order", "meta SO")]
    width = 0.8 / len(kinds)
    for j, (key, label) in enumerate(kinds):
        vals = [report["backbones"][b]["steps"][key]["examples_per_s"] for b in names]
        axes[0].bar([i + j * width for i in range(len(names))], vals, width, label=label)
    axes[0].set_xticks([i + width for i in range(len(names))], names)
    axes[0].set_ylabel("examples / s")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("training step throughput")
    for b in names:
        shots = report["backbones"][b]["adaptation"]["shots"]
        axes[1].plot([int(k) for k in shots], [v["seconds"] for v in shots.values()], marker="o", label=b)
    axes[1].set_xlabel("shots per class")
    axes[1].set_ylabel("adaptation seconds")
    axes[1].legend()
    axes[1].set_title("adaptation wall time")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_speed(report: dict, out: Path) -> dict[str, Path]:
    return _write_outputs(report, out, "speed", "speed.png", speed_markdown, speed_png)
