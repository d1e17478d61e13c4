"""The adapter library: indexing (cached, other backbones skipped), selection (picks the adapter of the
same scenario), composition (a one-hot blend is that entry; peft's merge equals the search's formula),
the learned selector (beats a random pick), Arrow routing, the CLI and `adapt --init library:`, and bad input."""
from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from metalora.api import adapt
from metalora.cli import main
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.errors import ConfigError, DataError
from metalora.library import AdapterLibrary, LibraryWarning, Support, parse_spec
from metalora.library.compose import merge_linear, merge_with_peft
from metalora.library.signals import loo_logits

from conftest import write_scenario

FILL = "the a of and to in is it for on with as at by this that from or an be are was".split() + [f"w{i}" for i in range(200)]
KEYS = {"colour": ("red", "blue"), "animal": ("cat", "dog"), "weather": ("sunny", "rainy")}
LORA = LoraSettings(r=4, alpha=8, top_layers=2)
BACKBONE = BackboneConfig(name="tiny-bert", max_length=32)


def rows(key: str, n: int, seed: int) -> list[dict]:
    """Texts of random filler words with ONE key word that decides the label: frozen features barely
    see it, an adapter trained on the scenario learns to."""
    rng = random.Random(f"{key}-{seed}")
    out = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILL) for _ in range(10)]
        words.insert(rng.randrange(11), KEYS[key][label])
        out.append({"review": " ".join(words), "label": ["negative", "positive"][label]})
    return out


def support(key: str, seed: int = 7, n: int = 10) -> Support:
    r = rows(key, n, seed)
    return Support([x["review"] for x in r], [int(x["label"] == "positive") for x in r], 2, ("negative", "positive"))


def write_meta_init(folder: Path, model, lora: dict, suite=("local/colour",)) -> Path:
    """A meta-init folder in the layout the meta-trainer writes (kind meta-init, logit scale, SGD defaults)."""
    from metalora.adapter_io import save_folder
    from metalora.model import SCALE_KEY

    meta = {"kind": "meta-init", "meta": {"algorithm": "fomaml", "suite": list(suite)},
            "adapt": {"optimizer": "sgd", "lr": 0.1, "head_lr": 0.1, "steps": 2}, "lineage": {"init": None},
            "metrics": {"val_acc": 0.6}}
    return save_folder(folder, model, lora, meta, init_tensors={SCALE_KEY: torch.tensor(10.0).log()})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A library folder: one tiny-bert adapter per scenario (trained on 40 examples) and a meta-init."""
    root = tmp_path_factory.mktemp("library")
    lib = root / "lib"
    lib.mkdir()
    cfg = AdaptConfig(backbone=BACKBONE, lora=LORA, steps=150, lr=1e-2, head_lr=0.05)
    cards, accs = {}, {}
    for key in KEYS:
        cards[key] = write_scenario(root / f"sc_{key}", {"train": rows(key, 40, 0), "test": rows(key, 40, 1)},
                                    name=f"local/{key}")
        model = adapt(str(cards[key]), config=cfg, shots=None)
        accs[key] = model.metadata["metrics"]["accuracy"]
        model.save(lib / key)
    write_meta_init(lib / "meta", model.model, {k: v * 0.5 for k, v in model.model.lora_only(model.params).items()})
    return {"root": root, "lib": lib, "cards": cards, "accs": accs}


def fresh(built, tmp_path) -> Path:
    """A private copy of the library folder (tests that add or break entries)."""
    dst = tmp_path / "lib"
    shutil.copytree(built["lib"], dst, ignore=shutil.ignore_patterns("library_*"))
    return dst


# -- index -----------------------------------------------------------------------------------------
def test_index_holds_default_meta_init_and_adapters_with_signatures(built):
    assert min(built["accs"].values()) >= 0.75, built["accs"]  # the adapters did learn their scenarios
    lib = AdapterLibrary(built["lib"])
    kinds = {e.name: e.kind for e in lib.entries}
    assert kinds == {"peft-default": "default", "colour": "adapter", "animal": "adapter", "weather": "adapter",
                     "meta": "meta-init"}
    by = {e.name: e for e in lib.entries}
    assert by["colour"].scenario == "local/colour" and by["colour"].label_names == ("negative", "positive")
    assert by["colour"].lora.r == 4 and by["colour"].lora.layers == (1, 2)
    assert by["colour"].signature is not None and by["colour"].signature[0].shape == (32,)
    assert (built["lib"] / "library_index.json").is_file() and (built["lib"] / "library_signatures.safetensors").is_file()


def test_reindex_loads_no_model_and_recomputes_nothing(built, monkeypatch):
    AdapterLibrary(built["lib"])  # make sure the cache exists

    def refuse(*a, **k):
        raise AssertionError("a cached index must not load a backbone or compute a signature")

    monkeypatch.setattr("metalora.backbones.load_backbone", refuse)
    monkeypatch.setattr(AdapterLibrary, "_compute_signatures", refuse)
    monkeypatch.setattr(AdapterLibrary, "_default_shape", lambda self, s: self.entries[0].lora)
    lib = AdapterLibrary(built["lib"])
    assert all(e.signature is not None for e in lib.learned if e.kind == "adapter")


def test_changed_entry_is_reindexed(built, tmp_path):
    folder = fresh(built, tmp_path)
    first = {e.name: e.fingerprint for e in AdapterLibrary(folder).learned}
    meta = json.loads((folder / "animal" / "metalora.json").read_text())
    meta["metrics"]["accuracy"] = 0.123
    (folder / "animal" / "metalora.json").write_text(json.dumps(meta))
    lib = AdapterLibrary(folder)
    assert lib.entry("animal").fingerprint != first["animal"] and lib.entry("animal").score == 0.123
    assert lib.entry("colour").fingerprint == first["colour"]


def test_other_backbone_and_broken_entries_are_skipped_with_a_note(built, tmp_path):
    folder = fresh(built, tmp_path)
    shutil.copytree(folder / "colour", folder / "gpt-thing")
    meta = json.loads((folder / "gpt-thing" / "metalora.json").read_text())
    meta["backbone"]["base_model"] = "tiny-gpt2"
    (folder / "gpt-thing" / "metalora.json").write_text(json.dumps(meta))
    shutil.copytree(folder / "colour", folder / "broken-json")
    (folder / "broken-json" / "metalora.json").write_text("{not json")
    shutil.copytree(folder / "colour", folder / "no-weights")
    (folder / "no-weights" / "adapter_model.safetensors").unlink()
    with pytest.warns(LibraryWarning) as caught:
        lib = AdapterLibrary(folder)
    text = " | ".join(str(w.message) for w in caught)
    assert "gpt-thing" in text and "tiny-gpt2" in text
    assert "broken-json" in text and "no-weights" in text and "adapter_model.safetensors" in text
    assert {e.name for e in lib.entries} == {"peft-default", "colour", "animal", "weather", "meta"}


def test_corrupt_weights_are_skipped_at_selection_and_the_rest_still_works(built, tmp_path):
    folder = fresh(built, tmp_path)
    (folder / "weather" / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    lib = AdapterLibrary(folder)
    with pytest.warns(LibraryWarning, match="weather"):
        sel = lib.select(support("colour"), by="zero_step")
    assert sel.best.name == "colour" and "weather" not in [r.name for r in sel.ranking]
    assert any("weather" in n for n in sel.notes)


def test_empty_library_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    lib = AdapterLibrary(tmp_path / "empty", backbone=BACKBONE, default_lora=LORA)
    assert [e.kind for e in lib.entries] == ["default"]
    with pytest.raises(DataError, match="empty"):
        lib.select(support("colour"))
    with pytest.raises(DataError, match="does not exist"):
        AdapterLibrary(tmp_path / "missing")
    assert main(["library", "index", str(tmp_path / "empty"), "--backbone", "tiny-bert"]) == 2


# -- selection -------------------------------------------------------------------------------------
@pytest.mark.parametrize("by", ["zero_step", "few_steps"])
def test_ranking_picks_the_adapter_of_the_same_scenario(built, by, tmp_path):
    folder = fresh(built, tmp_path)
    if by == "few_steps":
        # few_steps adapts each entry with the settings adapting from it would use: the adapter's own
        # recorded run. These were trained at lr 1e-2 for 150 steps, a rate that scrambles a 5-example
        # start in a few steps; record the default rates instead (what `metalora adapt` uses).
        for key in KEYS:
            meta = json.loads((folder / key / "metalora.json").read_text())
            meta["adapt"].update(lr=1e-3, head_lr=1e-2)
            (folder / key / "metalora.json").write_text(json.dumps(meta))
    lib = AdapterLibrary(folder)
    for key in KEYS:
        sel = lib.select(support(key), k=3, by=by)
        assert sel.decided_by == by
        assert sel.best.name == key, (key, [(r.name, r.scores) for r in sel.ranking])
        assert sel.top_by_signal[by] == key and key in sel.describe()
    assert sel.entries_scored == 5 and sel.seconds_per_entry > 0


def test_loo_logits_leave_the_example_out():
    feats = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    logits = loo_logits(feats, y, 2, 1.0)
    i = 1  # by hand: prototype of class 0 without example 1
    p0 = feats[[0, 2]].mean(0)
    p1 = feats[[3, 4, 5]].mean(0)
    want = torch.stack([2 * feats[i] @ p0 - p0 @ p0, 2 * feats[i] @ p1 - p1 @ p1])
    assert_close(logits[i], want)


# -- composition -----------------------------------------------------------------------------------
def test_peft_merge_equals_the_search_formula(built):
    lib = AdapterLibrary(built["lib"])
    model, a = lib.init_for(lib.entry("colour"))
    _, b = lib.init_for(lib.entry("animal"))
    loras = [model.lora_only(a.lora), model.lora_only(b.lora)]
    for w in ([0.7, -0.4], [1.3, 0.2]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            merged = merge_with_peft(model, loras, w)
        assert_close(merged, merge_linear(loras, w))
        # no Hub look-up for embedding layers the blend does not have
        assert not [str(c.message) for c in caught if "Could not find a config file" in str(c.message)]


def test_blend_with_weight_one_on_one_entry_equals_that_entry(built):
    lib = AdapterLibrary(built["lib"])
    blend = lib.compose(support("animal"), entries=["animal", "colour", "weather"], weights=[1.0, 0.0, 0.0])
    model, init = lib.init_for(lib.entry("animal"))
    assert_close(blend.init.lora, model.lora_only(init.lora))
    assert_close(blend.init.logit_scale, init.logit_scale)
    enc = model.encode(support("animal").texts)
    assert_close(model.features(blend.init.lora, enc), model.features(init.lora, enc))


def test_compose_searches_weights_and_the_saved_blend_records_its_lineage(built, tmp_path):
    lib = AdapterLibrary(built["lib"])
    sup = support("weather")
    blend = lib.compose(sup, k=2, budget=20)
    names = [e.name for e in blend.entries]
    assert names[0] == "weather" and "meta" in names  # best entry first, the meta-init always blended
    assert blend.objective <= blend.start_objective + 1e-9
    folder = blend.save(tmp_path / "blend")
    meta = json.loads((folder / "metalora.json").read_text())
    ingredients = meta["lineage"]["blend"]["ingredients"]
    assert [i["name"] for i in ingredients] == names
    assert [i["weight"] for i in ingredients] == pytest.approx(blend.weights, abs=1e-6)
    # the saved blend loads back as the same LoRA, with plain peft too
    from metalora.api import load_init

    model, init = load_init(folder)
    assert_close(init.lora, blend.init.lora)
    # adapting from the blend records it as the adapter's lineage
    adapted = adapt(str(built["cards"]["weather"]), init=_start(blend), config=AdaptConfig(backbone=BACKBONE, steps=2), shots=5)
    assert adapted.metadata["lineage"]["init"]["blend"]["ingredients"][0]["name"] == "weather"


def _start(blend):
    from metalora.library import LibraryStart

    return LibraryStart(blend.model, blend.init, blend.defaults, None, blend)


def test_compose_names_entries_of_another_lora_shape(built, tmp_path):
    folder = fresh(built, tmp_path)
    cfg = AdaptConfig(backbone=BACKBONE, lora=LoraSettings(r=2, alpha=8, top_layers=2), steps=2)
    adapt(str(built["cards"]["colour"]), config=cfg, shots=4).save(folder / "rank2")
    lib = AdapterLibrary(folder)
    with pytest.raises(DataError, match=r"rank2 differs from colour in rank 2 vs 4"):
        lib.compose(support("colour"), entries=["colour", "rank2"])
    with pytest.raises(DataError, match="default"):
        lib.compose(support("colour"), entries=["peft-default", "colour"])
    # automatic composition only blends entries of the top entry's shape
    blend = lib.compose(support("colour"), k=5, budget=5)
    assert "rank2" not in [e.name for e in blend.entries]


def test_arrow_routing_predicts_from_routed_adapters(built):
    from metalora.library import route

    lib = AdapterLibrary(built["lib"])
    router = route(lib, support("colour"), k=3)
    assert [e.name for e in router.entries][0] == "colour" and len(router.entries) == 3
    test = rows("colour", 40, 3)
    probs = router.predict_proba([r["review"] for r in test])
    assert probs.shape == (40, 2)
    assert_close(probs.sum(1), torch.ones(40))
    y = torch.tensor([int(r["label"] == "positive") for r in test])
    routed = float((probs.argmax(1) == y).float().mean())
    # the frozen backbone with the same prototype head barely sees the key word; routing does
    model = lib.model_for(lib.entries[0])
    sup = support("colour")
    from metalora.model import prototype_head

    w, b = prototype_head(lib.frozen_features(model.encode(sup.texts)), sup.labels, 2)
    frozen = float(((lib.frozen_features(model.encode([r["review"] for r in test])) @ w.T + b).argmax(1) == y).float().mean())
    assert routed >= 0.75 and routed > frozen + 0.1, (routed, frozen)


# -- the learned selector --------------------------------------------------------------------------
def test_learned_selector_beats_random_choice(built, tmp_path):
    """Train on new scenarios of the three kinds (other filler texts), test on yet others: the selector's
    pick must adapt better than the average entry (a random pick)."""
    folder = fresh(built, tmp_path)
    lib = AdapterLibrary(folder)
    train = [write_scenario(tmp_path / f"tr_{k}", {"train": rows(k, 20, 10), "test": rows(k, 40, 11)}, name=f"local/tr-{k}")
             for k in KEYS]
    from metalora.scenarios import get_scenario

    sel = lib.fit_selector([get_scenario(str(c)) for c in train], shots=5, seeds=(0, 1), query_size=40, steps=5)
    assert (folder / "library_selector.json").is_file()
    assert sel.trained_on["train_pick_accuracy"] > sel.trained_on["train_mean_accuracy"]
    lib = AdapterLibrary(folder)  # reloaded from JSON
    assert lib.selector is not None and lib.selector.trained_on["scenarios"]
    picked, random_mean = [], []
    for key in KEYS:
        s = lib.select(support(key, seed=20), k=5)
        assert s.decided_by == "learned"
        accs = {}
        for r in s.ranking:
            model, init = lib.init_for(r.entry)
            cfg = AdaptConfig(backbone=BACKBONE, **{**lib.adapt_defaults(r.entry), "steps": 5})
            sup = support(key, seed=20)
            from metalora.adapt import adapt as loop

            params = loop(model, model.encode(sup.texts), sup.labels, 2, init, cfg)
            test = rows(key, 40, 21)
            probs = model.predict_proba(params, model.encode([t["review"] for t in test])).numpy()
            accs[r.name] = float((probs.argmax(1) == np.array([int(t["label"] == "positive") for t in test])).mean())
        picked.append(accs[s.best.name])
        random_mean.append(np.mean(list(accs.values())))
    assert np.mean(picked) > np.mean(random_mean) + 0.05, (picked, random_mean)


# -- CLI and adapt --init library: ----------------------------------------------------------------
def test_parse_spec():
    assert parse_spec("library:adapters") == (Path("adapters"), "top1")
    assert parse_spec("library:some/dir/top1") == (Path("some/dir"), "top1")
    assert parse_spec("library:some/dir/compose") == (Path("some/dir"), "compose")
    with pytest.raises(ConfigError):
        parse_spec("library:")


def test_cli_index_list_select_and_adapt_from_library(built, tmp_path, capsys):
    folder = fresh(built, tmp_path)
    assert main(["library", "index", str(folder)]) == 0
    assert "3 adapters, 1 meta-inits" in capsys.readouterr().out
    assert main(["library", "list", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "peft-default" in out and "colour" in out and "5 entries" in out
    card = str(built["cards"]["animal"])
    assert main(["library", "select", str(folder), card, "--shots", "5", "--by", "zero_step", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chosen"] == "animal" and data["decided_by"] == "zero_step"
    assert main(["library", "select", str(folder), card, "--compose", str(tmp_path / "blend"), "--budget", "5"]) == 0
    assert (tmp_path / "blend" / "adapter_model.safetensors").is_file()
    capsys.readouterr()
    out_dir = tmp_path / "adapted"
    assert main(["adapt", card, "--init", f"library:{folder}/top1", "--out", str(out_dir), "--backbone", "tiny-bert",
                 "--steps", "2"]) == 0
    assert "chose animal" in capsys.readouterr().out
    meta = json.loads((out_dir / "metalora.json").read_text())
    assert meta["lineage"]["init"]["library"]["entry"] == "animal"
    assert meta["lineage"]["init"]["path"].endswith("animal")


def test_api_adapt_from_library_compose(built, tmp_path):
    folder = fresh(built, tmp_path)
    adapted = adapt(str(built["cards"]["colour"]), init=f"library:{folder}/compose", shots=5)
    lineage = adapted.metadata["lineage"]["init"]["blend"]
    assert lineage["ingredients"][0]["name"] == "colour" and len(lineage["ingredients"]) >= 2
    assert adapted.metadata["adapt"]["optimizer"] == "adamw"  # the lead ingredient's (an adapter's) own settings


def test_select_bad_input(built):
    lib = AdapterLibrary(built["lib"])
    with pytest.raises(ConfigError, match="learned"):
        lib.select(support("colour"), by="learned")
    with pytest.raises(ConfigError, match="not a signal"):
        lib.select(support("colour"), by="vibes")
    with pytest.raises(DataError, match="one class"):
        Support(["a", "b"], [1, 1], 2)
    with pytest.raises(DataError, match="no entry 'colr'.*colour"):
        lib.entry("colr")


def test_selector_training_leaves_out_adapters_of_the_same_rows(tmp_path):
    """An adapter of another scenario cut from the same texts is as good as the scenario's own: left out."""
    from metalora.library.entries import Entry
    from metalora.library.select import _norm, _Relatedness
    from metalora.scenarios import get_scenario

    shared = rows("colour", 20, 0)
    a = write_scenario(tmp_path / "a", {"train": shared, "test": shared[:6]}, name="local/a")
    b = write_scenario(tmp_path / "b", {"train": shared[::-1], "test": shared[:6]}, name="local/b")  # same rows, other card
    c = write_scenario(tmp_path / "c", {"train": rows("animal", 20, 0), "test": rows("animal", 6, 1)}, name="local/c")
    sc = get_scenario(str(a))
    probe = {_norm(t) for t in sc.load("train")["text"]}
    related = _Relatedness(None)

    def entry(card, kind="adapter"):
        return Entry(name=card.parent.name, kind=kind, base_model="tiny-bert", lora=None, scenario=str(card))

    assert related(entry(b), sc, probe) and not related(entry(c), sc, probe)
    assert not related(entry(b, kind="meta-init"), sc, probe)  # inits are never left out
    assert related(Entry(name="x", kind="adapter", base_model=None, lora=None, scenario=sc.name), sc, probe)


def test_compose_takes_its_ingredients_from_a_given_ranking(built):
    lib = AdapterLibrary(built["lib"])
    order = [lib.entry(n) for n in ("animal", "peft-default", "colour", "weather", "meta")]
    blend = lib.compose(support("colour"), k=2, budget=3, ranking=order)
    assert [e.name for e in blend.entries] == ["animal", "colour", "meta"]  # top 2 of the ranking + the meta-init
