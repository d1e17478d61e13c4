"""Adaptation and adapter folders: the backbone stays bit-identical, LoRA moves, a saved adapter
predicts the same after loading (with metalora, and with plain peft), and saving never destroys
an existing folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file
from torch.testing import assert_close

import metalora.adapter_io as adapter_io
from metalora.adapt import Init, adapt as adapt_loop
from metalora.api import AdaptedModel, adapt, load_adapter
from metalora.backbones import load_backbone
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.errors import BackboneError, DataError
from metalora.model import LoraClassifier

from conftest import NEGATIVE, POSITIVE, write_scenario

PROBE = ["this is great, love it", "broke in a day", "ok i guess", POSITIVE[7], NEGATIVE[7]]


def _cfg(name: str = "tiny-bert", steps: int = 5, **kw) -> AdaptConfig:
    return AdaptConfig(backbone=BackboneConfig(name=name), steps=steps, lr=1e-2, **kw)


def _base_params(model: LoraClassifier) -> dict:
    """The backbone's own parameters inside the peft model, under their plain AutoModel names."""
    return {n.replace(".base_layer.", "."): p for n, p in model.base.named_parameters() if "lora_" not in n}


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def saved_tiny_bert(tmp_path_factory):
    """A tiny-bert adapter of the default local scenario, adapted once and saved for the module."""
    here = tmp_path_factory.mktemp("saved")
    card = write_scenario(here / "scenario")
    model = adapt(str(card), config=_cfg(), shots=4)
    folder = model.save(here / "adapter")
    return model, folder


# -- adaptation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "tiny-llama"])
def test_adapt_moves_lora_only(local_card, name):
    adapted = adapt(str(local_card), config=_cfg(name), shots=4)
    assert isinstance(adapted, AdaptedModel) and adapted.label_names == ("negative", "positive")
    model, params = adapted.model, adapted.params
    assert model.backbone.name == name

    # the frozen backbone is bit-identical to a freshly loaded one
    fresh = dict(load_backbone(name).model.named_parameters())
    base = _base_params(model)
    assert base.keys() == fresh.keys()
    for k, v in fresh.items():
        assert torch.equal(base[k], v), k

    # every LoRA weight moved away from the init it started from (peft's default, B = 0)
    init = model.default_lora
    assert set(model.lora_names) <= params.keys() and model.lora_names
    for k in model.lora_names:
        assert params[k].shape == init[k].shape
        assert not torch.equal(params[k], init[k]), f"{k} did not move"
    # ... while the module's own LoRA weights were never touched (adaptation is functional)
    for k, v in model.lora_params().items():
        assert torch.equal(v, init[k]), k

    # a head for the card's two labels
    assert params["head.weight"].shape == (2, model.backbone.hidden_size)
    assert params["head.bias"].shape == (2,)
    assert all(torch.isfinite(params[k]).all() for k in ("head.weight", "head.bias", "logit_scale"))
    meta = adapted.metadata
    assert meta["support"] == {"split": "train", "shots": 4, "examples": 8, "seed": 0}
    assert set(meta["metrics"]) == {"accuracy", "macro_f1"} and meta["metrics_split"] == "test"
    pred = adapted.predict(PROBE)
    assert pred.probabilities.shape == (len(PROBE), 2)
    assert_close(torch.from_numpy(pred.probabilities).sum(1), torch.ones(len(PROBE)))
    assert set(pred.labels) <= {"negative", "positive"}


def test_adapt_is_seeded(local_card, tiny_backbone):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings())
    cfg = _cfg(steps=4, batch_size=4)  # random mini-batches: the seed decides them too
    a = adapt(str(local_card), config=cfg, shots=5, model=model, evaluate_split=None)
    b = adapt(str(local_card), config=cfg, shots=5, model=model, evaluate_split=None)
    c = adapt(str(local_card), config=_cfg(steps=4, batch_size=4, seed=1), shots=5, model=model, evaluate_split=None)
    assert a.params.keys() == b.params.keys() == c.params.keys()
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
    assert any(not torch.equal(a.params[k], c.params[k]) for k in model.lora_names)


def test_adapt_lowers_the_support_loss(tiny_backbone):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(top_layers=2))
    texts, labels = POSITIVE[:4] + NEGATIVE[:4], torch.tensor([1] * 4 + [0] * 4)
    enc = model.encode(texts)
    losses = []

    def record(step, params):
        with torch.no_grad():
            losses.append(F.cross_entropy(model.logits(params, enc), labels).item())

    cfg = AdaptConfig(backbone=BackboneConfig(name="tiny-bert"), steps=10)  # default learning rates
    params = adapt_loop(model, enc, labels, 2, Init(lora=model.default_lora), cfg, on_step=record)
    assert len(losses) == 11
    assert losses[-1] < 0.9 * losses[0]
    assert (model.logits(params, enc).argmax(1) == labels).all()


def test_on_step_sees_every_step(tiny_backbone):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(top_layers=1))
    enc = model.encode(POSITIVE[:3] + NEGATIVE[:3])
    seen = []
    adapt_loop(model, enc, torch.tensor([1, 1, 1, 0, 0, 0]), 2, Init(lora=model.default_lora), _cfg(steps=3, optimizer="sgd"),
               on_step=lambda step, p: seen.append((step, p["head.bias"].clone())))
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert not torch.equal(seen[0][1], seen[-1][1])


# -- save / load -------------------------------------------------------------------------------------
def test_save_load_gives_identical_predictions(saved_tiny_bert):
    model, folder = saved_tiny_bert
    assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "metalora_head.safetensors",
                                                  "metalora.json", "README.md"}
    meta = json.loads((folder / "metalora.json").read_text())
    assert meta["backbone"]["name"] == "tiny-bert" and meta["scenario"]["label_names"] == ["negative", "positive"]
    loaded = load_adapter(folder)
    assert loaded.label_names == model.label_names
    for k in model.model.lora_names:
        assert torch.equal(loaded.params[k], model.params[k]), k
    want, got = model.predict(PROBE), loaded.predict(PROBE)
    assert_close(got.probabilities, want.probabilities)
    assert got.labels == want.labels


def test_plain_peft_gives_the_same_probabilities(saved_tiny_bert):
    """What a user without metalora does: AutoModel + PeftModel.from_pretrained + the head file."""
    model, folder = saved_tiny_bert
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-bert" and config["peft_type"] == "LORA"
    bb = load_backbone("tiny-bert")  # a fresh AutoModel with the same base weights
    peft_model = PeftModel.from_pretrained(bb.model, str(folder))
    peft_model.eval()
    head = load_file(str(folder / "metalora_head.safetensors"))
    tok = bb.tokenizer(PROBE, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        h = peft_model(**{k: tok[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
        x = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        probs = torch.softmax(x @ head["weight"].T + head["bias"], dim=-1)
    assert_close(probs, torch.from_numpy(model.predict(PROBE).probabilities))


def test_minilm_save_load_round_trip(tmp_path, write_card):
    """The real backbone (not marked slow on purpose: it is the one test that catches what tiny random
    models cannot, such as loading the packaged weights and the canonical Hub id)."""
    card = write_card()
    model = adapt(str(card), config=AdaptConfig(backbone=BackboneConfig(name="minilm"), steps=3), shots=2, evaluate_split=None)
    assert model.model.backbone.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    folder = model.save(tmp_path / "minilm-adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    loaded = load_adapter(folder)
    want, got = model.predict(PROBE), loaded.predict(PROBE)
    assert_close(got.probabilities, want.probabilities)
    assert got.labels == want.labels


# -- bad input ---------------------------------------------------------------------------------------
def test_adapter_saved_for_another_backbone(saved_tiny_bert):
    _, folder = saved_tiny_bert
    with pytest.raises(BackboneError) as err:
        load_adapter(folder, backbone="tiny-llama")
    msg = str(err.value)
    assert str(folder) in msg and "'tiny-bert'" in msg and "'tiny-llama'" in msg


def test_unknown_backbone_in_config(local_card):
    with pytest.raises(BackboneError, match="unknown backbone 'tiny-bret'"):
        adapt(str(local_card), config=_cfg("tiny-bret"), shots=2)


def test_more_shots_than_examples(local_card, tiny_backbone):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings())
    with pytest.raises(DataError) as err:
        adapt(str(local_card), config=_cfg(), shots=9, model=model)
    msg = str(err.value)
    assert "scenario local/reviews split train" in msg and "9 shots" in msg and "only 5" in msg


def test_empty_support_set(tiny_backbone):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings())
    enc = model.encode(POSITIVE[:2]).select([])
    with pytest.raises(DataError, match="scenario local/reviews: the support set is empty"):
        adapt_loop(model, enc, torch.zeros(0, dtype=torch.long), 2, Init(lora=model.default_lora), _cfg(),
                   where="scenario local/reviews")


def test_missing_eval_split(local_card, tiny_backbone):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings())
    with pytest.raises(DataError, match="scenario local/reviews has no 'dev' split"):
        adapt(str(local_card), config=_cfg(), shots=2, model=model, evaluate_split="dev")


def test_not_an_adapter_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_adapter(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "adapter_config.json").write_text("{}")
    with pytest.raises(DataError, match="adapter_model.safetensors is missing"):
        load_adapter(tmp_path / "half")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"\x80")
    with pytest.raises(DataError, match="refusing pickled weight files"):
        load_adapter(tmp_path / "pickled")


def test_existing_folder_is_never_overwritten(saved_tiny_bert, tmp_path, monkeypatch):
    model, _ = saved_tiny_bert
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    before = _files(target)

    def no_work(*a, **k):
        raise AssertionError("work started before the overwrite check")

    monkeypatch.setattr(model.model.peft, "save_pretrained", no_work)
    with pytest.raises(DataError) as err:
        model.save(target)
    assert str(target) in str(err.value) and "--overwrite" in str(err.value)
    assert _files(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    # an empty folder is fine to write into
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()
    model.save(tmp_path / "empty")
    assert (tmp_path / "empty" / "adapter_model.safetensors").is_file()


def test_failed_save_keeps_the_old_folder(saved_tiny_bert, tmp_path, monkeypatch):
    model, _ = saved_tiny_bert
    target = model.save(tmp_path / "adapter")
    before = _files(target)
    written = []
    real_save_file = adapter_io.save_file

    def fail_midway(tensors, filename, *a, **k):
        written.extend(p.name for p in Path(filename).parent.iterdir())  # peft's files are already there
        raise OSError("disk full")

    monkeypatch.setattr(adapter_io, "save_file", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        model.save(target, overwrite=True)
    assert "adapter_model.safetensors" in written  # it really failed halfway through
    assert _files(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp or backup folder left

    # and an overwrite that succeeds replaces the folder in one piece
    monkeypatch.setattr(adapter_io, "save_file", real_save_file)
    monkeypatch.setattr(model, "metadata", {**model.metadata, "note": "second"})
    model.save(target, overwrite=True)
    assert json.loads((target / "metalora.json").read_text())["note"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_truncation_travels_with_the_adapter(tmp_path):
    """An adapter trained on head+tail inputs must be served with them: load_adapter reads it back."""
    card = write_scenario(tmp_path / "scenario")
    cfg = AdaptConfig(backbone=BackboneConfig(name="tiny-bert", max_length=16, truncation="head_tail", head_tokens=4), steps=3, lr=1e-2)
    model = adapt(str(card), config=cfg, shots=4)
    folder = model.save(tmp_path / "adapter")
    saved = json.loads((folder / "metalora.json").read_text())["backbone"]
    assert (saved["truncation"], saved["head_tokens"], saved["max_length"]) == ("head_tail", 4, 16)
    loaded = load_adapter(folder)
    assert loaded.model.backbone.config.truncation == "head_tail" and loaded.model.backbone.config.head_tokens == 4
    long = [" ".join(["filler"] * 40) + " broke in a day"]
    assert_close(loaded.predict(long).probabilities, model.predict(long).probabilities)
