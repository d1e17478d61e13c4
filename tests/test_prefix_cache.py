"""The prefix cache is exact for every architecture it supports (BERT, MPNet, Llama, GPT-2): features,
last-layer token states and LoRA gradients equal those of a plain peft forward over the whole model;
anything else falls back to no cache and stays correct."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch.testing import assert_close

from metalora import prefix_cache
from metalora.config import LoraSettings
from metalora.model import Encoded, LoraClassifier, pool

from conftest import NEGATIVE, POSITIVE

TEXTS = POSITIVE[:4] + NEGATIVE[:4]  # different lengths: every batch has right padding
ARCHS = ["tiny-bert", "tiny-mpnet", "tiny-llama", "tiny-gpt2"]
TARGETS = {"tiny-bert": ["query", "value"], "tiny-mpnet": ["q", "v", "o"], "tiny-llama": ["q_proj", "v_proj", "down_proj"],
           "tiny-gpt2": ["c_attn", "c_proj"]}


def _perturbed(model: LoraClassifier, scale: float = 0.5) -> dict:
    """LoRA weights with random B (peft initialises B to zero, which would hide any mistake)."""
    params = model.lora_params()
    for k in params:
        if "lora_B" in k:
            params[k] = torch.randn_like(params[k]) * scale
    return params


def _model(tiny_backbone, name, top_layers=2, **kw):
    return LoraClassifier(tiny_backbone(name), LoraSettings(r=4, alpha=8, top_layers=top_layers, target_modules=tuple(TARGETS[name]), **kw))


def _reference(tiny_backbone, name, params, enc: Encoded, layers=(1, 2)):
    """Plain peft on a fresh copy of the backbone, whole forward, the same LoRA weights: token states."""
    bb = tiny_backbone(name)
    ref = get_peft_model(bb.model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[name], layers_to_transform=list(layers),
                                              layers_pattern=bb.layers_path.split(".")[-1]))
    ref.eval()
    named = dict(ref.named_parameters())
    assert {n for n in named if "lora_" in n} == {k.removeprefix("peft.") for k in params}
    with torch.no_grad():
        for k, v in params.items():
            named[k.removeprefix("peft.")].copy_(v)
        return ref(input_ids=enc.ids, attention_mask=enc.mask).last_hidden_state


@pytest.mark.parametrize("name", ARCHS)
def test_cached_forward_equals_the_whole_peft_forward(tiny_backbone, seed, name):
    model = _model(tiny_backbone, name)
    params = _perturbed(model)
    enc = model.encode(TEXTS)
    assert model.cacheable and model.cut == 1 and enc.hidden is not None  # the cached path is under test
    assert enc.hidden.shape == (*enc.ids.shape, 32)
    expected = _reference(tiny_backbone, name, params, enc)
    m = enc.mask.bool()
    states = model.token_states(params, enc)
    assert_close(states[m], expected[m])  # real tokens (pad positions are never read)
    want = F.normalize(pool(expected, enc.mask, model.backbone.pooling), dim=-1)
    assert_close(model.features(params, enc), want)
    # the uncached path of the same model agrees, and the LoRA weights matter
    assert_close(model.features(params, Encoded(enc.ids, enc.mask)), want)
    assert (model.features(model.default_lora, enc) - want).abs().max() > 1e-3


@pytest.mark.parametrize("name", ARCHS)
def test_cached_gradients_equal_uncached(tiny_backbone, seed, name):
    model = _model(tiny_backbone, name)
    base = _perturbed(model)
    enc = model.encode(TEXTS)
    target = torch.randn(len(TEXTS), 32)

    def grads(e):
        params = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        loss = ((model.features(params, e) - target) ** 2).sum()
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    cached, whole = grads(enc), grads(Encoded(enc.ids, enc.mask))
    assert cached.keys() == whole.keys()
    for k in cached:
        assert_close(cached[k], whole[k], msg=k)
    assert all(g.abs().sum() > 0 for k, g in cached.items() if "lora_A" in k)


@pytest.mark.parametrize("name", ARCHS)
def test_cached_batches_and_selections_equal_the_whole(tiny_backbone, seed, name):
    """A batch cut to its own longest example (right padding) gives the same features."""
    model = _model(tiny_backbone, name, top_layers=1)
    assert model.cut == 2
    params = _perturbed(model)
    enc = model.encode(TEXTS, batch_size=3)
    whole = model.features(params, enc)
    assert_close(torch.cat([model.features(params, b) for b in enc.batches(3)]), whole)
    idx = [5, 0, 3]
    sub = enc.select(idx)
    assert sub.ids.shape[1] < enc.ids.shape[1]  # narrower than the whole batch
    assert_close(model.features(params, sub), whole[idx])


def test_mpnet_position_bias_is_computed_once_per_forward(tiny_backbone, seed, monkeypatch):
    model = _model(tiny_backbone, "tiny-mpnet", top_layers=2)
    encoder = model.base.encoder
    calls, seen = [], []
    original = encoder.compute_position_bias
    monkeypatch.setattr(encoder, "compute_position_bias", lambda x, *a, **k: calls.append(x.shape) or original(x, *a, **k))
    for layer in encoder.layer:
        layer.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(id(kwargs["position_bias"])), with_kwargs=True)
    enc = model.encode(TEXTS)
    assert len(calls) == 1 and len(seen) == 1  # the prefix: one bias for its one layer
    calls.clear(), seen.clear()
    model.features(_perturbed(model), enc)
    assert len(calls) == 1 and len(seen) == 2 and len(set(seen)) == 1  # one bias, handed to both LoRA layers
    assert calls[0][:2] == enc.ids.shape


def test_unsupported_architectures_fall_back_to_the_whole_model(tiny_backbone, seed):
    p = prefix_cache.plan("t5", ["peft.base_model.model.encoder.block.1.layer.0.SelfAttention.q.lora_A.default.weight"], None)
    assert p.cut is None and p.stack is None
    assert "'t5'" in p.why_not and all(k in p.why_not for k in prefix_cache.STACKS)


def test_lora_outside_the_stack_falls_back_and_stays_exact(tiny_backbone, seed):
    """LoRA on the word embeddings changes what the 'frozen' prefix computes: no cache, same result."""
    bb = tiny_backbone("tiny-bert")
    model = LoraClassifier(bb, LoraSettings(r=4, target_modules=("query", "value", "word_embeddings")))
    assert not model.cacheable and model.cut == 0 and "outside the layer stack" in model.cache_plan.why_not
    params = model.lora_params()
    for k in params:
        if "lora_B" in k or "lora_embedding_B" in k:
            params[k] = torch.randn_like(params[k]) * 0.5
    enc = model.encode(TEXTS)
    assert enc.hidden is None
    model.load_lora(params)
    with torch.no_grad():
        h = model.peft(input_ids=enc.ids, attention_mask=enc.mask).last_hidden_state
    assert_close(model.features(params, enc), F.normalize(pool(h, enc.mask, "mean"), dim=-1))


@pytest.mark.parametrize("name", ARCHS)
def test_all_layers_lora_runs_the_whole_model(tiny_backbone, seed, name):
    """Nothing but an embedding lookup below layer 0: no cache (no [N, T, H] kept per text), still exact."""
    model = _model(tiny_backbone, name, top_layers=None)
    assert not model.cacheable and model.cut == 0 and "first layer" in model.cache_plan.why_not
    params = _perturbed(model)
    enc = model.encode(TEXTS)
    assert enc.hidden is None
    expected = _reference(tiny_backbone, name, params, enc, layers=(0, 1, 2))
    assert_close(model.features(params, enc), F.normalize(pool(expected, enc.mask, model.backbone.pooling), dim=-1))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_the_causal_prefix_passes_no_deprecated_cache_alias(tiny_backbone, seed, name):
    """transformers 5 keeps `past_key_values` as a deprecated alias of `cache` in create_causal_mask and
    warns on every call that passes both: a bench log filled with one line per encoded batch."""
    import warnings

    model = _model(tiny_backbone, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = model.encode(TEXTS)
        model.features(model.default_lora, enc)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
