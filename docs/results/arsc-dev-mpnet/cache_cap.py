"""What a memory cap on the example cache (`cache_mb`) costs the mpnet ARSC-dev recipe, without a model.

Replays the recipe's exact draws (the same samplers and seeds as MetaTrainer: 150 steps x 4 training
episodes, the validation episodes and the head bank at every evaluation) through a cache that only
records which examples were asked for, then runs an LRU of each size over that trace. Each example's
size is its token count (mpnet tokenizer, the recipe's 96-token head_tail cut) x 768 floats of
prefix states + its ids. A miss beyond the uncapped run's is one more prefix forward (~0.19 s each
on one thread, the recipe's measured cost).

    python docs/results/arsc-dev-mpnet/cache_cap.py [--caps 1000,2000,3000,4000]
"""
from __future__ import annotations

import argparse
from collections import OrderedDict

import torch

from metalora.backbones import load_backbone
from metalora.config import MetaTrainConfig, load_config
from metalora.heads import build_bank
from metalora.meta.episodes import EpisodeSampler, select_scenarios
from metalora.model import Encoded

RECIPE = "recipes/configs/mpnet_fomaml_arsc_dev.yaml"


class Recorder:
    """Stands in for ExampleCache: records each draw's keys, returns ids-only placeholders."""

    def __init__(self):
        self.trace: list[tuple[list[tuple[str, int]], dict]] = []
        self.texts: dict[str, list[str]] = {}

    def get(self, key_prefix, texts, indices):
        self.texts[key_prefix] = texts
        self.trace.append([(key_prefix, int(i)) for i in indices])
        n = len(indices)
        return Encoded(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--caps", default="1000,2000,3000,4000", help="cache_mb values to replay")
    args = ap.parse_args()
    cfg = load_config(MetaTrainConfig, RECIPE, ["log_with=none"])
    rec = Recorder()
    train = EpisodeSampler(select_scenarios(cfg.scenarios, cfg.exclude, cfg.exclude_heldout, "scenarios"), cfg.episodes, rec, cfg.seed)
    val = EpisodeSampler(select_scenarios(cfg.val_scenarios, (), False, "val_scenarios"), cfg.episodes, rec,
                         cfg.seed + 1_000_003, split=cfg.val_split, augment=False)
    bank_scenarios = [(p.name, [str(c) for c in range(p.num_labels)], p.labels.tolist()) for p in train.pools]
    pools = {p.name: p for p in train.pools}

    def evaluate():
        for i in range(max(cfg.val_episodes, cfg.head.val_episodes or 0)):
            val.episode(0, i)
        def featurize(name, idx):  # the trainer's chunks of 64
            for j in range(0, len(idx), 64):
                rec.get(pools[name].key, pools[name].texts, idx[j:j + 64])
            return torch.zeros(len(idx), 4)

        build_bank(bank_scenarios, featurize, cfg.head.bank_examples, seed=cfg.seed)

    for step in range(cfg.steps):
        for i in range(cfg.meta_batch):
            train.episode(step, i)
        if (step + 1) % cfg.eval_every == 0:
            evaluate()
    keys = sorted({k for draw in rec.trace for k in draw})
    tok = load_backbone(cfg.backbone).tokenizer
    length = {}
    for prefix in {k[0] for k in keys}:
        idx = [k[1] for k in keys if k[0] == prefix]
        enc = tok([rec.texts[prefix][i] for i in idx], truncation=True, max_length=cfg.backbone.max_length)
        length.update({(prefix, i): len(ids) for i, ids in zip(idx, enc["input_ids"])})
    size = {k: length[k] * (768 * 4 + 8) for k in keys}
    draws = sum(len(d) for d in rec.trace)
    print(f"{len(rec.trace)} cache requests, {draws} example draws, {len(keys)} distinct examples, "
          f"{sum(size.values()) / 2**20:.0f} MB if all are kept")
    print("| cache_mb | misses | extra prefix forwards | est. extra minutes (0.19 s each) |")
    print("|---|---|---|---|")
    for cap in [None, *[float(c) for c in args.caps.split(",")]]:
        lru: OrderedDict = OrderedDict()
        used = misses = 0
        for draw in rec.trace:
            wanted = list(dict.fromkeys(draw))
            for k in wanted:
                if k not in lru:
                    misses += 1
                    lru[k] = True
                    used += size[k]
                lru.move_to_end(k)
            while cap is not None and used > cap * 2**20 and len(lru) > len(wanted):
                old, _ = lru.popitem(last=False)
                used -= size[old]
        base = misses if cap is None else base
        print(f"| {'none' if cap is None else int(cap)} | {misses} | {misses - base} | {(misses - base) * 0.19 / 60:.1f} |")


if __name__ == "__main__":
    main()
