"""Several adapters on one backbone (metalora.serving): a batch that mixes scenarios predicts exactly what
each adapter predicts alone, one backbone is loaded, and bad requests are refused naming what is loaded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from metalora.adapter_io import AdapterFolder, save_folder
from metalora.api import load_adapter, load_adapters
from metalora.config import LoraSettings
from metalora.errors import BackboneError, DataError
from metalora.label_words import BIAS_KEY, WORDS_KEY, template, word_ids
from metalora.model import SCALE_KEY, LoraClassifier
from metalora.serving import MultiAdapterModel

from conftest import NEGATIVE, POSITIVE

TEXTS = POSITIVE + NEGATIVE  # 16 texts of different lengths


def make_adapter(path: Path, tiny_backbone, *, backbone: str = "tiny-bert", scenario: str = "s0",
                 labels=("negative", "positive"), lora: LoraSettings = LoraSettings(r=4), seed: int = 0,
                 kind: str = "adapter", **backbone_cfg) -> Path:
    """A saved adapter with random, clearly non-zero LoRA weights and head (fast: no training)."""
    model = LoraClassifier(tiny_backbone(backbone, **backbone_cfg), lora)
    g = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(v.shape, generator=g) * 0.5 for k, v in model.default_lora.items()}
    if kind == "adapter" and backbone_cfg.get("scoring") == "label_words":  # the labels are the words
        params[WORDS_KEY] = word_ids(model.backbone.tokenizer, template(model.backbone.config), list(labels), where="test")
        params[BIAS_KEY] = torch.randn(len(labels), generator=g)
    elif kind == "adapter":
        params["head.weight"] = torch.randn(len(labels), model.backbone.hidden_size, generator=g)
        params["head.bias"] = torch.randn(len(labels), generator=g)
        params[SCALE_KEY] = torch.tensor(1.0)
    meta = {"kind": kind, "scenario": {"name": scenario, "family": "sentiment", "label_names": list(labels)}}
    return save_folder(path, model, params, meta)


def probs_of(pred, rows, labels) -> torch.Tensor:
    return torch.tensor([[pred.probabilities[i][n] for n in labels] for i in rows])


@pytest.fixture(scope="module")
def three(tmp_path_factory, tiny_backbone):
    """Three tiny-bert adapters with different LoRA settings (top 2 layers r=4, all layers r=2, keys only)
    and label sets (2, 3 and 2 labels)."""
    here = tmp_path_factory.mktemp("adapters")
    return [
        make_adapter(here / "kitchen", tiny_backbone, scenario="kitchen", lora=LoraSettings(r=4, top_layers=2), seed=1),
        make_adapter(here / "garden", tiny_backbone, scenario="garden", labels=("bad", "ok", "good"),
                     lora=LoraSettings(r=2), seed=2),
        make_adapter(here / "toys", tiny_backbone, scenario="toys", lora=LoraSettings(r=4, target_modules=("key",)), seed=3),
    ]


# -- the invariant: mixed batches predict what each adapter predicts alone -------------------------------
@pytest.mark.parametrize("mixed", [True, False], ids=["mixed", "grouped"])
def test_mixed_batch_equals_each_adapter_alone(three, mixed):
    multi = load_adapters(three)
    assert multi.scenarios == ("kitchen", "garden", "toys")
    scenarios = [("kitchen", "garden", "toys")[i % 3] for i in range(len(TEXTS))]
    pred = multi.predict(TEXTS, scenario=scenarios, batch_size=5, mixed=mixed)  # batches mix all three
    assert pred.scenarios == scenarios and len(pred) == len(TEXTS)
    for folder in three:
        alone = load_adapter(folder)
        name = alone.metadata["scenario"]["name"]
        rows = [i for i, s in enumerate(scenarios) if s == name]
        want = alone.predict([TEXTS[i] for i in rows])
        assert_close(probs_of(pred, rows, alone.label_names), torch.from_numpy(want.probabilities))
        assert [pred.labels[i] for i in rows] == want.labels
        assert pred.label_ids[rows].tolist() == want.label_ids.tolist()


def test_each_row_really_gets_its_own_adapter(three):
    """Not vacuous: the same texts under another adapter's LoRA weights give other features."""
    multi = load_adapters(three[::2])  # kitchen and toys: same label set, so their heads could be swapped
    texts = TEXTS[:6]
    own = multi.features(texts, ["kitchen"] * 6)
    other = multi.features(texts, ["toys"] * 6)
    mixed = multi.features(texts, ["kitchen", "toys"] * 3)
    assert not torch.allclose(own, other, atol=1e-3)
    assert_close(mixed[0::2], own[0::2])
    assert_close(mixed[1::2], other[1::2])


@pytest.mark.parametrize("backbone", ["tiny-gpt2", "tiny-llama"])
def test_decoders_mix_scenarios_too(tmp_path, tiny_backbone, backbone):
    folders = [make_adapter(tmp_path / f"a{i}", tiny_backbone, backbone=backbone, scenario=f"s{i}", seed=i) for i in range(2)]
    multi = load_adapters(folders)
    scenarios = ["s0", "s1"] * 4
    pred = multi.predict(TEXTS[:8], scenario=scenarios, batch_size=8)
    for i, folder in enumerate(folders):
        alone = load_adapter(folder)
        rows = [j for j, s in enumerate(scenarios) if s == f"s{i}"]
        assert_close(probs_of(pred, rows, alone.label_names),
                     torch.from_numpy(alone.predict([TEXTS[j] for j in rows]).probabilities))


@pytest.mark.parametrize("mixed", [True, False], ids=["mixed", "grouped"])
def test_label_word_heads_are_served_too(tmp_path, tiny_backbone, mixed):
    """Decoders scoring label words (one-token and several-token words): each scenario with its adapter active."""
    lw = {"backbone": "tiny-llama", "scoring": "label_words"}
    folders = [make_adapter(tmp_path / "a", tiny_backbone, scenario="s0", labels=("bad", "good"), seed=1, **lw),
               make_adapter(tmp_path / "b", tiny_backbone, scenario="s1", labels=("no way", "yes please", "maybe so"),
                            seed=2, **lw)]
    multi = load_adapters(folders)
    assert multi.label_words
    scenarios = ["s0", "s1", "s1", "s0", "s1", "s0"]
    pred = multi.predict(TEXTS[:6], scenario=scenarios, batch_size=2, mixed=mixed)
    for i, folder in enumerate(folders):
        alone = load_adapter(folder)
        rows = [j for j, s in enumerate(scenarios) if s == f"s{i}"]
        assert_close(probs_of(pred, rows, alone.label_names),
                     torch.from_numpy(alone.predict([TEXTS[j] for j in rows]).probabilities))
    # not vacuous: the other adapter's weights give other scores for the same words
    swapped = load_adapters({"s0": folders[0], "other": make_adapter(tmp_path / "c", tiny_backbone, scenario="x",
                                                                     labels=("bad", "good"), seed=7, **lw)})
    a = swapped.predict(TEXTS[:3], scenario="s0").probabilities
    b = swapped.predict(TEXTS[:3], scenario="other").probabilities
    assert any(abs(x["good"] - y["good"]) > 1e-4 for x, y in zip(a, b))


def test_one_backbone_in_memory(three):
    """Three adapters add only their LoRA weights to one backbone's parameters."""
    multi = load_adapters(three)
    alone = load_adapter(three[0]).model
    base = sum(p.numel() for n, p in alone.named_parameters() if "lora_" not in n)
    lora = sum(f.tensors[k].numel() for f in map(AdapterFolder.read, three) for k in f.tensors)
    assert sum(p.numel() for p in multi.model.parameters()) == base + lora
    assert {a.adapter for a in multi.adapters.values()} == {"default", "a1", "a2"}


def test_single_name_dict_form_and_one_adapter(three):
    multi = load_adapters({"pans": three[0], "plants": three[1]})
    assert multi.scenarios == ("pans", "plants")
    pred = multi.predict(TEXTS[:3], scenario="plants")
    assert pred.scenarios == ["plants"] * 3 and all(set(p) == {"bad", "ok", "good"} for p in pred.probabilities)
    one = MultiAdapterModel.load(three[0])
    assert one.predict("great product").scenarios == ["kitchen"]  # one adapter: the scenario may be left out


# -- bad input --------------------------------------------------------------------------------------------
def test_adapters_for_another_backbone_are_refused_naming_them(tmp_path, three, tiny_backbone):
    llama = make_adapter(tmp_path / "llama", tiny_backbone, backbone="tiny-llama", scenario="shoes")
    with pytest.raises(BackboneError) as err:
        load_adapters([three[0], llama, three[1]])
    msg = str(err.value)
    assert "tiny-bert: kitchen" in msg and "garden" in msg and "tiny-llama: shoes" in msg and str(llama) in msg


def test_unknown_scenario_names_the_loaded_ones(three):
    multi = load_adapters(three)
    with pytest.raises(DataError, match=r"text 1: no loaded adapter serves scenario 'shoes'; loaded: kitchen, garden, toys"):
        multi.predict(["a", "b"], scenario=["kitchen", "shoes"])
    with pytest.raises(DataError, match=r"3 adapters are loaded: name the scenario of each text \(one of kitchen, garden, toys\)"):
        multi.predict(["a"])
    with pytest.raises(DataError, match="2 texts but 3 scenario names"):
        multi.predict(["a", "b"], scenario=["kitchen"] * 3)


@pytest.mark.parametrize("bad", ["", "   \n"])
def test_empty_text_is_refused_before_any_work(three, bad, monkeypatch):
    multi = load_adapters(three[:1])
    monkeypatch.setattr(multi, "features", lambda *a, **k: pytest.fail("ran a forward pass"))
    with pytest.raises(DataError, match="text 1 is empty"):
        multi.predict(["fine", bad], scenario="kitchen")
    with pytest.raises(DataError, match="text 0 is empty"):
        load_adapter(three[0]).predict([bad])


def test_meta_init_duplicate_and_input_mismatch_refused(tmp_path, three, tiny_backbone):
    init = make_adapter(tmp_path / "init", tiny_backbone, kind="meta-init")
    with pytest.raises(DataError, match=rf"{init} has no head: it is a meta-init"):
        load_adapters([three[0], init])
    again = make_adapter(tmp_path / "again", tiny_backbone, scenario="kitchen", seed=9)
    with pytest.raises(DataError, match=r"two adapters serve scenario 'kitchen'"):
        load_adapters([three[0], again])
    assert load_adapters({"kitchen": three[0], "kitchen-v2": again}).scenarios == ("kitchen", "kitchen-v2")
    short = make_adapter(tmp_path / "short", tiny_backbone, scenario="short", max_length=16)
    with pytest.raises(DataError, match=r"read their inputs differently \(max_length 128 vs 16\)"):
        load_adapters([three[0], short])
    words = make_adapter(tmp_path / "words", tiny_backbone, backbone="tiny-llama", scenario="w", scoring="label_words")
    pooled = make_adapter(tmp_path / "pooled", tiny_backbone, backbone="tiny-llama", scenario="p")
    with pytest.raises(DataError, match=r"read their inputs differently \(scoring 'pooled' vs 'label_words'\)"):
        load_adapters([pooled, words])
    with pytest.raises(DataError, match="no adapters to load"):
        load_adapters([])


def test_truncated_weights_are_one_line_naming_the_file(tmp_path, three):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(three[0], broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    for load in (load_adapter, lambda p: load_adapters([three[1], p])):
        with pytest.raises(DataError) as err:
            load(broken)
        msg = str(err.value)
        assert str(weights) in msg and "damaged or incomplete" in msg and "copy or pull the folder again" in msg
        assert "\n" not in msg
    (broken / "metalora.json").write_text("{not json")
    with pytest.raises(DataError, match=r"metalora.json: not valid JSON"):
        load_adapter(broken)


def test_adapter_folder_is_read_once(three, monkeypatch):
    """One AdapterFolder record travels through load_adapter: the folder's files are opened once each."""
    import metalora.adapter_io as adapter_io

    reads = []
    real_json, real_st = adapter_io._read_json, adapter_io.read_safetensors
    monkeypatch.setattr(adapter_io, "_read_json", lambda p: reads.append(Path(p).name) or real_json(p))
    monkeypatch.setattr(adapter_io, "read_safetensors", lambda p, *a: reads.append(Path(p).name) or real_st(p, *a))
    load_adapter(three[0])
    assert sorted(reads) == sorted(["metalora.json", "adapter_config.json", "adapter_model.safetensors",
                                    "metalora_head.safetensors"])
    saved = json.loads((three[0] / "metalora.json").read_text())
    record = AdapterFolder.read(three[0])
    assert record.meta == saved and record.scenario == "kitchen" and (record.lora.r, record.lora.top_layers) == (4, 2)
    assert record.origin == {"path": str(three[0].resolve())} and record.init_tensors == {}


def test_single_adapter_predictions_do_not_depend_on_the_order(three):
    """load_adapter(...).predict sorts by length for speed; each text's answer stays its own."""
    alone = load_adapter(three[0])
    forward, backward = alone.predict(TEXTS), alone.predict(TEXTS[::-1])
    assert_close(torch.from_numpy(backward.probabilities[::-1].copy()), torch.from_numpy(forward.probabilities))
    assert backward.labels[::-1] == forward.labels
    one_by_one = torch.cat([torch.from_numpy(alone.predict([t]).probabilities) for t in TEXTS[:4]])
    assert_close(one_by_one, torch.from_numpy(forward.probabilities[:4]))
