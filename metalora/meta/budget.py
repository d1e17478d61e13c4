"""The adaptation budget of a finished init, chosen per scenario family on its validation scenarios.

Why: one init now serves families that want different budgets. Measured on ECOM-dev with the universal
MiniLM init: its validated 0-step prototype head is 8 points ahead of 30 AdamW steps on fake-review
scenarios, while on product categorisation the same 30 steps from the init gain 3 points (titles
whose colour or article type is one word, which fine-tuning picks up and prototypes blur). A single
budget chosen on all validation scenarios together is right for neither, so the init records one per
family, and `adapt` uses the one of the scenario's family (from its card); a family the validation
never saw gets the budget that is best on average over the validated families.

Candidates: `sgd:N` (the inner loop of meta-training: SGD at inner_lr for N steps, N in
adapt_steps_choices) and `adamw:N` (ordinary fine-tuning from the init: AdaptConfig's AdamW rates for
N steps, N in budget.finetune_steps). Each is scored by the real adaptation loop (`metalora.adapt`,
head bank and all) on `budget.episodes` fixed validation episodes per family; one run per episode and
optimizer serves every step count (scored on the way). Ties go to the earlier candidate, so to fewer
steps and to SGD.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from metalora.adapt import Init, adapt
from metalora.config import AdaptConfig, MetaTrainConfig
from metalora.meta.episodes import EpisodeSampler, ExampleCache
from metalora.model import LoraClassifier


def candidates(cfg: MetaTrainConfig) -> list[tuple[str, int]]:
    sgd = sorted(set(cfg.adapt_steps_choices) | {cfg.adapt_steps if cfg.adapt_steps is not None else cfg.inner_steps})
    return [("sgd", n) for n in sgd] + [("adamw", n) for n in sorted(set(cfg.budget.finetune_steps))]


def settings(cfg: MetaTrainConfig, optimizer: str, steps: int) -> dict:
    """The AdaptConfig fields of a candidate, as a meta-init records them under `adapt`."""
    if optimizer == "sgd":
        return {"optimizer": "sgd", "lr": cfg.inner_lr, "head_lr": cfg.inner_lr, "steps": steps}
    plain = AdaptConfig()
    return {"optimizer": "adamw", "lr": plain.lr, "head_lr": plain.head_lr, "steps": steps}


def score_family(model: LoraClassifier, init: Init, sampler: EpisodeSampler, scenarios: dict, cfg: MetaTrainConfig,
                 n_episodes: int) -> dict[str, float]:
    """Mean query accuracy of every candidate on `n_episodes` validation episodes of one family."""
    from metalora.label_words import scenario_words

    cands = candidates(cfg)
    accs: dict[str, list[float]] = {f"{o}:{n}": [] for o, n in cands}
    for i in range(n_episodes):
        ep = sampler.episode(0, i)
        sc = scenarios[ep.scenario]
        names = [sc.label_names[c] for c in ep.classes]
        words = scenario_words(model, sc)
        words = words[ep.classes] if words is not None else None
        for opt in dict.fromkeys(o for o, _ in cands):
            counts = [n for o, n in cands if o == opt]

            def on_step(step: int, params, opt=opt, counts=counts) -> None:
                if step in counts:
                    with torch.no_grad():
                        pred = model.logits(params, ep.query).argmax(-1).cpu()
                    accs[f"{opt}:{step}"].append(float((pred == ep.query_labels).float().mean()))

            a = AdaptConfig(backbone=model.backbone.config, **settings(cfg, opt, max(counts)), seed=cfg.seed + i)
            adapt(model, ep.support, ep.support_labels, ep.num_labels, init, a, on_step=on_step,
                  where=f"budget validation episode {i} ({ep.scenario})", label_names=names, label_words=words)
    return {k: sum(v) / len(v) for k, v in accs.items()}


def choose(table: dict[str, dict[str, float]], order: Sequence[str]) -> tuple[dict[str, str], str]:
    """(best candidate per family, best candidate on the mean over families); ties go to the earlier candidate."""
    def best(scores: dict[str, float]) -> str:
        top = max(scores[c] for c in order)
        return next(c for c in order if scores[c] == top)

    per = {fam: best(s) for fam, s in table.items()}
    mean = {c: sum(s[c] for s in table.values()) / len(table) for c in order}
    return per, best(mean)


def choose_budget(init_dir: str | Path, cfg: MetaTrainConfig, cards_dir=None, model: LoraClassifier | None = None,
                  progress: bool = False) -> dict:
    """Score the candidates per validation family on the init in `init_dir` and record the choice in its metalora.json.

    Returns the record written under `adapt_validation`. The global `adapt` block becomes the
    best candidate on the mean over families; `adapt_by_family` holds each family's own.
    """
    from metalora.adapter_io import META_FILE, AdapterFolder
    from metalora.api import init_from_folder
    from metalora.errors import ConfigError
    from metalora.meta.episodes import select_scenarios

    if not cfg.val_scenarios:
        raise ConfigError("budget.by_family: choosing a budget per family needs val_scenarios")
    folder = AdapterFolder.open(init_dir)
    if model is None:
        from metalora.api import load_init

        model, init = load_init(folder)
    else:
        init = init_from_folder(folder, model)
    val = select_scenarios(cfg.val_scenarios, (), False, "val_scenarios", cards_dir)
    families: dict[str, list] = {}
    for sc in val:
        families.setdefault(sc.family, []).append(sc)
    cache = ExampleCache(model)
    by_name = {sc.name: sc for sc in val}
    table = {}
    ep_cfg = replace(cfg.episodes, weighting="uniform" if cfg.episodes.weighting == "family" else cfg.episodes.weighting)
    for j, (fam, scs) in enumerate(sorted(families.items())):
        sampler = EpisodeSampler(scs, ep_cfg, cache, cfg.seed + 2_000_003 + j, split=cfg.val_split, where=f"val_scenarios ({fam})",
                                 augment=False)
        table[fam] = score_family(model, init, sampler, by_name, cfg, cfg.budget.episodes)
        if progress:
            print(f"budget {fam}: " + ", ".join(f"{k} {v:.3f}" for k, v in table[fam].items()), flush=True)
    order = [f"{o}:{n}" for o, n in candidates(cfg)]
    per, overall = choose(table, order)

    def fields(key: str) -> dict:
        opt, n = key.split(":")
        return settings(cfg, opt, int(n))

    meta = dict(folder.meta)
    meta["adapt"] = {**(meta.get("adapt") or {}), **fields(overall)}
    meta["adapt_by_family"] = {fam: fields(k) for fam, k in per.items()}
    record = {"episodes_per_family": cfg.budget.episodes, "accuracy": table, "chosen": per, "overall": overall,
              "val_scenarios": [sc.name for sc in val]}
    meta["adapt_validation"] = record
    path = Path(folder.path) / META_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader sees the old file or the new one, never half of it
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """python -m metalora.meta.budget INIT [KEY=VALUE ...]: choose (or re-choose) an existing init's budget per family,
    under the config it was trained with (recorded in its metalora.json) plus overrides, e.g. budget.finetune_steps=[30]."""
    import argparse

    from metalora.adapter_io import AdapterFolder
    from metalora.config import load_config

    p = argparse.ArgumentParser(prog="python -m metalora.meta.budget", description=main.__doc__)
    p.add_argument("init", help="A meta-init folder (written by metalora meta-train).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="MetaTrainConfig overrides, e.g. budget.episodes=64.")
    args = p.parse_args(argv)
    recorded = (AdapterFolder.open(args.init).meta.get("meta") or {}).get("config") or {}
    cfg = load_config(MetaTrainConfig, None, list(args.overrides), base=recorded)
    rec = choose_budget(args.init, cfg, progress=True)
    print(json.dumps({"chosen": rec["chosen"], "overall": rec["overall"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
