"""Shared fixtures: a seed, a session-wide factory of tiny random backbones, and a writer of small local
scenario cards (a metalora dataset card + JSON-lines data in a tmp folder, `local` source type)."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

# The models here are tiny, and the test machines' few cores are shared: with several intra-op
# threads a tiny forward pass waits on busy cores (measured 70x slower under load). One thread by
# default; METALORA_TEST_THREADS=N to change it.
torch.set_num_threads(int(os.environ.get("METALORA_TEST_THREADS", "1")))

# A small, separable e-commerce sentiment scenario; texts differ in length so batches get padding.
POSITIVE = [
    "great product, love it",
    "works perfectly and i am very happy with this purchase",
    "excellent quality and fast shipping",
    "amazing value, would buy again",
    "fantastic, sturdy and exactly as described in the listing",
    "my kids adore it",
    "best blender i have owned",
    "comfortable fit and the colour is lovely",
]
NEGATIVE = [
    "broke after one day",
    "terrible quality, a complete waste of money",
    "arrived damaged and the seller never answered my messages",
    "does not work at all",
    "awful smell, returned it",
    "the zipper fell off",
    "cheap plastic that cracked in the first week of use",
    "refund took a month",
]


def default_rows() -> dict[str, list[dict]]:
    """train: 5 per class, test: 3 per class; labels given as label names."""
    def rows(texts, label, sl):
        return [{"review": t, "label": label} for t in texts[sl]]

    train = rows(POSITIVE, "positive", slice(0, 5)) + rows(NEGATIVE, "negative", slice(0, 5))
    test = rows(POSITIVE, "positive", slice(5, 8)) + rows(NEGATIVE, "negative", slice(5, 8))
    return {"train": train, "test": test}


@pytest.fixture
def seed() -> int:
    """Seed torch, numpy and random with 0 and return the seed."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    return 0


@pytest.fixture(scope="session")
def tiny_backbone() -> Callable:
    """`make(name="tiny-bert", **BackboneConfig fields)` -> a fresh `Backbone`.

    Each backbone is loaded once per session and deep-copied on every call, because building a
    `LoraClassifier` injects LoRA layers into the model in place. The tokenizer is shared (nothing
    mutates it after `load_backbone`).
    """
    from metalora.backbones import load_backbone
    from metalora.config import BackboneConfig

    cache: dict = {}

    def make(name: str = "tiny-bert", **cfg):
        key = (name, tuple(sorted(cfg.items())))
        if key not in cache:
            cache[key] = load_backbone(BackboneConfig(name=name, **cfg))
        pristine = cache[key]
        return dataclasses.replace(pristine, model=copy.deepcopy(pristine.model))

    return make


def write_scenario(
    here: Path,
    rows: dict[str, list[dict]] | None = None,
    *,
    name: str = "local/reviews",
    family: str = "sentiment",
    task_type: str = "binary",
    text_columns: Sequence[str] = ("review",),
    label_column: str = "label",
    label_names: Sequence[str] = ("negative", "positive"),
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    data_files: dict | None = None,
    **extra,
) -> Path:
    """Write `<here>/card.md` (a local scenario card) and `<here>/<split>.jsonl` for each split of `rows`
    (default: `default_rows()`); `data_files` overrides what the card points at, `extra` adds or
    replaces `metalora:` fields. Returns the card's path."""
    rows = default_rows() if rows is None else rows
    here.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(here / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in split_rows:
                fh.write(json.dumps(row) + "\n")
    meta = {
        "name": name, "family": family, "task_type": task_type, "text_columns": list(text_columns),
        "label_column": label_column, "label_names": list(label_names), "metrics": list(metrics),
        "source": {"type": "local", "format": "json",
                   "data_files": data_files if data_files is not None else {s: f"{s}.jsonl" for s in rows}},
        **extra,
    }
    header = yaml.safe_dump({"pretty_name": name, "tags": ["metalora"], "metalora": meta}, sort_keys=False)
    card = here / "card.md"
    card.write_text(f"---\n{header}---\n\n# {name}\n\nA test scenario.\n", encoding="utf-8")
    return card


@pytest.fixture
def write_card(tmp_path: Path) -> Callable:
    """`write(rows=None, *, folder="scenario", **fields)` -> a local scenario card under tmp_path
    (see `write_scenario`)."""

    def write(rows: dict[str, list[dict]] | None = None, *, folder: str = "scenario", **fields) -> Path:
        return write_scenario(tmp_path / folder, rows, **fields)

    return write


@pytest.fixture
def local_card(write_card) -> Path:
    """The default local scenario: binary review sentiment, train 5 + 5, test 3 + 3."""
    return write_card()


# a meta config small enough for a bench test to meta-train in seconds (tiny BERT, 2 steps)
TINY_META = """\
backbone: {name: tiny-bert, max_length: 32}
lora: {r: 4, top_layers: 2}
algorithm: fomaml
steps: 2
meta_batch: 2
inner_steps: 1
adapt_steps: 0
episodes: {k_shot: 2, query_size: 4}
eval_every: 0
checkpoint_every: 0
log_with: none
"""
