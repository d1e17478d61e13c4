"""The real all-mpnet-base-v2 from its five part packages (extra `base`, part of the test install).

Not marked slow on purpose: assembling the cache takes about 15 s once per machine, a load from the
cache under a second, and these are the tests that catch what tiny random models cannot (the packaged
weights, the recorded checksums, the tokenizer, the prefix cache on the real relative position bias)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from metalora.api import adapt, load_adapter
from metalora.backbones import MPNET_HUB_ID, load_backbone
from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
from metalora.errors import BackboneError
from metalora.model import Encoded, LoraClassifier
from metalora.part_packages import MPNET, assemble, verify_cache


@pytest.fixture(scope="module")
def mpnet():
    return load_backbone("mpnet")


def test_mpnet_loads_from_its_parts_into_a_verified_cache(mpnet):
    folder = assemble(MPNET)
    assert verify_cache(MPNET, folder) is None
    assert (mpnet.base_model, mpnet.kind, mpnet.model_type, mpnet.num_layers, mpnet.hidden_size, mpnet.pooling) == (
        MPNET_HUB_ID, "encoder", "mpnet", 12, 768, "mean")
    assert mpnet.tokenizer.pad_token == "<pad>" and mpnet.tokenizer.padding_side == "right"
    assert not any(p.requires_grad for p in mpnet.model.parameters())
    assert load_backbone(MPNET_HUB_ID).base_model == MPNET_HUB_ID  # the canonical id maps back to the offline copy


def test_mpnet_sentence_embeddings_are_the_pretrained_ones(mpnet):
    """Mean-pooled, normalised (sentence-transformers' recipe): a paraphrase is far closer than an unrelated text."""
    texts = ["The battery dies after an hour.", "Battery life is terrible, it lasts one hour.", "Lovely colour, fits well."]
    tok = mpnet.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = mpnet.model(**tok).last_hidden_state
    m = tok["attention_mask"].unsqueeze(-1).float()
    e = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3, sim


def test_mpnet_prefix_cache_is_exact_on_the_real_model(mpnet):
    model = LoraClassifier(mpnet, LoraSettings(r=4, top_layers=2, target_modules=("q", "v")))
    assert model.cut == 10 and model.cacheable
    params = model.lora_params()
    g = torch.Generator().manual_seed(0)
    for k in params:
        if "lora_B" in k:
            params[k] = torch.randn(params[k].shape, generator=g) * 0.05
    enc = model.encode(["great sound, would buy again", "stopped working after a week and support never answered"])
    assert enc.hidden.shape[-1] == 768
    cached = model.features(params, enc)
    assert_close(cached, model.features(params, Encoded(enc.ids, enc.mask)), rtol=1e-4, atol=1e-5)
    assert (cached - model.features(model.default_lora, enc)).abs().max() > 1e-3


def test_an_adapter_trained_on_minilm_refuses_mpnet(tmp_path, write_card):
    card = write_card()
    folder = adapt(str(card), config=AdaptConfig(backbone=BackboneConfig(name="minilm"), steps=1), shots=2,
                   evaluate_split=None).save(tmp_path / "minilm-adapter")
    with pytest.raises(BackboneError) as err:
        load_adapter(folder, backbone="mpnet")
    msg = str(err.value)
    assert "'sentence-transformers/all-MiniLM-L6-v2'" in msg and f"'{MPNET_HUB_ID}'" in msg and str(folder) in msg
