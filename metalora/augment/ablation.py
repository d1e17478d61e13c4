"""The augmentation ablation: each setting on the same targets, support sets and seeds, side by side.

    metalora bench arsc --data-dir ../shared/data/arsc --targets music,camera_photo,health_personal_care,toys_games \\
        --meta-init INIT --augment none,support,feature,task --out outputs/arsc-dev-augment

A setting is `none`, a support augmentation (a name or group of `metalora.config.SUPPORT_AUGMENTATIONS`:
support, feature, dropout, calibrate, mixup, paraphrase, ...), a task augmentation of meta-training
(`task` = MLTI interpolation, `task-merge`, `task-vary`), or several joined with `+`. Settings without
a task part adapt the given (or once-trained) meta-init; each distinct task part meta-trains its own
init with the same config plus that augmentation, and its training time is reported beside it.

Every setting sees the same support set for a (task, seed) and the same adaptation settings (the
init's recommended ones unless --steps); what a setting costs is measured per adaptation from the
support TEXTS: text augmentation + encoding + the adaptation loop. Differences to `none` are paired
(same task, same seed), which is what the spread of a difference needs.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metalora.config import AUGMENT_GROUPS, SUPPORT_AUGMENTATIONS, AugmentConfig, expand_augmentations
from metalora.errors import ConfigError

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
    def task_key(self) -> str:
        return "+".join(f"{k}={v}" for k, v in self.task) or "none"


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
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError("--augment: a setting is listed twice")
    return out


@dataclass
class AblationOptions:
    settings: list[Setting]
    out: Path
    shots: int = 5
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int | None = None  # None: the init's recommended steps
    meta_init: str | None = None
    meta_config: str | None = None
    meta_overrides: tuple[str, ...] = ()
    augment_overrides: tuple[str, ...] = ()  # AugmentConfig fields, e.g. calibrate_samples=50
    progress: bool = True
    backbone: str | None = None
    extra: dict = field(default_factory=dict)
    # what the bench's data presets (metalora.bench.arsc.run_arsc) read: only the meta init is trained
    methods: list[str] = field(default_factory=lambda: ["meta"])
    multitask_init: str | None = None
    benchmark: str = "arsc"


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None}
    return {"mean": float(v.mean()), "std": float(v.std()), "worst": float(v.min()), "p10": float(np.percentile(v, 10)), "n": int(len(v))}


def run_ablation(targets, training, opts: AblationOptions) -> dict:
    """Adapt every setting to every target x seed; write report.json and report.md under opts.out."""
    from tqdm.auto import tqdm

    from metalora.api import load_init
    from metalora.augment.text import TextAugmenter
    from metalora.bench.arsc import _train_config
    from metalora.bench.methods import METRICS, meta_adapt_config, scores
    from metalora.bench.report import write_json
    from metalora.config import AdaptConfig, load_config
    from metalora.adapt import Timer, adapt
    from metalora.model import head_logits

    if opts.shots < 1 or not opts.seeds:
        raise ConfigError("--shots must be >= 1 and --seeds must name at least one seed")
    aug_base = load_config(AugmentConfig, None, list(opts.augment_overrides))
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. the same support set per (task, seed) for every setting; checked before any training
    supports = {(t.name, s): t.support(opts.shots, s) for t in targets for s in opts.seeds}
    tests = {t.name: t.test() for t in targets}

    # 2. inits: `none` task part = --meta-init (or trained once); each other task part trains its own
    inits: dict[str, tuple] = {}
    training_info: dict[str, dict] = {}
    keys = list(dict.fromkeys(s.task_key for s in opts.settings))
    for key in keys:
        setting = next(s for s in opts.settings if s.task_key == key)
        if key == "none" and opts.meta_init:
            model, init = load_init(opts.meta_init)
            inits[key] = (model, init)
            training_info[key] = {"init": str(opts.meta_init), "seconds": None, "given": True}
            continue
        from metalora.meta.trainer import MetaTrainer

        cfg = _train_config(opts, training, None, out / f"meta-train-{key.replace('=', '').replace('+', '_')}")
        cfg = replace(cfg, episodes=replace(cfg.episodes, **dict(setting.task)))
        if cfg.algorithm == "multitask":
            raise ConfigError("--meta-config: the ablation meta-trains; algorithm multitask has no task augmentation")
        print(f"meta-training the init of {key} ({cfg.algorithm}, {cfg.steps} steps)", file=sys.stderr)
        shared = next((m for m, _ in inits.values()), None)
        res = MetaTrainer(cfg, cards_dir=training.cards_dir,
                          model=shared if shared is not None and (shared.backbone.config, shared.settings) == (cfg.backbone, cfg.lora) else None).train()
        model, init = load_init(res.init_dir)
        inits[key] = (model, init)
        training_info[key] = {"init": str(res.init_dir), "seconds": res.seconds, "episodes": res.episodes, "steps": res.steps,
                              "episodes_config": {k: v for k, v in setting.task}}

    # 3. the runs
    runs: dict[str, dict[str, list]] = {s.name: {t.name: [] for t in targets} for s in opts.settings}
    text_augs: dict[tuple, TextAugmenter] = {}
    bar = tqdm(total=len(targets) * len(opts.seeds) * len(opts.settings), desc="augment ablation", disable=not opts.progress)
    for t in targets:
        test = tests[t.name]
        test_y = np.asarray(test["label"])
        cache: dict[str, tuple] = {}  # task key -> (test encoding, test features under the init's LoRA)
        for seed in opts.seeds:
            sup = supports[(t.name, seed)]
            for setting in opts.settings:
                model, init = inits[setting.task_key]
                if setting.task_key not in cache:
                    enc = model.encode(test["text"])
                    with torch.no_grad():
                        feats = torch.cat([model.features(init.lora, b).cpu() for b in enc.batches(64)])
                    cache[setting.task_key] = (enc, feats)
                test_enc, test_feats = cache[setting.task_key]
                cfg = meta_adapt_config(AdaptConfig(backbone=model.backbone.config), init, opts.steps)
                cfg = replace(cfg, seed=seed, augment=replace(aug_base, methods=setting.support))
                key = (id(model), setting.support)
                if key not in text_augs:  # built once (the neighbour table: ~2 s), outside the timed part
                    text_augs[key] = TextAugmenter(cfg.augment, model.backbone)
                text_aug = text_augs[key]
                with Timer() as timer:
                    texts, labels = list(sup["text"]), list(sup["label"])
                    if text_aug:
                        texts, labels = text_aug(texts, labels, seed)
                    enc = model.encode(texts)
                    params = adapt(model, enc, torch.tensor(labels), t.num_labels, init, cfg, where=f"{t.name} seed {seed} ({setting.name})")
                with torch.no_grad():
                    if cfg.steps == 0:  # LoRA untouched: the test features under the init's weights are exact
                        probs = torch.softmax(head_logits(params, test_feats.to(params["head.weight"].device)), -1).cpu().numpy()
                    else:
                        probs = model.predict_proba(params, test_enc).numpy()
                m = scores(METRICS, test_y, probs, t.num_labels)
                runs[setting.name][t.name].append({"seed": seed, **m, "seconds": timer.seconds, "support_examples": len(texts)})
                bar.update(1)
    bar.close()

    report = _report(targets, opts, runs, training_info, inits)
    write_json(report, out / "report.json")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    print(f"wrote {out / 'report.json'}, {out / 'report.md'}")
    return report


def _report(targets, opts: AblationOptions, runs, training_info, inits) -> dict:
    from metalora import __version__

    families: dict[str, list[str]] = {}
    for t in targets:
        families.setdefault(t.scenario.family, []).append(t.name)
    base = opts.settings[0].name
    settings = {}
    for s in opts.settings:
        model, init = inits[s.task_key]
        per_task = {}
        for t in targets:
            rs = runs[s.name][t.name]
            per_task[t.name] = {m: _stats([r[m] for r in rs]) for m in ("accuracy", "macro_f1", "seconds")}
            per_task[t.name]["runs"] = rs
        entry = {"support": list(s.support), "task": dict(s.task), "init": training_info[s.task_key],
                 "steps": opts.steps if opts.steps is not None else ((init.meta or {}).get("adapt") or {}).get("steps"),
                 "tasks": per_task, "families": {}}
        for fam, names in {**families, "all": [t.name for t in targets]}.items():
            fam_entry = {}
            for m in ("accuracy", "macro_f1"):
                task_means = [per_task[n][m]["mean"] for n in names]
                seed_stds = [per_task[n][m]["std"] for n in names]
                all_runs = [r[m] for n in names for r in runs[s.name][n]]
                diffs = [r[m] - b[m] for n in names for r, b in zip(runs[s.name][n], runs[base][n])]
                fam_entry[m] = {"mean": float(np.mean(task_means)), "std_seeds": float(np.mean(seed_stds)),
                                "std_tasks": float(np.std(task_means)), "worst_run": float(min(all_runs)),
                                "p10_run": float(np.percentile(all_runs, 10)),
                                "delta": float(np.mean(diffs)), "delta_std": float(np.std(diffs)),
                                "wins": int(sum(d > 1e-9 for d in diffs)), "losses": int(sum(d < -1e-9 for d in diffs)),
                                "runs": len(diffs)}
            secs = [r["seconds"] for n in names for r in runs[s.name][n]]
            fam_entry["seconds"] = {"mean": float(np.mean(secs)), "max": float(np.max(secs))}
            entry["families"][fam] = fam_entry
        settings[s.name] = entry
    return {"benchmark": "augment-ablation", "metalora_version": __version__, "shots": opts.shots, "seeds": list(opts.seeds),
            "targets": [t.name for t in targets], "families": families, "baseline": base,
            "augment_overrides": list(opts.augment_overrides), "settings": settings, **opts.extra}


def _f(x, d=3):
    return "n/a" if x is None else f"{x:.{d}f}"


def markdown(report: dict) -> str:
    base = report["baseline"]
    out = ["# augmentation ablation", "",
           f"- shots {report['shots']}, seeds {', '.join(map(str, report['seeds']))}; {len(report['targets'])} targets; "
           f"differences are paired with `{base}` (same task, seed and support set)",
           f"- augment settings: {', '.join(report['augment_overrides']) or 'AugmentConfig defaults'}", ""]
    for fam in [*report["families"], "all"]:
        if fam == "all" and len(report["families"]) == 1:
            continue
        out += [f"## {'all families' if fam == 'all' else 'family ' + fam}", "",
                "| setting | accuracy | Δ acc (wins/losses) | macro-F1 | Δ F1 (wins/losses) | worst acc | p10 acc | adapt s (max) | meta-train s |",
                "|---|---|---|---|---|---|---|---|---|"]
        for name, s in report["settings"].items():
            f = s["families"][fam]
            a, m = f["accuracy"], f["macro_f1"]
            train = s["init"].get("seconds")
            out.append(f"| {name} | {_f(a['mean'])} ± {_f(a['std_seeds'])} | {a['delta']:+.3f} ± {_f(a['delta_std'])} ({a['wins']}/{a['losses']}) "
                       f"| {_f(m['mean'])} ± {_f(m['std_seeds'])} | {m['delta']:+.3f} ± {_f(m['delta_std'])} ({m['wins']}/{m['losses']}) "
                       f"| {_f(a['worst_run'])} | {_f(a['p10_run'])} | {_f(f['seconds']['mean'], 2)} ({_f(f['seconds']['max'], 2)}) "
                       f"| {_f(train, 0) if train is not None else 'given'} |")
        out.append("")
    out += ["## Accuracy / macro-F1 per task (mean over seeds)", "",
            "| task | " + " | ".join(report["settings"]) + " |", "|---" * (len(report["settings"]) + 1) + "|"]
    for t in report["targets"]:
        cells = [f"{_f(s['tasks'][t]['accuracy']['mean'])} / {_f(s['tasks'][t]['macro_f1']['mean'])}" for s in report["settings"].values()]
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
