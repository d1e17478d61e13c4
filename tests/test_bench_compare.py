"""The comparison loop shared by every bench: the tail statistics, the 0-step fast path, vanilla's seeded
init, borderline support draws, `bench suite` (families, patterns) and the refusals that keep a
comparison honest (targets in training, inits that saw a target, test texts found in training)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import NEGATIVE, POSITIVE, TINY_META, write_scenario
from metalora.bench.report import method_tail, task_entry, task_tail
from metalora.cli import main


# -- tail statistics ------------------------------------------------------------------------------------


def test_task_tail_on_a_known_list():
    acc = [0.9, 0.5, 0.8, 0.7, 0.95, 0.6, 0.85, 0.75, 0.65, 0.55]
    tail = task_tail(acc, majority=0.7)
    assert tail["worst"] == 0.5 and tail["runs"] == 10
    assert tail["p10"] == pytest.approx(0.545)  # sorted: 0.5, 0.55, ... -> 0.5 + 0.9 * 0.05 (linear)
    assert tail["below_majority"] == 4  # 0.5, 0.6, 0.65, 0.55
    assert tail["p10_gap"] == pytest.approx(0.7 - 0.545)


def test_method_tail_finds_the_worst_run_and_the_largest_gap():
    runs = lambda xs: [{"seed": i, "accuracy": a, "macro_f1": a} for i, a in enumerate(xs)]  # noqa: E731
    tasks = {"a": task_entry(runs([0.9, 0.8, 0.85]), majority=0.6), "b": task_entry(runs([0.7, 0.4, 0.9]), majority=0.9)}
    tail = method_tail(tasks)
    assert tail["worst"] == 0.4 and tail["worst_task"] == "b" and tail["worst_seed"] == 1
    assert tail["runs"] == 6 and tail["below_majority"] == 2  # b: 0.7 and 0.4 are below 0.9
    assert tail["max_p10_gap_task"] == "b"
    assert tail["p10"] == pytest.approx(np.percentile([0.9, 0.8, 0.85, 0.7, 0.4, 0.9], 10))


def test_one_run_has_no_spread_instead_of_zero():
    entry = task_entry([{"seed": 0, "accuracy": 0.5, "macro_f1": 0.5, "seconds": 1.0, "peak_mb": 1.0}])
    assert entry["accuracy"]["std"] is None


# -- the 0-step fast path and vanilla's seeded init -------------------------------------------------------


def test_zero_step_fast_path_equals_encoding_the_test_set_again(tiny_backbone):
    from metalora.adapt import Init
    from metalora.bench.methods import lora_features, run_lora
    from metalora.config import AdaptConfig, LoraSettings
    from metalora.model import LoraClassifier

    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(r=4, top_layers=2))
    g = torch.Generator().manual_seed(3)
    lora = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in model.default_lora.items()}  # a trained-looking init
    init = Init(lora=lora)
    support, test = model.encode(POSITIVE[:3] + NEGATIVE[:3]), model.encode(POSITIVE[3:] + NEGATIVE[3:])
    sup_y, test_y = [1, 1, 1, 0, 0, 0], [1] * 5 + [0] * 5
    cfg = AdaptConfig(steps=0, optimizer="sgd")
    slow = run_lora(model, init, cfg, support, sup_y, 2, test, test_y)
    fast = run_lora(model, init, cfg, support, sup_y, 2, test, test_y, test_features=lora_features(model, lora, test))
    assert fast.metrics == pytest.approx(slow.metrics)
    with pytest.raises(ValueError):
        run_lora(model, init, AdaptConfig(steps=1), support, sup_y, 2, test, test_y, test_features=lora_features(model, lora, test))


def test_vanilla_lora_init_is_drawn_per_seed_and_leaves_the_module_alone(tiny_backbone):
    from metalora.bench.methods import seeded_default_lora
    from metalora.config import LoraSettings
    from metalora.model import LoraClassifier

    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(r=4))
    before = model.lora_params()
    a, a_again, b = seeded_default_lora(model, 1), seeded_default_lora(model, 1), seeded_default_lora(model, 2)
    for k in a:
        torch.testing.assert_close(a[k], a_again[k])
        if "lora_B" in k:
            assert torch.count_nonzero(a[k]) == 0  # peft's init: B = 0, so the adapted model starts as the backbone
    assert any(not torch.equal(a[k], b[k]) for k in a if "lora_A" in k)
    for k, v in model.lora_params().items():
        torch.testing.assert_close(v, before[k])


# -- borderline support draws ------------------------------------------------------------------------------


def test_borderline_draws_come_from_the_least_typical_examples():
    from metalora.bench.support import borderline_indices, typicality

    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 40)
    feats = np.where(labels[:, None] == 1, 1.0, -1.0) * np.ones((80, 4)) + 0.3 * rng.standard_normal((80, 4))
    odd = [0, 1, 2, 40, 41, 42]  # examples that look like the other class
    feats[odd] *= -0.2
    typical = typicality(feats, labels)
    assert typical[odd].max() < np.median(typical)
    picked = borderline_indices(typical, labels, shots=3, seed=0, num_labels=2, fraction=3 / 40, where="t")
    assert sorted(picked) == odd  # the pool of each class is its 3 least typical examples
    assert borderline_indices(typical, labels, 2, 5, 2, 0.25, "t") == borderline_indices(typical, labels, 2, 5, 2, 0.25, "t")


# -- bench suite -----------------------------------------------------------------------------------------------


def _rows(tag: str, pos, neg, n_train: int = 6, n_test: int = 3) -> dict:
    def rows(texts, label, sl):
        return [{"review": f"{tag} {t} {i}", "label": label} for i, t in enumerate(texts[sl])]

    train = rows(pos * 2, "positive", slice(0, n_train)) + rows(neg * 2, "negative", slice(0, n_train))
    test = rows(pos * 3, "positive", slice(8, 8 + n_test)) + rows(neg * 3, "negative", slice(8, 8 + n_test))
    return {"train": train, "test": test}


@pytest.fixture()
def suite_cards(tmp_path) -> Path:
    """Sentiment scenarios s/a, s/b (train) and s/c (target); fraud scenarios f/d (train) and f/e (target)."""
    root = tmp_path / "cards"
    for name, fam in (("s/a", "sentiment"), ("s/b", "sentiment"), ("s/c", "sentiment"), ("f/d", "fraud"), ("f/e", "fraud")):
        write_scenario(root / name.replace("/", "_"), _rows(name, POSITIVE, NEGATIVE), name=f"testsuite/{name}", family=fam)
    return root


def _suite(cards, out, *extra, meta_config=None):
    cfg = out.parent / "tiny.yaml"
    cfg.write_text(TINY_META)
    return main(["bench", "suite", "--cards", str(cards), "--backbone", "tiny-bert", "--shots", "2", "--seeds", "0", "1",
                 "--curve-steps", "none", "--meta-config", str(meta_config or cfg), "--out", str(out), "--no-progress", *extra])


def test_suite_end_to_end_reports_per_family(suite_cards, tmp_path):
    out = tmp_path / "out"
    rc = _suite(suite_cards, out, "--targets", "testsuite/s/c,testsuite/f/e", "--train", "testsuite/s/a,testsuite/s/b,testsuite/f/d",
                "--methods", "meta,vanilla,frozen-lr")
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["targets"] == ["testsuite/s/c", "testsuite/f/e"]
    assert r["families"] == {"testsuite/s/c": "sentiment", "testsuite/f/e": "fraud"}
    assert r["meta_training"]["meta"]["scenarios"] == ["testsuite/s/a", "testsuite/s/b", "testsuite/f/d"]
    for m in ("meta", "vanilla", "frozen-lr"):
        fam = r["methods"][m]["families"]
        assert set(fam) == {"sentiment", "fraud"}
        assert fam["fraud"]["accuracy"]["mean"] == pytest.approx(r["methods"][m]["tasks"]["testsuite/f/e"]["accuracy"]["mean"])
        means = [fam[f]["accuracy"]["mean"] for f in fam]
        assert r["methods"][m]["over_families"]["accuracy"] == pytest.approx(np.mean(means))
        tail = r["methods"][m]["tail"]
        assert tail["runs"] == 4 and 0.0 <= tail["worst"] <= tail["p10"] <= 1.0
    assert r["majority"]["testsuite/s/c"] == pytest.approx(0.5)
    md = (out / "report.md").read_text()
    assert "## Per family" in md and "| meta |" in md and "worst run" in md


@pytest.mark.parametrize("extra, message", [
    (("--targets", "testsuite/s/c", "--train", "testsuite/s/*", "--methods", "meta"), "also match target"),
    (("--targets", "testsuite/s/c", "--train", "testsuite/s/a", "--val", "testsuite/s/c", "--methods", "meta"), "also match target"),
    (("--targets", "testsuite/nothing/*", "--methods", "vanilla"), "matches no scenario"),
    (("--targets", "testsuite/s/c", "--train", "testsuite/zz", "--methods", "meta"), "matches no scenario"),
    (("--targets", "testsuite/s/c", "--methods", "vanilla", "--support-sampling", "sideways"), "invalid choice"),
])
def test_suite_bad_input_refused_before_training(suite_cards, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    try:
        rc = _suite(suite_cards, out, *extra)
    except SystemExit as exc:  # argparse refuses unknown choices itself
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert not (out / "meta-train").exists() and not (out / "report.json").exists()


def test_target_test_texts_found_in_training_are_refused_or_dropped(tmp_path, capsys):
    root = tmp_path / "cards"
    target = _rows("t", POSITIVE, NEGATIVE)
    write_scenario(root / "t", target, name="leak/t")
    shared = _rows("a", POSITIVE, NEGATIVE)
    # scenario `a` is cut from the same rows as the target: every target test text is in its training split
    write_scenario(root / "a", {"train": shared["train"] + target["test"], "test": shared["test"]}, name="leak/a")
    write_scenario(root / "b", _rows("b", POSITIVE, NEGATIVE), name="leak/b")
    rc = _suite(root, tmp_path / "out", "--targets", "leak/t", "--train", "leak/a,leak/b", "--methods", "meta")
    err = capsys.readouterr().err
    assert rc == 2 and "test texts also occur in training" in err and "leak/a" in err
    # one shared text of six, tolerated at --max-overlap 0.2: left out of scoring and named
    write_scenario(root / "a2", {"train": shared["train"] + target["test"][:1], "test": shared["test"]}, name="leak/a2")
    out = tmp_path / "out2"
    rc = _suite(root, out, "--targets", "leak/t", "--train", "leak/a2,leak/b", "--methods", "meta", "--max-overlap", "0.2")
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["test_examples"]["leak/t"] == 5
    assert any("not scored" in n for n in r["notes"])


def test_an_init_that_trained_on_a_target_is_refused(suite_cards, tmp_path, capsys):
    out = tmp_path / "first"
    assert _suite(suite_cards, out, "--targets", "testsuite/f/e", "--train", "testsuite/s/a,testsuite/s/c",
                  "--methods", "meta") == 0
    init = out / "meta-train" / "meta-init"
    rc = main(["bench", "suite", "--cards", str(suite_cards), "--targets", "testsuite/s/c", "--meta-init", str(init),
               "--methods", "meta", "--shots", "2", "--seeds", "0", "--out", str(tmp_path / "second"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "trained or validated on target(s) testsuite/s/c" in err
    assert not (tmp_path / "second" / "report.json").exists()


def test_borderline_sampling_runs_through_the_bench(suite_cards, tmp_path):
    out = tmp_path / "out"
    assert _suite(suite_cards, out, "--targets", "testsuite/s/c", "--methods", "frozen-lr", "--support-sampling", "borderline",
                  "--borderline-fraction", "0.5") == 0
    r = json.loads((out / "report.json").read_text())
    assert r["support_sampling"] == "borderline" and r["borderline_fraction"] == 0.5
    assert [run["seed"] for run in r["methods"]["frozen-lr"]["tasks"]["testsuite/s/c"]["runs"]] == [0, 1]
    assert "(borderline draws)" in (out / "report.md").read_text()


def test_support_split_per_pattern():
    from metalora.bench.suite import parse_support_split
    from metalora.errors import ConfigError

    assert parse_support_split("train") == ("train", ())
    assert parse_support_split("arsc/*=dev, train") == ("train", (("arsc/*", "dev"),))
    for bad in ("arsc/*=dev", "train,dev", "=dev,train"):
        with pytest.raises(ConfigError, match="--support-split"):
            parse_support_split(bad)


def test_natural_episodes_from_a_scenario_smaller_than_query_size(write_card, tiny_backbone):
    """A 20-review hotel cannot fill 5-shot support + 16 queries: its episodes get fewer queries instead."""
    from metalora.config import EpisodeConfig
    from metalora.meta.episodes import EpisodeSampler, ExampleCache
    from metalora.model import LoraClassifier
    from metalora.config import LoraSettings
    from metalora.scenarios import get_scenario

    card = write_card(_rows("h", POSITIVE, NEGATIVE, n_train=7))
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(r=4))
    sampler = EpisodeSampler([get_scenario(str(card))], EpisodeConfig(k_shot=5, query_size=16, query_balance="natural"),
                             ExampleCache(model), seed=0)
    ep = sampler.episode(0, 0)
    assert len(ep.support) == 10 and len(ep.query) == 4  # 14 rows, 10 in the support
