"""The head bank (metalora.heads): shrinking support prototypes toward the training scenarios' heads.

Part 1 works on hand-made feature vectors, where what the head should do is known exactly. Part 2 runs
the real paths on the tiny random BERT: the meta-trainer builds, validates and saves a bank, `load_init`
reads it, `adapt` uses it, and an adapter saved from it predicts the same after loading.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from metalora.config import MetaTrainConfig
from metalora.errors import ConfigError, DataError
from metalora.heads import (
    BankEntry,
    HeadBank,
    HeadChoice,
    build_bank,
    choice_grid,
    class_means,
    head_from_prototypes,
    mixture_weights,
    pick_choice,
    shrink_prototypes,
    shrink_weights,
    shrunk_head,
)
from metalora.model import prototype_head

H = 8
NAMES = ("negative", "positive")


def unit(*parts: tuple[int, float], noise: torch.Tensor | None = None) -> torch.Tensor:
    v = torch.zeros(H)
    for i, a in parts:
        v[i] += a
    if noise is not None:
        v = v + noise
    return F.normalize(v, dim=0)


def cluster(n: int, *parts: tuple[int, float], scale: float = 0.05, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([unit(*parts, noise=scale * torch.randn(H, generator=g)) for _ in range(n)])


def entry(name: str, neg: torch.Tensor, pos: torch.Tensor, freq=(0.5, 0.5), names=NAMES) -> BankEntry:
    return BankEntry(name, names, torch.stack([neg, pos]), torch.tensor(freq).log(), (40, 40))


def accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x @ w.T + b).argmax(1) == y).float().mean())


@pytest.fixture
def separable():
    """A test set with negatives near e0 and positives near e1, and a bank that knows where they sit."""
    x = torch.cat([cluster(50, (0, 1.0), seed=1), cluster(50, (1, 1.0), seed=2)])
    y = torch.tensor([0] * 50 + [1] * 50)
    bank = HeadBank([
        entry("shop_a.t2", unit((0, 1.0)), unit((1, 1.0)), (0.1, 0.9)),
        entry("shop_b.t2", unit((0, 1.0), (2, 0.2)), unit((1, 1.0), (2, 0.2)), (0.2, 0.8)),
        # a task whose classes sit elsewhere (another kind of negative/positive)
        entry("other.kind", unit((0, 1.0), (4, 1.0)), unit((1, 1.0), (5, 1.0))),
        # a different label set: never used for a negative/positive target
        BankEntry("categories", ("shoes", "bags"), torch.stack([unit((6, 1.0)), unit((7, 1.0))]), torch.tensor([0.5, 0.5]).log()),
    ])
    return x, y, bank


# -- 1. the constructed failure ----------------------------------------------------------------------
def test_mislabelled_looking_support_no_longer_flips_a_separable_test_set(separable):
    x, y, bank = separable
    # The support's negatives are extreme ones (e0 plus a rant direction e3); its "positives" are mild
    # complaints that look like negatives (e0 with a trace of e1): a true but unlucky 1-star-vs-rest draw.
    support = torch.cat([cluster(5, (0, 1.0), (3, 1.0), seed=3), cluster(5, (0, 1.0), (1, 0.1), seed=4)])
    labels = torch.tensor([0] * 5 + [1] * 5)

    w, b = prototype_head(support, labels, 2)
    plain = accuracy(w, b, x, y)
    negatives_kept = accuracy(w, b, x[y == 0], y[y == 0])
    assert negatives_kept < 0.1 and plain <= 0.55  # the plain 0-step head flips every negative

    w, b, info = bank.build(support, labels, 2, NAMES, scale=10.0, choice=HeadChoice(shrinkage=0.5, temperature=1.0))
    assert info.route == "bank" and set(info.weights) == {"shop_a.t2", "shop_b.t2", "other.kind"}  # not "categories"
    assert accuracy(w, b, x, y) >= 0.95
    # and not by predicting one class everywhere: both classes are recovered
    assert accuracy(w, b, x[y == 0], y[y == 0]) >= 0.9 and accuracy(w, b, x[y == 1], y[y == 1]) >= 0.9


# -- 2. the two ends of the shrinkage --------------------------------------------------------------------
def test_shrinkage_one_is_the_prior_head(separable):
    _, _, bank = separable
    support = torch.cat([cluster(5, (0, 1.0), seed=5), cluster(5, (1, 1.0), (3, 0.5), seed=6)])
    labels = torch.tensor([0, 1] * 5)
    for temperature in (0.0, 1.0):
        prior_protos, _, _ = bank.prior(support, labels, NAMES, 10.0, temperature)
        w, b, _ = bank.build(support, labels, 2, NAMES, 10.0, choice=HeadChoice(shrinkage=1.0, temperature=temperature))
        pw, pb = head_from_prototypes(prior_protos)
        assert_close(w, pw)
        assert_close(b, pb)
        assert not torch.allclose(w, prototype_head(support, labels, 2)[0])
    # with a single matching entry the prior head IS that entry's prototype head
    one = HeadBank([bank.entries[0]])
    w, b, _ = one.build(support, labels, 2, NAMES, 10.0, choice=HeadChoice(shrinkage=1.0))
    ew, eb = head_from_prototypes(bank.entries[0].prototypes)
    assert_close(w, ew)
    assert_close(b, eb)


def test_shrinkage_zero_is_the_plain_prototype_head(separable):
    _, _, bank = separable
    support = cluster(12, (0, 1.0), (1, 0.5), scale=0.3, seed=7)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1])
    u = torch.randn(H, generator=torch.Generator().manual_seed(8))
    for direction in (None, u):
        w, b, info = bank.build(support, labels, 2, NAMES, 10.0, direction, HeadChoice(shrinkage=0.0))
        pw, pb = prototype_head(support, labels, 2, direction)
        assert info.route == "bank"
        assert_close(w, pw)
        assert_close(b, pb)


def test_a_label_set_absent_from_the_bank_falls_back_to_plain_prototypes(separable):
    _, _, bank = separable
    support = cluster(6, (0, 1.0), (1, 0.5), scale=0.3, seed=9)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    w, b, info = bank.build(support, labels, 3, ("cheap", "fair", "pricey"), 10.0, choice=HeadChoice(shrinkage=1.0, class_prior=1.0))
    pw, pb = prototype_head(support, labels, 3)
    assert info.route == "prototypes" and "no bank entry" in info.reason and "pricey" in info.reason
    assert_close(w, pw)
    assert_close(b, pb)
    # a subset of a bank label set is not a match either
    w, b, info = bank.build(support[:2], labels[:2], 2, ("negative", "neutral"), 10.0)
    assert info.route == "prototypes"
    # and no label names at all (a caller that does not know them) is the plain head too
    w, b, info = bank.build(support[:2], labels[:2], 2, None, 10.0, choice=HeadChoice(shrinkage=1.0))
    assert info.route == "prototypes"
    assert_close(w, prototype_head(support[:2], labels[:2], 2)[0])


# -- 3. the pieces -----------------------------------------------------------------------------------------
def test_bank_entries_are_aligned_by_label_name_not_position(separable):
    _, _, bank = separable
    swapped = BankEntry("swapped", ("Positive", "negative "), torch.stack([unit((1, 1.0)), unit((0, 1.0))]),
                        torch.tensor([0.9, 0.1]).log())
    both = HeadBank([bank.entries[0], swapped])
    found = both.matching(NAMES)
    assert len(found) == 2
    assert_close(found[1][1], bank.entries[0].prototypes)
    assert_close(found[1][2], bank.entries[0].log_prior)


def test_mixture_weights_follow_the_support_likelihood(separable):
    _, _, bank = separable
    protos = torch.stack([e.prototypes for e in bank.entries[:3]])
    support = torch.cat([cluster(5, (4, 1.0), seed=10), cluster(5, (5, 1.0), seed=11)])  # only `other.kind` tells them apart
    labels = torch.tensor([0] * 5 + [1] * 5)
    assert_close(mixture_weights(protos, support, labels, 10.0, 0.0), torch.full((3,), 1 / 3))
    w = mixture_weights(protos, support, labels, 10.0, 1.0)
    assert int(w.argmax()) == 2 and float(w[2]) > 0.99
    assert_close(w.sum(), torch.tensor(1.0))
    # a lower temperature spreads the weight: the weights are softmax(temperature * log-likelihood)
    assert float(mixture_weights(protos, support, labels, 10.0, 0.01)[2]) < float(w[2])


def test_shrink_weights_are_the_chosen_weight_at_the_chosen_shots_and_fade_with_more():
    counts = torch.tensor([5.0, 20.0, 0.0])
    w = shrink_weights(counts, 0.5, 5)
    assert_close(w[0], torch.tensor(0.5))
    assert float(w[1]) < 0.25 and float(w[2]) == 1.0  # more shots, less prior; an absent class takes the prior
    assert_close(shrink_weights(counts, 1.0, 5), torch.ones(3))
    assert_close(shrink_weights(counts, 0.0, 5), torch.tensor([0.0, 0.0, 1.0]))
    a, p = torch.randn(3, H), torch.randn(3, H)
    assert_close(shrink_prototypes(a, p, torch.tensor([0.0, 1.0, 0.25]))[1], p[1])
    assert_close(shrink_prototypes(a, p, 0.25), 0.75 * a + 0.25 * p)


def test_class_prior_adds_its_log_frequency_to_the_logits():
    protos, prior = torch.randn(2, H), torch.randn(2, H)
    counts = torch.tensor([5.0, 5.0])
    log_prior = torch.tensor([0.1, 0.9]).log()
    base = HeadChoice(shrinkage=0.5)
    w0, b0 = shrunk_head(protos, counts, prior, log_prior, base, scale=7.0)
    w1, b1 = shrunk_head(protos, counts, prior, log_prior, dataclasses.replace(base, class_prior=0.5), scale=7.0)
    assert_close(w0, w1)
    x = torch.randn(4, H)
    assert_close(7.0 * (x @ w1.T + b1), 7.0 * (x @ w0.T + b0) + 0.5 * log_prior)


def test_an_absent_class_is_filled_from_the_bank(separable):
    _, _, bank = separable
    support, labels = cluster(3, (0, 1.0), seed=12), torch.tensor([0, 0, 0])
    w, b, _ = bank.build(support, labels, 2, NAMES, 10.0, choice=HeadChoice(shrinkage=0.0))
    assert float(b[1]) > -100  # a usable row for "positive", not the -1e4 of an empty class
    x = torch.stack([unit((0, 1.0)), unit((1, 1.0))])
    assert (x @ w.T + b).argmax(1).tolist() == [0, 1]


def test_choice_grid_puts_the_plain_head_first():
    grid = choice_grid((0.5, 0.0), (1.0, 0.0), (0.0, 1.0), 5)
    assert len(grid) == 8 and grid[0].shrinkage == 0.0 and grid[0].class_prior == 0.0
    assert all(c.shrinkage_shots == 5 for c in grid)


def test_validation_picks_by_accuracy_or_by_accuracy_that_keeps_macro_f1():
    plain, shrunk, prior = HeadChoice(0.0), HeadChoice(0.5), HeadChoice(0.5, class_prior=1.0)
    scores = {plain: (0.80, 0.70), shrunk: (0.83, 0.71), prior: (0.86, 0.60)}
    order = [plain, shrunk, prior]
    assert pick_choice(scores, order, "accuracy") == prior
    assert pick_choice(scores, order, "accuracy_keep_f1", 0.01) == shrunk  # the prior's accuracy costs 10 points of F1
    assert pick_choice(scores, order, "accuracy_keep_f1", 0.2) == prior
    assert pick_choice({**scores, shrunk: (0.80, 0.75)}, order, "accuracy_keep_f1") == plain  # a tie goes to the simpler
    with pytest.raises(ValueError, match="plain"):
        pick_choice({shrunk: (0.8, 0.7)}, [shrunk], "accuracy_keep_f1")
    assert pick_choice(scores, order, "accuracy_plus_f1") == shrunk  # 1.54 against the prior's 1.46 and plain's 1.50
    assert pick_choice({**scores, prior: (0.86, 0.68)}, order, "accuracy_plus_f1") == shrunk  # a tie goes to the simpler
    assert pick_choice({**scores, prior: (0.86, 0.70)}, order, "accuracy_plus_f1") == prior
    assert pick_choice({shrunk: (0.8, 0.7)}, [shrunk], "accuracy_plus_f1") == shrunk  # needs no plain head


def test_build_bank_takes_class_means_and_natural_frequencies():
    g = torch.Generator().manual_seed(13)
    feats = {"a": torch.randn(30, H, generator=g)}
    labels = [0] * 20 + [1] * 10
    seen = {}

    def featurize(name, idx):
        seen[name] = idx
        return feats[name][idx]

    bank = build_bank([("a", NAMES, labels), ("empty-class", NAMES, [0, 0, 0])], featurize, per_class=4, seed=0)
    assert [e.scenario for e in bank.entries] == ["a"]  # a scenario missing a class gets no entry
    idx = seen["a"]
    assert len(idx) == 8 and sum(labels[i] for i in idx) == 4
    protos, _ = class_means(feats["a"][idx], torch.tensor([labels[i] for i in idx]), 2)
    assert_close(bank.entries[0].prototypes, protos)
    assert_close(bank.entries[0].log_prior.exp(), torch.tensor([2 / 3, 1 / 3]))


def test_bank_storage_round_trip_and_corrupt_folders(separable):
    _, _, bank = separable
    bank = bank.with_choice(HeadChoice(0.25, 5, 1.0, 0.5))
    meta = json.loads(json.dumps(bank.meta()))
    same = HeadBank.load(meta, bank.tensors(), "init")
    assert same.choice == bank.choice
    for a, b in zip(bank.entries, same.entries):
        assert a.scenario == b.scenario and a.label_names == b.label_names
        assert_close(a.prototypes, b.prototypes)
        assert_close(a.log_prior, b.log_prior)
    assert HeadBank.load(None, {}, "init") is None
    tensors = bank.tensors()
    del tensors["bank.1.log_prior"]
    with pytest.raises(DataError, match="entry 1 .*incomplete"):
        HeadBank.load(meta, tensors, "init")
    with pytest.raises(DataError, match="shrinkage must be in"):
        HeadBank.load({**meta, "shrinkage": 1.5}, bank.tensors(), "init")


def test_head_config_is_validated():
    from metalora.config import load_config

    with pytest.raises(ConfigError, match=r"head.shrinkage: got 1.5; must be in \[0, 1\]"):
        load_config(MetaTrainConfig, None, ["head.shrinkage=[0,1.5]"])
    with pytest.raises(ConfigError, match="head.criterion"):
        load_config(MetaTrainConfig, None, ["head.criterion=f1"])
    assert load_config(MetaTrainConfig, None, ["head.criterion=accuracy_keep_f1"]).head.f1_tolerance == 0.01
    with pytest.raises(ConfigError, match="needs validation episodes"):  # several values to choose from, no validation
        load_config(MetaTrainConfig, None, ["head.bank=true"])
    cfg = load_config(MetaTrainConfig, None, ["head.bank=true", "head.shrinkage=[0.5]", "head.temperature=[1]"])
    assert cfg.head.shrinkage == (0.5,) and cfg.head.class_prior == (0.0,)


# -- 4. through the real paths (tiny BERT, synthetic suite) ------------------------------------------------
@pytest.fixture(scope="module")
def banked_run(tmp_path_factory, tiny_backbone):
    from tests.test_meta_trainer import smoke_cfg, trainer

    out = tmp_path_factory.mktemp("banked") / "run"
    cfg = smoke_cfg(out, "head.bank=true", "head.bank_examples=4", "head.shrinkage=[0,0.5,1]", "head.temperature=[0,1]",
                    "head.class_prior=[0,1]", "head.criterion=accuracy_keep_f1", "scenarios=[synthetic/sentiment/*,synthetic/category/*,synthetic/fraud/*]",
                    "val_scenarios=[synthetic/sentiment/beauty]", "val_episodes=2", "head.val_episodes=4", "inner_steps=0", "steps=2",
                    "checkpoint_every=0", "adapt_steps_choices=[0,1]")
    t = trainer(cfg, tiny_backbone)
    t.train(resume=False)
    return t, out


def test_the_meta_trainer_validates_and_saves_a_bank(banked_run):
    from safetensors.torch import load_file

    from metalora.adapter_io import INIT_FILE, META_FILE

    t, out = banked_run
    history = json.loads((out / "history.json").read_text())
    for record in history:
        scores = record["val_by_head"]
        assert len(scores) == 12
        chosen = record["head"]
        key = f"shrink={chosen['shrinkage']:g},temp={chosen['temperature']:g},prior={chosen['class_prior']:g}"
        plain = scores["shrink=0,temp=0,prior=0"]["macro_f1"]
        kept = [v["accuracy"] for v in scores.values() if v["macro_f1"] >= plain - 0.01 - 1e-4]
        assert scores[key]["macro_f1"] >= plain - 0.01 - 1e-4 and scores[key]["accuracy"] == max(kept)
    meta = json.loads((out / "meta-init" / META_FILE).read_text())
    assert meta["head"]["route"] == "bank"
    names = [e["scenario"] for e in meta["head"]["bank"]]
    assert names == [s.name for s in t.train_scenarios]  # every training scenario, none of the validation ones
    assert "synthetic/sentiment/beauty" not in names
    tensors = load_file(str(out / "meta-init" / INIT_FILE))
    assert sum(k.startswith("bank.") for k in tensors) == 2 * len(names)


def test_the_saved_bank_is_the_saved_weights_own(banked_run):
    """The bank in final-init is rebuilt under exactly the LoRA weights saved beside it."""
    from metalora.api import load_init

    t, out = banked_run
    _, init = load_init(out / "final-init")
    again = t.build_bank(init.head_bank.choice)
    assert len(init.head_bank.entries) == len(again.entries) > 0
    for a, b in zip(init.head_bank.entries, again.entries):
        assert_close(a.prototypes, b.prototypes, atol=1e-5, rtol=0)
        assert_close(a.log_prior, b.log_prior)
    last = json.loads((out / "history.json").read_text())[-1]["head"]
    assert init.head_bank.choice == HeadChoice(**last)


def test_adapt_uses_the_bank_and_save_load_predicts_the_same(banked_run, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from metalora.adapt import build_head
    from metalora.api import adapt, load_adapter, load_init
    from metalora.backbones import load_backbone
    from metalora.config import AdaptConfig
    from metalora.scenarios import get_scenario, sample_support

    _, out = banked_run
    init_dir = out / "meta-init"
    model, init = load_init(init_dir)
    assert init.head_bank is not None and len(init.head_bank.entries) > 0
    forced = init.head_bank.with_choice(HeadChoice(shrinkage=0.5, temperature=1.0, class_prior=1.0))

    sc = get_scenario("synthetic/sentiment/beauty")
    cfg = AdaptConfig(steps=0, optimizer="sgd", backbone=model.backbone.config, seed=3)
    adapted = adapt(sc, init=init_dir, config=cfg, shots=2, evaluate_split=None)
    assert adapted.metadata["adapt"]["head"]["route"] == "bank"
    # 0 steps: the saved head is exactly the bank's head on the support features
    ds = sample_support(sc.load("train"), 2, 3, sc.num_labels)
    enc = adapted.model.encode(ds["text"])
    w, b, _ = build_head(adapted.model, init.lora, enc, torch.tensor(ds["label"]), 2, bank=init.head_bank,
                            label_names=sc.label_names, scale=float(init.logit_scale.exp()))
    assert_close(adapted.params["head.weight"], w, atol=1e-5, rtol=0)
    assert_close(adapted.params["head.bias"], b, atol=1e-5, rtol=0)
    # the choice stored in metalora.json is what adapt uses: a copy of the init told to shrink halfway and
    # to add the class prior gives exactly that head, away from the plain prototypes
    edited = tmp_path / "edited-init"
    shutil.copytree(init_dir, edited)
    meta = json.loads((edited / "metalora.json").read_text())
    meta["head"].update(forced.choice.to_dict())
    (edited / "metalora.json").write_text(json.dumps(meta))
    via_api = adapt(sc, init=edited, config=cfg, shots=2, evaluate_split=None)
    feats = model.features(init.lora, enc).detach()
    fw, fb, _ = forced.build(feats, torch.tensor(ds["label"]), 2, sc.label_names, float(init.logit_scale.exp()))
    assert_close(via_api.params["head.weight"], fw, atol=1e-5, rtol=0)
    assert_close(via_api.params["head.bias"], fb, atol=1e-5, rtol=0)
    pw, pb = prototype_head(feats, torch.tensor(ds["label"]), 2)
    assert not torch.allclose(fw, pw) and not torch.allclose(fb, pb)

    folder = adapted.save(tmp_path / "beauty")
    loaded = load_adapter(folder)
    texts = list(sc.load("test")["text"][:16])
    want = torch.as_tensor(adapted.predict(texts).probabilities)
    assert_close(torch.as_tensor(loaded.predict(texts).probabilities), want, atol=1e-5, rtol=0)
    # plain peft (no metalora) loads the adapter made from a banked init and gives the same probabilities
    bb = load_backbone("tiny-bert")
    peft_model = PeftModel.from_pretrained(bb.model, str(folder)).eval()
    head = load_file(str(folder / "metalora_head.safetensors"))
    tok = bb.tokenizer(texts, padding=True, truncation=True, max_length=model.backbone.config.max_length, return_tensors="pt")
    with torch.no_grad():
        h = peft_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
        x = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert_close(torch.softmax(x @ head["weight"].T + head["bias"], -1), want, atol=1e-5, rtol=0)

    # a target whose labels no training scenario has: plain prototypes, and the metadata says why
    jp = adapt("synthetic/category/marketplace_jp", init=init_dir, config=cfg, shots=2, evaluate_split=None)
    assert jp.metadata["adapt"]["head"]["route"] == "prototypes"
    assert "no bank entry" in jp.metadata["adapt"]["head"]["reason"]


def test_without_a_bank_nothing_changes(tmp_path, tiny_backbone):
    """An init saved without head.bank has no bank, and adapt builds the plain prototype head."""
    from metalora.adapter_io import META_FILE
    from metalora.api import load_init
    from tests.test_meta_trainer import smoke_cfg, trainer

    out = tmp_path / "run"
    trainer(smoke_cfg(out, "steps=1", "checkpoint_every=0"), tiny_backbone).train(resume=False)
    assert "head" not in json.loads((out / "meta-init" / META_FILE).read_text())
    _, init = load_init(out / "meta-init")
    assert init.head_bank is None


def test_metalora_adapt_init_says_which_head_it_built(banked_run, tmp_path, capsys):
    from metalora.cli import main

    _, out = banked_run
    edited = tmp_path / "init"
    shutil.copytree(out / "meta-init", edited)
    meta = json.loads((edited / "metalora.json").read_text())
    meta["head"].update(shrinkage=0.5)
    (edited / "metalora.json").write_text(json.dumps(meta))
    assert main(["adapt", "synthetic/sentiment/beauty", "--init", str(edited), "--shots", "2", "--out", str(tmp_path / "a"),
                 "--eval-split", "none"]) == 0
    assert "shrunk toward the init's head bank" in capsys.readouterr().out
    saved = json.loads((tmp_path / "a" / "metalora.json").read_text())
    assert saved["adapt"]["head"]["route"] == "bank" and saved["adapt"]["head"]["top_bank_entries"]
    assert main(["adapt", "synthetic/category/marketplace_jp", "--init", str(edited), "--shots", "2", "--out", str(tmp_path / "b"),
                 "--eval-split", "none"]) == 0
    assert "plain support prototypes (no bank entry" in capsys.readouterr().out


def test_head_validation_scores_macro_f1_on_each_scenarios_pooled_queries(banked_run):
    """A 16-query episode often lacks the rare class; F1 is taken over a scenario's queries pooled, as on a test set."""
    from sklearn.metrics import f1_score

    t, _ = banked_run
    scores = t.validate_head()
    plain = next(c for c in scores if c.shrinkage == 0 and c.class_prior == 0)
    preds, trues, accs = [], [], []
    for i in range(t.cfg.head.val_episodes):
        ep = t.val_sampler.episode(0, i)
        with torch.no_grad():
            w, b = prototype_head(t.model.features(t.lora(), ep.support), ep.support_labels, ep.num_labels)
            pred = (t.model.features(t.lora(), ep.query) @ w.T + b).argmax(-1)
        accs.append(float((pred == ep.query_labels).float().mean()))
        preds += [ep.classes[j] for j in pred.tolist()]
        trues += [ep.classes[j] for j in ep.query_labels.tolist()]
    assert {ep.scenario for ep in [t.val_sampler.episode(0, 0)]} == {"synthetic/sentiment/beauty"}  # one scenario
    assert scores[plain][0] == pytest.approx(sum(accs) / len(accs))
    assert scores[plain][1] == pytest.approx(f1_score(trues, preds, average="macro"))
