"""The built-in synthetic scenario suite: specs, determinism, data shape, cards, and that scenarios differ."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from metalora.errors import DataError
from metalora.synthetic import (
    _ADJECTIVES,
    _BY_LEAF,
    _CATALOG,
    _SENT_DOMAINS,
    DEFAULT_SIZES,
    GENERATORS,
    _aspects,
    generate,
    heldout_names,
    train_names,
)

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("sentiment", "categorisation", "purchase", "fraud")
SMALL = {"train": 40, "dev": 10, "test": 40}


@pytest.fixture(scope="module")
def full() -> dict:
    """Every scenario at default sizes, seed 0 (about 2 s for all of them)."""
    return {name: generate(name, seed=0) for name in GENERATORS}


def _texts(split, spec) -> list[str]:
    return [" || ".join(row[c] for c in spec.text_columns) for row in split]


def _digest(ds) -> str:
    return hashlib.sha256(json.dumps({k: ds[k].to_dict() for k in ds}, sort_keys=True).encode()).hexdigest()


# --- the registry --------------------------------------------------------------------------------


def test_registry_families_and_heldout():
    assert 16 <= len(GENERATORS) <= 24
    by_family = Counter(spec.family for spec in GENERATORS.values())
    assert set(by_family) == set(FAMILIES)
    for family in FAMILIES:
        assert by_family[family] >= 3, family
        held = [n for n in heldout_names() if GENERATORS[n].family == family]
        assert 1 <= len(held) <= 2, (family, held)
    assert set(heldout_names()) | set(train_names()) == set(GENERATORS)
    assert not set(heldout_names()) & set(train_names())
    assert list(train_names()) == [n for n in GENERATORS if n not in heldout_names()]  # stable order


@pytest.mark.parametrize("name", list(GENERATORS))
def test_spec_is_consistent(name):
    spec = GENERATORS[name]
    assert spec.name == name and name.split("/")[0] in {"sentiment", "category", "purchase", "fraud"}
    assert spec.family in FAMILIES
    expected_metrics = {
        "binary": ("accuracy", "macro_f1", "auroc"),
        "multiclass": ("accuracy", "macro_f1"),
        "rare_positive": ("pr_auc", "auroc", "macro_f1"),
    }
    assert spec.metrics == expected_metrics[spec.task_type]
    if spec.task_type == "multiclass":
        assert 3 <= len(spec.label_names) <= 5
    else:
        assert len(spec.label_names) == 2
    assert len(set(spec.label_names)) == len(spec.label_names)
    assert spec.text_columns and "label" not in spec.text_columns
    assert spec.description.endswith(".") and len(spec.description.split()) >= 8
    family_shape = {
        "sentiment": ("binary", ("review",), ("negative", "positive")),
        "purchase": ("binary", ("user_profile", "item"), ("not_bought", "bought")),
        "fraud": ("rare_positive", None, ("legit", "fraud")),
        "categorisation": ("multiclass", ("listing",), None),
    }[spec.family]
    assert spec.task_type == family_shape[0]
    assert family_shape[1] is None or spec.text_columns == family_shape[1]
    assert family_shape[2] is None or spec.label_names == family_shape[2]


def test_every_review_product_has_enough_aspects():
    for domain, content in _SENT_DOMAINS.items():
        for product in content["product"]:
            name, pools = _aspects(domain, product)
            sizes = {pool: len(aspects) for pool, aspects in pools.items()}
            assert sizes["pos"] >= 3 and sizes["neg"] >= 3 and sizes["gripe"] >= 2 and sizes["plus"] >= 2, (
                domain, name, sizes)


def test_categorisation_taxonomies_differ():
    taxonomies = {spec.label_names for spec in GENERATORS.values() if spec.family == "categorisation"}
    assert len(taxonomies) == sum(spec.family == "categorisation" for spec in GENERATORS.values())
    assert len({len(t) for t in taxonomies}) >= 2  # different granularity too


# --- generation ----------------------------------------------------------------------------------


def test_unknown_name_raises_data_error():
    with pytest.raises(DataError) as err:
        generate("sentiment/kitchn")
    message = str(err.value)
    assert "sentiment/kitchn" in message and "sentiment/kitchen" in message and "fraud/gift_cards" in message


def test_bad_sizes_raise_data_error():
    with pytest.raises(DataError, match="validation"):
        generate("sentiment/kitchen", sizes={"validation": 10})
    with pytest.raises(DataError, match="non-negative"):
        generate("sentiment/kitchen", sizes={"train": -1})


def test_sizes_are_honoured():
    ds = generate("fraud/gift_cards", seed=0, sizes={"train": 8, "test": 0})
    assert ds.num_rows == {"train": 8, "dev": DEFAULT_SIZES["dev"], "test": 0}
    assert "fraud" in ds["train"]["label"]  # at least one positive even in a tiny split
    assert list(ds["test"].column_names) == ["transaction", "label"]


@pytest.mark.parametrize("name", ["sentiment/kitchen", "category/marketplace_eu", "purchase/gamers",
                                  "fraud/address_mismatch"])
def test_same_seed_identical_different_seed_differs(name):
    a = generate(name, seed=7, sizes=SMALL)
    b = generate(name, seed=7, sizes=SMALL)
    c = generate(name, seed=8, sizes=SMALL)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    col = GENERATORS[name].text_columns[0]
    assert set(a["train"][col]) != set(c["train"][col])


def test_deterministic_across_processes():
    """Same (name, seed) gives the same data in a new interpreter with a different hash salt."""
    names = ["sentiment/books_t4", "purchase/students", "fraud/review_bursts"]
    code = (
        "import hashlib, json, sys\n"
        "from metalora.synthetic import generate\n"
        f"for n in {names!r}:\n"
        "    ds = generate(n, seed=3, sizes={'train': 20, 'dev': 5, 'test': 20})\n"
        "    print(hashlib.sha256(json.dumps({k: ds[k].to_dict() for k in ds}, sort_keys=True).encode())"
        ".hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    here = [_digest(generate(n, seed=3, sizes={"train": 20, "dev": 5, "test": 20})) for n in names]
    assert out.stdout.split() == here


@pytest.mark.parametrize("name", list(GENERATORS))
def test_columns_labels_and_texts(name, full):
    spec = GENERATORS[name]
    ds = full[name]
    assert set(ds) == {"train", "dev", "test"}
    assert ds.num_rows == DEFAULT_SIZES
    seen: set[str] = set()
    for split_name, split in ds.items():
        assert split.column_names == list(spec.text_columns) + ["label"]
        labels = Counter(split["label"])
        assert set(labels) <= set(spec.label_names), labels
        if spec.task_type != "rare_positive":
            assert set(labels) == set(spec.label_names), (split_name, labels)
            assert max(labels.values()) - min(labels.values()) <= 1  # balanced
        for col in spec.text_columns:
            for text in split[col]:
                assert isinstance(text, str)
                assert 6 <= len(text.split()) <= 70, text
                assert not re.search(r"[{}]|word_\d|\s\s", text), text
        keys = _texts(split, spec)
        assert not seen & set(keys), "a text repeats across splits"
        assert len(set(keys)) == len(keys), "a text repeats within a split"
        seen |= set(keys)


@pytest.mark.parametrize("name", [n for n, s in GENERATORS.items() if s.task_type == "rare_positive"])
def test_rare_positive_rate(name, full):
    labels = [label for split in full[name].values() for label in split["label"]]
    rate = labels.count(GENERATORS[name].label_names[-1]) / len(labels)
    assert 0.02 <= rate <= 0.15, rate
    for split in full[name].values():
        assert GENERATORS[name].label_names[-1] in split["label"]


def test_texts_vary(full):
    """Templates with many phrasings: few exact repeats of whole sentences or listings."""
    for name, spec in GENERATORS.items():
        texts = full[name]["train"][spec.text_columns[-1]]
        words = Counter(w.lower().strip(".,;:!?()[]'\"") for t in texts for w in t.split())
        assert len(words) >= 150, (name, len(words))


# --- data cards ----------------------------------------------------------------------------------


def _card_header(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, flags=re.S)
    assert match, f"{path.name}: no YAML header between --- lines"
    assert len(match.group(2).split()) >= 40, f"{path.name}: body too short"
    return yaml.safe_load(match.group(1))


def test_cards_agree_with_generators():
    cards = sorted((ROOT / "data_cards").glob("synthetic_*.md"))
    assert len(GENERATORS) > 0 and len(cards) == len(GENERATORS)
    found = set()
    for path in cards:
        header = _card_header(path)
        meta = header["metalora"]
        name = meta["source"]["generator"]
        assert name in GENERATORS, path.name
        spec = GENERATORS[name]
        assert path.name == f"synthetic_{name.replace('/', '_')}.md"
        assert header["language"] == ["en"]
        assert header["license"] == "apache-2.0"
        assert header["task_categories"] == ["text-classification"]
        assert header["tags"] == ["metalora", "synthetic", spec.family]
        assert isinstance(header["pretty_name"], str) and header["pretty_name"].startswith("Synthetic ")
        assert meta == {
            "name": f"synthetic/{name}",
            "family": spec.family,
            "task_type": spec.task_type,
            "text_columns": list(spec.text_columns),
            "label_column": "label",
            "label_names": list(spec.label_names),
            "metrics": list(spec.metrics),
            "heldout": spec.heldout,
            "source": {"type": "synthetic", "generator": name, "seed": 0},
        }
        found.add(name)
    assert found == set(GENERATORS)


# --- scenarios are learnable, and differ -----------------------------------------------------------


def _fit(split, spec):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    weight = "balanced" if spec.task_type == "rare_positive" else None
    model = make_pipeline(CountVectorizer(binary=True),
                          LogisticRegression(max_iter=2000, class_weight=weight))
    return model.fit(_texts(split, spec), split["label"])


def _accuracy(model, split, spec) -> float:
    predictions = model.predict(_texts(split, spec))
    return sum(p == y for p, y in zip(predictions, split["label"])) / len(predictions)


@pytest.mark.parametrize("name", [n for n in GENERATORS if n != "purchase/repeat_browsers"])
def test_learnable_with_bag_of_words(name, full):
    """A bag-of-words model trained on a scenario's train split is well above chance on its test split."""
    from sklearn.metrics import average_precision_score

    spec, ds = GENERATORS[name], full[name]
    model = _fit(ds["train"], spec)
    if spec.task_type == "rare_positive":
        positive = list(model.classes_).index(spec.label_names[-1])
        scores = model.predict_proba(_texts(ds["test"], spec))[:, positive]
        truth = [y == spec.label_names[-1] for y in ds["test"]["label"]]
        assert average_precision_score(truth, scores) >= 0.5 > 3 * sum(truth) / len(truth)
    else:
        assert _accuracy(model, ds["test"], spec) >= 1 / len(spec.label_names) + 0.2


def test_repeat_browsers_rule_needs_both_columns(full):
    """Bought iff the item's product type was recently viewed: only visible by matching the two columns."""
    leaf_of = {p.name.lower(): p.leaf for p in _CATALOG}
    assert len(_BY_LEAF) >= 20
    for row in full["purchase/repeat_browsers"]["test"]:
        # the item reads "<brand> <adjective> <product name>..."
        item = next(n for n in sorted(leaf_of, key=len, reverse=True)
                    if any(f"{adj} {n}".lower() in row["item"].lower() for adj in _ADJECTIVES))
        profile = row["user_profile"].lower()
        viewed = profile.split("viewed: " if "viewed: " in profile else "this week: ")[1]
        viewed_leaves = {leaf_of[n.strip(" .")] for n in viewed.split(";")[0].split(", ")}
        assert (leaf_of[item] in viewed_leaves) == (row["label"] == "bought"), row


@pytest.mark.parametrize(("a", "b"), [("sentiment/books_t2", "sentiment/books_t4"),
                                      ("purchase/students", "purchase/new_parents")])
def test_scenarios_differ(a, b, full):
    """Same family, same labels: a model trained on scenario A is clearly worse on B than one trained on B."""
    spec_a, spec_b = GENERATORS[a], GENERATORS[b]
    assert spec_a.family == spec_b.family and spec_a.label_names == spec_b.label_names
    test_b = full[b]["test"]
    own = _accuracy(_fit(full[b]["train"], spec_b), test_b, spec_b)
    transferred = _accuracy(_fit(full[a]["train"], spec_a), test_b, spec_b)
    assert own >= 0.8, own
    assert own - transferred >= 0.15, (own, transferred)
