"""Backbones and the LoRA classifier: tiny models are reproducible, only LoRA is trainable, the prefix
cache equals a full peft forward, and the functional API leaves the module's weights alone."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch.testing import assert_close

from metalora.backbones import KNOWN, load_backbone
from metalora.config import BackboneConfig, LoraSettings
from metalora.errors import BackboneError, MetaloraError
from metalora.model import LoraClassifier, head_logits, pool, prototype_head

from conftest import NEGATIVE, POSITIVE

TEXTS = POSITIVE[:4] + NEGATIVE[:4]


def _perturb_b(model: LoraClassifier, scale: float = 0.5) -> dict:
    """LoRA weights with random B (peft initialises B to zero, which would hide any mistake)."""
    params = model.lora_params()
    for k in params:
        if "lora_B" in k:
            params[k] = torch.randn_like(params[k]) * scale
    return params


@pytest.mark.parametrize("name, kind, pooling", [("tiny-bert", "encoder", "mean"), ("tiny-mpnet", "encoder", "mean"),
                                                  ("tiny-gpt2", "decoder", "last"), ("tiny-llama", "decoder", "last")])
def test_tiny_backbones_are_reproducible_and_frozen(name, kind, pooling):
    a, b = load_backbone(name), load_backbone(BackboneConfig(name=name))
    assert (a.kind, a.pooling, a.base_model, a.hidden_size) == (kind, pooling, name, 32)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert not any(p.requires_grad for p in a.model.parameters())
    assert not a.model.training
    assert a.tokenizer.pad_token is not None and a.tokenizer.padding_side == "right"


def test_unknown_backbone():
    with pytest.raises(BackboneError) as err:
        load_backbone("no-such-backbone")
    msg = str(err.value)
    assert "'no-such-backbone'" in msg and all(k in msg for k in KNOWN)
    assert issubclass(BackboneError, MetaloraError)
    with pytest.raises(BackboneError, match="cannot load backbone"):
        load_backbone("/nonexistent/model-folder")


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-mpnet", "tiny-gpt2", "tiny-llama"])
def test_only_lora_is_trainable(tiny_backbone, name):
    model = LoraClassifier(tiny_backbone(name), LoraSettings(r=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.lora_names) and trainable
    assert all("lora_A" in n or "lora_B" in n for n in trainable)
    # peft's init: B is zero, so the adapted model starts as the backbone itself
    assert all(torch.count_nonzero(v) == 0 for k, v in model.default_lora.items() if "lora_B" in k)
    # LoRA init is seeded: a second classifier starts from the very same weights
    again = LoraClassifier(tiny_backbone(name), LoraSettings(r=4))
    for k, v in model.default_lora.items():
        assert torch.equal(v, again.default_lora[k]), k


def test_top_layers_puts_lora_on_the_top_layers_only(tiny_backbone):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(top_layers=2))
    assert model.cut == 1
    layers = {int(n.split("encoder.layer.")[1].split(".")[0]) for n in model.lora_names}
    assert layers == {1, 2}
    assert {n.split(".")[-4] for n in model.lora_names} == {"query", "value"}


def test_prefix_cache_equals_full_peft_forward(tiny_backbone, seed):
    settings = LoraSettings(r=4, alpha=8, top_layers=2)
    model = LoraClassifier(tiny_backbone("tiny-bert"), settings)
    params = _perturb_b(model)
    enc = model.encode(TEXTS)
    assert enc.hidden is not None and model.cut == 1  # the cached path is the one under test
    cached = model.features(params, enc)

    # reference: plain peft on a fresh copy of the backbone, full forward, the same LoRA weights
    ref_bb = tiny_backbone("tiny-bert")
    ref = get_peft_model(ref_bb.model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                  layers_to_transform=[1, 2], layers_pattern="layer"))
    ref.eval()
    named = dict(ref.named_parameters())
    ref_lora = {n for n in named if "lora_" in n}
    assert ref_lora == {k.removeprefix("peft.") for k in params}
    with torch.no_grad():
        for k, v in params.items():
            named[k.removeprefix("peft.")].copy_(v)
        tok = ref_bb.tokenizer(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = ref(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).float()
        expected = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert_close(cached, expected)
    # the uncached path of the same model agrees too, and the perturbation matters
    assert_close(model.features(params, type(enc)(enc.ids, enc.mask)), expected)
    assert (model.features(model.default_lora, enc) - expected).abs().max() > 1e-3


def test_cached_batches_equal_the_whole(tiny_backbone, seed):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(top_layers=1))
    params = _perturb_b(model)
    enc = model.encode(TEXTS, batch_size=3)
    whole = model.features(params, enc)
    parts = torch.cat([model.features(params, b) for b in enc.batches(3)])
    assert_close(parts, whole)
    idx = [5, 0, 3]
    assert_close(model.features(params, enc.select(idx)), whole[idx])


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_decoder_features_are_last_token_of_a_peft_forward(tiny_backbone, seed, name):
    model = LoraClassifier(tiny_backbone(name), LoraSettings(r=4))
    params = _perturb_b(model)
    enc = model.encode(TEXTS)
    assert enc.hidden is None  # LoRA on every layer: nothing below to cache (top_layers: see test_prefix_cache)
    feats = model.features(params, enc)
    model.load_lora(params)
    with torch.no_grad():
        h = model.peft(input_ids=enc.ids, attention_mask=enc.mask).last_hidden_state
    last = enc.mask.sum(1) - 1
    assert_close(feats, F.normalize(h[torch.arange(len(TEXTS)), last], dim=-1))


def test_features_leave_module_weights_alone_and_get_gradients(tiny_backbone, seed):
    model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(r=4, top_layers=2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {k: v.requires_grad_(True) for k, v in _perturb_b(model).items()}
    enc = model.encode(TEXTS)
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    w, b = prototype_head(model.features(params, enc), labels, 2)
    params.update({"head.weight": w.detach().requires_grad_(True), "head.bias": b.detach().requires_grad_(True)})
    F.cross_entropy(model.logits(params, enc), labels).backward()
    assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in model.lora_names)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None, n


def test_prototype_head_and_pooling():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [2.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 0])
    w, b = prototype_head(feats, labels, 3)
    protos = torch.tensor([[1.5, 1.0], [0.0, 2.0], [0.0, 0.0]])
    assert_close(w, 2 * protos)
    assert_close(b[:2], -(protos[:2] ** 2).sum(1))
    assert b[2] <= -1e4  # a class absent from the support set is never predicted
    # logits rank classes by (negative) squared distance to the prototype
    x = torch.tensor([[0.1, 1.9]])
    logits = head_logits({"head.weight": w, "head.bias": b}, x)
    dist = ((x - protos[:2]) ** 2).sum(1)
    assert_close(logits[0, :2] / 10.0, -(dist - (x ** 2).sum()))
    h = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    assert_close(pool(h, mask, "mean"), h[:, :2].mean(1))
    assert_close(pool(h, mask, "cls"), h[:, 0])
    assert_close(pool(h, mask, "last"), h[:, 1])


def test_prototype_head_prior_adds_u_dot_prototype_to_the_bias():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [2.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 0])
    u = torch.tensor([0.5, -1.0])
    w0, b0 = prototype_head(feats, labels, 2)
    w, b = prototype_head(feats, labels, 2, prior=u)
    assert_close(w, w0)
    # c_0 = (1.5, 1.0) -> 0.75 - 1.0; c_1 = (0, 2) -> -2.0
    assert_close(b - b0, torch.tensor([-0.25, -2.0]))
    # u is differentiable: its gradient is the prototypes weighted by d loss / d bias
    u = u.clone().requires_grad_(True)
    _, b = prototype_head(feats, labels, 2, prior=u)
    b[0].backward()
    assert_close(u.grad, torch.tensor([1.5, 1.0]))


# -- head+tail truncation ----------------------------------------------------------------------------
LONG = " ".join(f"word{i}" for i in range(200)) + " verdict one star"


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_head_tail_keeps_both_ends_at_max_length(tiny_backbone, name):
    bb = tiny_backbone(name, max_length=24, truncation="head_tail", head_tokens=6)
    model = LoraClassifier(bb, LoraSettings())
    tok = bb.tokenizer
    ids, mask = model.tokenize(["short text", LONG])
    assert ids.shape == mask.shape == (2, 24)
    plain = tok(LONG, add_special_tokens=False)["input_ids"]
    full = tok(LONG, add_special_tokens=True)["input_ids"]
    assert len(full) == len(plain) + 2  # the tiny models reuse MiniLM's WordPiece tokenizer: [CLS] ... [SEP]
    prefix, suffix = full[:1], full[-1:]
    body = 24 - len(prefix) - len(suffix)
    assert prefix + plain[:6] + plain[-(body - 6):] + suffix == ids[1].tolist()
    assert tok.decode(ids[1]).rstrip(" [SEP]").endswith("one star")  # the verdict survives; plain truncation drops it
    # a text that fits is exactly what ordinary tokenisation gives, padded on the right
    want = tok(["short text"], add_special_tokens=True)["input_ids"][0]
    assert ids[0, :len(want)].tolist() == want and mask[0].tolist() == [1] * len(want) + [0] * (24 - len(want))
    assert (ids[0, len(want):] == tok.pad_token_id).all()


def test_head_truncation_is_plain_tokenizer_truncation(tiny_backbone):
    bb = tiny_backbone("tiny-bert", max_length=24)
    ids, mask = LoraClassifier(bb, LoraSettings()).tokenize(["short text", LONG])
    want = bb.tokenizer(["short text", LONG], padding=True, truncation=True, max_length=24, return_tensors="pt")
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    assert "one star" not in bb.tokenizer.decode(ids[1])


def test_truncation_config_errors_name_the_field():
    with pytest.raises(MetaloraError, match=r"backbone\.truncation: got 'tail'"):
        BackboneConfig(truncation="tail")
    with pytest.raises(MetaloraError, match=r"backbone\.head_tokens: got 64; must be >= 0 and below max_length \(64\)"):
        BackboneConfig(max_length=64, truncation="head_tail", head_tokens=64)


def test_head_tail_refuses_a_tokenizer_it_cannot_read():
    """A tokenizer whose ids change when special tokens are added: a clear error, not a StopIteration."""
    from metalora.model import head_tail_tokenize

    class Odd:
        pad_token_id = 0

        def __call__(self, texts, add_special_tokens=True, **kw):
            ids = [7, 8] if add_special_tokens else [5]
            return {"input_ids": ids if isinstance(texts, str) else [ids for _ in texts]}

    with pytest.raises(BackboneError, match=r"backbone\.truncation: head_tail cannot find .* use truncation: head"):
        head_tail_tokenize(Odd(), ["x"], 16, 4)
