"""Table cards (metalora/tables.py): one table -> many scenarios. Expansion and names, filter, label rule,
min_per_class, the seeded stratified split, and bad input as one-line DataErrors naming the card and field.
The tables are small CSV files written here; the last tests check the shipped cards on ../shared/data."""
from __future__ import annotations

import csv
import fnmatch
from pathlib import Path

import numpy as np
import pytest
import yaml

from metalora.cards import load_card
from metalora.errors import DataError, DataWarning
from metalora.scenarios import all_scenarios, expand, get_scenario, skipped
from metalora.tables import expand_table, slug

from conftest import ROOT


def all_texts(sc) -> list[str]:
    return [t for split in sc.splits() for t in sc.load(split)["text"]]


def write_table(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_table_card(folder: Path, *, fn: str = "card.md", data_files=None, **meta) -> Path:
    """A table card in `folder` over `table.csv` (override any metalora field through `meta`)."""
    fields = {"name": "shop", "family": "categorisation", "task_type": "multiclass", "text_columns": ["title"],
              "label_column": "kind", "scenario_column": "dept",
              "source": {"type": "local", "format": "csv", "data_files": data_files or {"train": "table.csv"}}}
    fields.update(meta)
    header = yaml.safe_dump({"pretty_name": fields["name"], "metalora": fields}, sort_keys=False)
    card = folder / fn
    card.write_text(f"---\n{header}---\n\n# {fields['name']}\n", encoding="utf-8")
    return card


def shop_rows() -> list[dict]:
    """Two departments with different kinds, a third with one kind only, ratings 1-5, a rare kind."""
    rows = []
    for i in range(40):
        rows.append({"dept": "Fine gauge", "kind": ["cardigan", "pullover"][i % 2], "title": f"knit item {i}",
                     "rating": 1 + i % 5, "colour": ["red", "red", "blue", "blue"][i % 4]})
    for i in range(30):
        rows.append({"dept": "Shoes", "kind": ["boot", "sneaker", "heel"][i % 3], "title": f"shoe {i}",
                     "rating": 1 + i % 5, "colour": "black"})
    for i in range(3):
        rows.append({"dept": "Shoes", "kind": "clog", "title": f"clog {i}", "rating": 5, "colour": "black"})
    for i in range(12):
        rows.append({"dept": "Bags/Travel", "kind": "duffel", "title": f"bag {i}", "rating": 4, "colour": "green"})
    return rows


@pytest.fixture
def shop(tmp_path) -> Path:
    write_table(tmp_path / "table.csv", shop_rows())
    return tmp_path


# -- expansion ---------------------------------------------------------------------------------------
def test_one_scenario_per_value_with_its_own_labels(shop):
    card = load_card(write_table_card(shop, min_per_class=2))
    scenarios = {sc.name: sc for sc in expand(card)}
    assert set(scenarios) == {"shop/Fine_gauge", "shop/Shoes"}
    knits, shoes = scenarios["shop/Fine_gauge"], scenarios["shop/Shoes"]
    assert knits.label_names == ("cardigan", "pullover") and knits.num_labels == 2
    assert shoes.label_names == ("boot", "clog", "heel", "sneaker")
    assert knits.key == {"dept": "Fine gauge"} and knits.family == "categorisation"
    assert dict(shoes.info.label_counts) == {"boot": 10, "clog": 3, "heel": 10, "sneaker": 10}
    # every row of the department is in exactly one split, labels index the scenario's own names
    train, test = knits.load("train"), knits.load("test")
    assert sorted(list(train["text"]) + list(test["text"])) == sorted(f"knit item {i}" for i in range(40))
    for ds in (train, test):
        for text, label in zip(ds["text"], ds["label"]):
            i = int(text.rsplit(" ", 1)[1])
            assert knits.label_names[label] == ["cardigan", "pullover"][i % 2]
    # one kind only: skipped and named, and asking for it says why
    (sk,) = skipped(card)
    assert sk.name == "shop/Bags_Travel" and "fewer than two classes" in sk.reason and "duffel=12" in sk.reason


def test_several_scenario_columns_and_slugs(shop):
    card = load_card(write_table_card(shop, scenario_column=["dept", "colour"], min_per_class=2))
    names = sorted(sc.name for sc in expand(card))
    assert names == ["shop/Fine_gauge/blue", "shop/Fine_gauge/red", "shop/Shoes/black"]
    assert [sk.name for sk in skipped(card)] == ["shop/Bags_Travel/green"]
    # names are usable as glob targets: the last part selects a value across designs
    assert fnmatch.filter(names, "shop/*/red") == ["shop/Fine_gauge/red"]
    assert slug("Loungewear and Nightwear") == "Loungewear_and_Nightwear" and slug("a/b*[c]?") == "a_b_c"


def test_get_scenario_reads_one_card(shop):
    path = write_table_card(shop, min_per_class=2)
    sc = get_scenario("shop/Shoes", cards_dir=shop)
    assert sc.label_names == ("boot", "clog", "heel", "sneaker")
    with pytest.raises(DataError, match=r"'shop/Bags_Travel' of .*card.md was skipped: fewer than two classes"):
        get_scenario("shop/Bags_Travel", cards_dir=shop)
    with pytest.raises(DataError, match="expands into 2 scenarios; name one of them"):
        get_scenario(str(path))


def test_filter_and_min_per_class(shop):
    card = load_card(write_table_card(shop, filter={"dept": ["Shoes"], "rating": ">= 2"}, min_per_class=5))
    (sc,) = expand(card)
    assert sc.name == "shop/Shoes"
    # clog (rating 5, 3 rows) is below min_per_class and dropped; rating 1 rows are filtered out
    assert sc.label_names == ("boot", "heel", "sneaker")
    assert sc.info.dropped_classes == (("clog", 3),)
    texts = all_texts(sc)
    assert len(texts) == 24 and not any(int(t.split()[1]) % 5 == 0 for t in texts if t.startswith("shoe"))
    assert expand_table(card).dropped_rows["filtered out"] == 85 - 33 + 6


def test_label_rule_thresholds(shop):
    card = load_card(write_table_card(shop, task_type="binary", label_column="rating", scenario_column="dept",
                                      label_rule={"negative": "<= 2", "positive": ">= 4"}, min_per_class=2))
    assert card.label_names == ("negative", "positive")
    sc = {s.name: s for s in expand(card)}["shop/Fine_gauge"]
    assert sc.label_names == ("negative", "positive")
    assert dict(sc.info.label_counts) == {"negative": 16, "positive": 16}  # rating 3 matches no label: left out
    for split in ("train", "test"):
        for text, label in zip(sc.load(split)["text"], sc.load(split)["label"]):
            rating = 1 + int(text.rsplit(" ", 1)[1]) % 5
            assert label == (0 if rating <= 2 else 1) and rating != 3
    assert "no label (missing cell or no label_rule match)" in expand_table(card).dropped_rows
    # a value list works too, and the bags (all rating 4) keep one label: skipped
    card = load_card(write_table_card(shop, fn="b.md", task_type="binary", label_column="rating",
                                      label_rule={"low": [1, 2, 3], "high": [4, 5]}))
    assert {s.name for s in expand(card)} == {"shop/Fine_gauge", "shop/Shoes"}
    assert [s.name for s in skipped(card)] == ["shop/Bags_Travel"]


# -- the split ---------------------------------------------------------------------------------------
def _split_texts(card_path: Path, name: str) -> tuple[list[str], list[str]]:
    sc = {s.name: s for s in expand(load_card(card_path))}[name]
    return sorted(sc.load("train")["text"]), sorted(sc.load("test")["text"])


def test_split_is_seeded_stratified_and_ignores_row_order(tmp_path):
    rows = [{"dept": "d", "kind": ["a", "b", "c"][i % 3], "title": f"item {i}"} for i in range(300)]
    write_table(tmp_path / "one" / "table.csv", rows)
    write_table(tmp_path / "two" / "table.csv", list(reversed(rows)))
    a = write_table_card(tmp_path / "one", split={"test": 0.2, "seed": 3})
    b = write_table_card(tmp_path / "two", split={"test": 0.2, "seed": 3})
    c = write_table_card(tmp_path / "one", fn="c.md", split={"test": 0.2, "seed": 4})
    train, test = _split_texts(a, "shop/d")
    assert len(test) == 60 and len(train) == 240 and not set(train) & set(test)
    assert _split_texts(a, "shop/d") == (train, test)  # same card again
    assert _split_texts(b, "shop/d") == (train, test)  # the file's row order does not matter
    assert _split_texts(c, "shop/d")[1] != test  # another seed, another split
    sc = expand(load_card(a))[0]
    assert np.bincount(sc.load("test")["label"]).tolist() == [20, 20, 20]  # stratified


def test_test_max_caps_the_test_split_but_keeps_small_classes(tmp_path):
    rows = [{"dept": "d", "kind": "big", "title": f"big {i}"} for i in range(400)]
    rows += [{"dept": "d", "kind": "small", "title": f"small {i}"} for i in range(20)]
    write_table(tmp_path / "table.csv", rows)
    sc = expand(load_card(write_table_card(tmp_path, split={"test": 0.5, "test_max": 50})))[0]
    counts = np.bincount(sc.load("test")["label"]).tolist()
    assert sc.label_names == ("big", "small") and counts == [48, 5]
    assert len(sc.load("train")) == 420 - 53


def test_repeated_texts_never_straddle_train_and_test(tmp_path):
    rows = [{"dept": "d", "kind": ["a", "b"][i % 2], "title": f"title {i % 10}"} for i in range(100)]  # 10 texts x 10
    rows += [{"dept": "d", "kind": "b", "title": "title 0"}]  # title 0 is `a` elsewhere: now ambiguous
    write_table(tmp_path / "table.csv", rows)
    card = load_card(write_table_card(tmp_path, split={"test": 0.4}))
    sc = expand(card)[0]
    train, test = list(sc.load("train")["text"]), list(sc.load("test")["text"])
    assert not set(train) & set(test)
    assert sorted(train + test) == [f"title {i}" for i in range(1, 10)]  # each text once; title 0 dropped
    dropped = expand_table(card).dropped_rows
    assert dropped["same text, two labels"] == 11 and dropped["repeated text"] == 90 - 9


def test_a_text_under_two_scenario_keys_is_dropped_from_both(tmp_path):
    rows = [{"dept": d, "kind": ["a", "b"][i % 2], "title": f"{d} {i}"} for d in ("x", "y") for i in range(10)]
    rows.append({"dept": "y", "kind": "a", "title": "x 0"})
    write_table(tmp_path / "table.csv", rows)
    card = load_card(write_table_card(tmp_path))
    texts = {sc.name: all_texts(sc) for sc in expand(card)}
    assert "x 0" not in texts["shop/x"] and "x 0" not in texts["shop/y"] and len(texts["shop/x"]) == 9
    assert expand_table(card).dropped_rows["text under two scenario keys"] == 2


def test_given_test_split_with_repeated_texts_warns_with_the_count(tmp_path):
    rows = [{"dept": "d", "kind": ["a", "b"][i % 2], "title": f"t {i}"} for i in range(10)]
    write_table(tmp_path / "train.csv", rows)
    write_table(tmp_path / "test.csv", rows[:3] + [{"dept": "d", "kind": "a", "title": "new"}])
    card = load_card(write_table_card(tmp_path, data_files={"train": "train.csv", "test": "test.csv"}))
    with pytest.warns(DataWarning, match=r"scenario shop/d: 3 of 4 test texts also occur in its train split"):
        (sc,) = expand(card)
    assert sc.splits() == ("train", "test") and len(sc.load("test")) == 4


def test_source_rows_point_back_at_the_table(shop):
    (sc,) = [s for s in expand(load_card(write_table_card(shop, min_per_class=2))) if s.name == "shop/Shoes"]
    rows = shop_rows()
    for split in ("train", "test"):
        ds = sc.load(split)
        where = sc.source_rows(split)
        assert len(where) == len(ds)
        for text, label, (src_split, row) in zip(ds["text"], ds["label"], where):
            assert src_split == "train" and rows[row]["title"] == text and rows[row]["kind"] == sc.label_names[label]
    assert sc.info.source_id.endswith("table.csv")


def test_unquoted_commas_in_the_last_column(tmp_path):
    (tmp_path / "table.csv").write_text("dept,kind,title\n" + "".join(
        f"d,{'ab'[i % 2]},item {i}, with a comma\n" if i < 3 else f"d,{'ab'[i % 2]},item {i}\n" for i in range(20)))
    with pytest.raises(DataError) as err:
        expand(load_card(write_table_card(tmp_path)))
    assert "line 2 has 4 fields where the header has 3" in str(err.value) and "source.extra_fields: join_last" in str(err.value)
    sc = expand(load_card(write_table_card(tmp_path, fn="b.md", source={
        "type": "local", "format": "csv", "extra_fields": "join_last", "data_files": {"train": "table.csv"}})))[0]
    assert "item 0, with a comma" in all_texts(sc)


def test_several_text_columns_skip_empty_cells(tmp_path):
    rows = [{"dept": "d", "kind": "ab"[i % 2], "Title": "" if i % 3 else f"t{i}", "Review_Text": f"r{i}"} for i in range(12)]
    write_table(tmp_path / "table.csv", rows)
    sc = expand(load_card(write_table_card(tmp_path, text_columns=["Title", "Review_Text"])))[0]
    texts = set(all_texts(sc))
    assert "Title: t0 | Review Text: r0" in texts and "Review Text: r1" in texts


# -- bad input: one line naming the card and the field -------------------------------------------------
@pytest.mark.parametrize("meta, words", [
    ({"scenario_column": "aisle"}, ["metalora.scenario_column", "'aisle'", "columns: dept, kind, title, rating, colour"]),
    ({"filter": {"brand": ["x"]}}, ["metalora.filter", "'brand'", "columns: dept"]),
    ({"label_column": "type"}, ["metalora.label_column", "'type'"]),
    ({"filter": {"dept": ["Bags"]}}, ["metalora.filter: dept in ['Bags'] keeps no rows", "values there: Bags/Travel, Fine gauge, Shoes"]),
    ({"filter": {"dept": ["Shoes"], "colour": ["red"]}}, ["metalora.filter keeps no rows", "no row meets all of them"]),
    ({"filter": {"dept": "> 3"}}, ["metalora.filter.dept", "holds non-numbers"]),
    ({"task_type": "binary", "label_column": "rating", "label_rule": {"low": "<= 3", "high": ">= 3"}},
     ["metalora.label_rule", "matches both 'low' and 'high'"]),
])
def test_bad_table_input(shop, meta, words):
    path = write_table_card(shop, **meta)
    with pytest.raises(DataError) as err:
        expand(load_card(path))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("meta, field", [
    ({"min_per_class": 0}, "metalora.min_per_class"),
    ({"split": {"test": 1.5}}, "metalora.split.test"),
    ({"split": {"tset": 0.2}}, "metalora.split.tset"),
    ({"filter": {"dept": {"a": 1}}}, "metalora.filter.dept"),
    ({"label_rule": {"low": "<= lots", "high": "> 3"}}, "metalora.label_rule.low"),
    ({"label_rule": {"only": "> 3"}}, "metalora.label_rule"),
    ({"task_type": "binary", "label_rule": {"a": "< 2", "b": "== 2", "c": "> 2"}}, "metalora.label_rule"),
    ({"label_rule": {"a": "< 2", "b": ">= 2"}, "label_names": ["a", "b"]}, "metalora.label_names"),
    ({"task_type": "binary"}, "metalora.label_names"),  # a binary card must fix its label order
    ({"scenario_column": []}, "metalora.scenario_column"),
    ({"source": {"type": "local", "format": "json", "extra_fields": "join_last", "data_files": {"train": "t.json"}}},
     "metalora.source.extra_fields"),
    ({"source": {"type": "synthetic", "generator": "sentiment/kitchen"}}, "metalora.source.type"),
])
def test_bad_table_card_fields(shop, meta, field):
    path = write_table_card(shop, **meta)
    with pytest.raises(DataError) as err:
        load_card(path)
    assert str(path) in str(err.value) and f"{field}:" in str(err.value)


def test_two_cards_giving_one_scenario_name(shop):
    a = write_table_card(shop, fn="a.md", min_per_class=2)
    b = write_table_card(shop, fn="b.md", filter={"dept": ["Shoes"]})
    with pytest.raises(DataError) as err:
        all_scenarios(shop)
    msg = str(err.value)
    assert "'shop/Shoes' comes from two cards" in msg and str(a) in msg and str(b) in msg and "metalora.name" in msg


def test_two_values_with_one_slug(tmp_path):
    rows = [{"dept": d, "kind": "ab"[i % 2], "title": f"{d} {i}"} for d in ("Fine gauge", "Fine-gauge ", "Fine/gauge")
            for i in range(4)]
    write_table(tmp_path / "table.csv", rows)
    with pytest.raises(DataError, match=r"metalora.scenario_column: values \['Fine gauge', 'Fine/gauge'\] .* 'Fine_gauge'"):
        expand(load_card(write_table_card(tmp_path)))


# -- the CLI -----------------------------------------------------------------------------------------
def test_scenarios_cli_lists_counts_dropped_and_skipped(shop, capsys):
    from metalora.cli import main

    write_table_card(shop, min_per_class=5)
    assert main(["scenarios", "--cards", str(shop)]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[-1] == "1 cards, 2 scenarios, all valid"
    shoes = next(line for line in lines if line.startswith("shop/Shoes "))
    assert "boot=10, heel=10, sneaker=10" in shoes and "(dropped, under 5 rows: clog=3)" in shoes and "test=" in shoes
    assert "skipped (fewer than two classes with min_per_class rows; name them to see why): Bags_Travel" in err
    assert main(["scenarios", "--cards", str(shop), "shop/Bags*"]) == 0
    out, err = capsys.readouterr()
    assert "skipped shop/Bags_Travel: fewer than two classes left (duffel=12)" in err
    assert main(["scenarios", "--cards", str(shop), "nope/*"]) == 2
    assert "no scenario matches nope/*" in capsys.readouterr().err


# -- the shipped cards over ../shared/data -------------------------------------------------------------
ECOM_DEV_TARGETS = {
    "fashion": ["fashion/*/Bags", "fashion/*/Shoes", "fashion/*/Lips", "fashion/*/Innerwear"],
    "clothing": ["clothing/*/Blouses", "clothing/*/Skirts", "clothing/*/Lounge"],
    "deceptive": ["deceptive/*/amalfi", "deceptive/*/conrad", "deceptive/*/james", "deceptive/*/monaco"],
}
HOLDOUT_COLUMN = {"fashion": "subCategory", "clothing": "Class Name", "deceptive": "hotel"}


@pytest.fixture(scope="module")
def shipped():
    data = ROOT.parent / "shared" / "data"
    if not (data / "fashion_products" / "styles.csv").is_file():
        pytest.skip(f"the shared tables are not at {data}")
    return all_scenarios()


def test_shipped_table_cards_and_ecom_dev_targets(shipped):
    """Every table scenario has >= 2 classes with room for a 5-shot support set; each ECOM-dev target pattern
    selects exactly the scenarios cut from its held-out value, and no target test text occurs in any other
    scenario of its table (the held-out value is the scenario's last name part and a column of its key)."""
    for table, patterns in ECOM_DEV_TARGETS.items():
        scenarios = {n: sc for n, sc in shipped.items() if n.split("/")[0] == table}
        assert len(scenarios) >= 20, table
        column = HOLDOUT_COLUMN[table]
        targets = {n for n in scenarios if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
        held = {p.rsplit("/", 1)[1] for p in patterns}
        assert targets == {n for n, sc in scenarios.items() if sc.key[column] in held}, table
        for p in patterns:
            assert any(fnmatch.fnmatchcase(n, p) for n in targets), p
        train_texts = set()
        for n, sc in scenarios.items():
            assert sc.num_labels >= 2 and n.rsplit("/", 1)[1] == slug(sc.key[column])
            train = sc.load("train")
            assert min(np.bincount(train["label"], minlength=sc.num_labels)) >= 5, n
            assert len(sc.load("test")) >= 15, n
            if n not in targets:
                train_texts.update(train["text"])
                train_texts.update(sc.load("test")["text"])
        for n in targets:
            leaked = set(shipped[n].load("test")["text"]) & train_texts
            assert not leaked, (n, sorted(leaked)[:3])


def test_a_card_reached_twice_is_not_a_name_clash(shop):
    card = write_table_card(shop, min_per_class=2)
    assert set(all_scenarios([shop, card])) == {"shop/Fine_gauge", "shop/Shoes"}
