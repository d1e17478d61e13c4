"""Scenario cards and scenarios: every shipped card validates, ARSC expands and loads, local cards load,
and every bad card / data file / support request is a DataError naming the file and the field."""
from __future__ import annotations


import numpy as np
import pytest

from metalora.cards import ARSC_THRESHOLDS, discover_cards, load_card
from metalora.errors import DataError, MetaloraError
from metalora.scenarios import (
    Scenario,
    all_scenarios,
    arsc_domains,
    check_support,
    expand,
    get_scenario,
    sample_support,
)

from conftest import ROOT, default_rows

CARDS = ROOT / "data_cards"


def _arsc_card():
    (card,) = [c for c in discover_cards() if c.source.type == "arsc"]
    return card


# -- the shipped cards -----------------------------------------------------------------------------
def test_every_shipped_card_validates():
    md = sorted(p for p in CARDS.glob("*.md") if p.name != "README.md")
    cards = discover_cards()
    assert len(cards) > 0
    assert len(cards) == len(md)
    assert sorted(c.path.name for c in cards) == [p.name for p in md]
    names = [c.name for c in cards]
    assert len(set(names)) == len(names), "two cards share a name"
    for c in cards:
        assert c.metrics and c.text_columns
        # a multiclass table card may take its labels from the data: then each scenario carries its own
        assert c.num_labels >= 2 or (c.is_table and c.task_type == "multiclass" and c.num_labels == 0), c.path
    scenarios = all_scenarios()
    assert len(set(scenarios)) >= len(cards)
    for sc in scenarios.values():
        assert sc.num_labels >= 2 and len(set(sc.label_names)) == sc.num_labels, sc.name


def test_arsc_expands_to_domain_x_threshold():
    card = _arsc_card()
    assert card.source.data_dir.is_dir(), f"ARSC data not found at {card.source.data_dir}"
    domains = arsc_domains(card.source.data_dir)
    raw = {p.name.split(".")[0] for p in card.source.data_dir.iterdir() if p.name.count(".") == 2}
    assert domains == sorted(raw) and "apparel" in domains and len(domains) > 10
    scenarios = expand(card)
    assert len(scenarios) == len(domains) * len(ARSC_THRESHOLDS)
    assert {s.name for s in scenarios} == {f"arsc/{d}.{t}" for d in domains for t in ARSC_THRESHOLDS}
    assert all(s.arsc_task == tuple(s.name.removeprefix("arsc/").split(".")) for s in scenarios)
    assert [s.name for s in expand(card, ["music"])] == ["arsc/music.t2", "arsc/music.t4", "arsc/music.t5"]
    with pytest.raises(DataError, match="ARSC domain\\(s\\) narnia have no files"):
        expand(card, ["narnia"])


def test_arsc_apparel_t2_loads():
    sc = get_scenario("arsc/apparel.t2")
    assert sc.name == "arsc/apparel.t2" and sc.arsc_task == ("apparel", "t2")
    assert sc.splits() == ("train", "dev", "test")
    raw_file = sc.card.source.data_dir / "apparel.t2.dev"
    raw = [line for line in raw_file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    ds = sc.load("dev")
    assert ds.column_names == ["text", "label"] and len(ds) == len(raw)
    assert set(ds["label"]) == {0, 1}
    assert all("\t" not in t and t for t in ds["text"])
    # `-1` -> negative (0), `1` -> positive (1), the text is the part before the TAB
    first_text, _, first_label = raw[0].rpartition("\t")
    assert ds[0]["text"] == first_text.strip()
    assert ds[0]["label"] == (1 if first_label.strip() == "1" else 0)
    assert set(sc.load("train")["label"]) == {0, 1}
    # music has no train file
    assert get_scenario("arsc/music.t5").splits() == ("dev", "test")
    with pytest.raises(DataError, match="music.t5.train does not exist"):
        get_scenario("arsc/music.t5").load("train")


def test_unknown_scenarios():
    with pytest.raises(DataError, match="unknown ARSC threshold 't3'"):
        get_scenario("arsc/apparel.t3")
    with pytest.raises(DataError, match="Did you mean: synthetic/sentiment/kitchen"):
        get_scenario("synthetic/sentiment/kitchn")


# -- local cards -------------------------------------------------------------------------------------
def test_local_card_loads(local_card):
    card = load_card(local_card)
    assert card.name == "local/reviews" and card.label_names == ("negative", "positive")
    sc = get_scenario(str(local_card))
    assert isinstance(sc, Scenario) and sc.splits() == ("train", "test")
    ds = sc.load("train")
    rows = default_rows()["train"]
    assert ds["text"] == [r["review"] for r in rows]
    assert ds["label"] == [1 if r["label"] == "positive" else 0 for r in rows]


def test_integer_labels_and_several_text_columns(write_card):
    rows = {"train": [{"user_profile": "gamer", "item": "headset", "y": 1}, {"user_profile": "parent", "item": "stroller", "y": 0},
                      {"user_profile": "student", "item": "ramen", "y": "bought"}]}
    path = write_card(rows, text_columns=("user_profile", "item"), label_column="y", label_names=("not_bought", "bought"),
                      name="local/purchase", family="purchase")
    ds = get_scenario(str(path)).load("train")
    assert ds["label"] == [1, 0, 1]
    assert ds["text"][0] == "user profile: gamer | item: headset"


# -- bad cards and bad data: a DataError naming the file and the field --------------------------------
def test_missing_data_file(write_card):
    path = write_card(data_files={"train": "train.jsonl", "test": "missing_test.jsonl"})
    sc = get_scenario(str(path))
    sc.load("train")
    with pytest.raises(DataError) as err:
        sc.load("test")
    msg = str(err.value)
    assert str(path) in msg and "missing_test.jsonl" in msg and "source.data_files" in msg
    with pytest.raises(DataError, match="no data file for split 'dev'"):
        sc.load("dev")


def test_missing_column(write_card):
    rows = {"train": [{"text": "fine", "label": "positive"}, {"text": "bad", "label": "negative"}]}
    path = write_card(rows)
    with pytest.raises(DataError) as err:
        get_scenario(str(path)).load("train")
    msg = str(err.value)
    assert "column(s) review not found" in msg and "train.jsonl" in msg and str(path) in msg and "text_columns" in msg


def test_label_outside_label_names(write_card):
    rows = {"train": [{"review": "fine", "label": "positive"}, {"review": "meh", "label": "neutral"}]}
    path = write_card(rows)
    with pytest.raises(DataError) as err:
        get_scenario(str(path)).load("train")
    msg = str(err.value)
    assert "row 1" in msg and "'neutral'" in msg and "'label'" in msg and "train.jsonl" in msg and str(path) in msg
    # an integer index out of range is refused the same way
    path = write_card({"train": [{"review": "x", "label": 2}]}, folder="ints")
    with pytest.raises(DataError, match="label 2 in column 'label'"):
        get_scenario(str(path)).load("train")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"family": "shoes"}, "metalora.family"),
        ({"task_type": "regression"}, "metalora.task_type"),
        ({"label_names": ["only"]}, "metalora.label_names"),
        ({"label_names": ["a", "b", "c"]}, "metalora.label_names"),  # binary needs exactly two
        ({"metrics": ["bleu"]}, "metalora.metrics"),
        ({"text_columns": []}, "metalora.text_columns"),
        ({"heldout": "yes"}, "metalora.heldout"),
        ({"colour": "red"}, "metalora.colour"),
        ({"source": {"type": "ftp"}}, "metalora.source.type"),
        ({"source": {"type": "local", "format": "xml", "data_files": {"train": "t.jsonl"}}}, "metalora.source.format"),
        ({"source": {"type": "synthetic", "generator": "sentiment/nowhere"}}, "metalora.source.generator"),
        ({"source": {"type": "arsc", "data_dir": ".", "thresholds": ["t9"]}}, "metalora.source.thresholds"),
    ],
)
def test_invalid_card_names_file_and_field(write_card, change, field):
    path = write_card(**change)
    with pytest.raises(DataError) as err:
        load_card(path)
    assert str(path) in str(err.value) and f"{field}:" in str(err.value)


def test_invalid_card_reports_every_problem(write_card):
    path = write_card(family="shoes", task_type="regression")
    with pytest.raises(DataError) as err:
        load_card(path)
    assert "metalora.family" in str(err.value) and "metalora.task_type" in str(err.value)


def test_card_without_header_or_metalora_block(tmp_path):
    bare = tmp_path / "bare.md"
    bare.write_text("# no header\n", encoding="utf-8")
    with pytest.raises(DataError, match="bare.md: a scenario card must start with a YAML header"):
        load_card(bare)
    plain = tmp_path / "plain.md"
    plain.write_text("---\nlicense: mit\n---\n# x\n", encoding="utf-8")
    with pytest.raises(DataError, match="plain.md: the YAML header needs a `metalora:` mapping"):
        load_card(plain)
    with pytest.raises(DataError, match="missing.md does not exist"):
        load_card(tmp_path / "missing.md")


# -- support sets ------------------------------------------------------------------------------------
def test_sample_support_is_k_per_class_and_seeded(local_card):
    ds = get_scenario(str(local_card)).load("train")
    a = sample_support(ds, 3, seed=0, num_labels=2)
    b = sample_support(ds, 3, seed=0, num_labels=2)
    c = sample_support(ds, 3, seed=1, num_labels=2)
    assert sorted(a["label"]) == [0, 0, 0, 1, 1, 1]
    assert a["text"] == b["text"]
    assert a["text"] != c["text"]
    assert len(set(a["text"])) == 6


def test_more_shots_than_examples(local_card):
    ds = get_scenario(str(local_card)).load("train")
    with pytest.raises(DataError) as err:
        sample_support(ds, 6, seed=0, num_labels=2, where="scenario local/reviews split train")
    msg = str(err.value)
    assert "scenario local/reviews split train" in msg and "6 shots" in msg and "only 5" in msg and "--shots" in msg
    with pytest.raises(DataError, match="shots must be >= 1"):
        sample_support(ds, 0, seed=0, num_labels=2)


def test_empty_support_set(local_card):
    ds = get_scenario(str(local_card)).load("train")
    with pytest.raises(DataError) as err:
        check_support(ds.select([]), 2, where="scenario local/reviews split train")
    assert "scenario local/reviews split train" in str(err.value) and "support set is empty" in str(err.value)
    with pytest.raises(DataError, match="split is empty"):
        sample_support(ds.select([]), 1, seed=0, num_labels=2, where="x")
    one_class = ds.select(np.flatnonzero(np.asarray(ds["label"]) == 1).tolist())
    with pytest.raises(DataError, match="one class only"):
        check_support(one_class, 2, where="x")


def test_data_error_is_a_metalora_error():
    assert issubclass(DataError, MetaloraError)
