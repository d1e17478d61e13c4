"""The classifier every metalora algorithm trains: backbone + peft LoRA + pooling + a per-scenario head.

Why parameters travel as dicts: adaptation, meta-learning and the bench all run many scenarios over
ONE frozen backbone. The LoRA weights and the head of a scenario are therefore a plain
`dict[name, Tensor]` (`Params`), swapped in with `torch.func.functional_call`, never a deep copy of
the model. The head is not part of the module at all: label sets differ from scenario to scenario,
so a head is built per scenario (from class prototypes, as Proto-MAML does) and applied functionally.

Why a prefix cache: with LoRA on the top N layers only, the layers below never change, so their
output is computed once per example (`encode`) and every training step runs only the top layers.
That is exact (tested) and several times faster on a CPU. `metalora.prefix_cache` says which
architectures it supports (BERT, MPNet, Llama, GPT-2) and how; any other runs the whole stack each step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn
from torch.func import functional_call

from metalora import prefix_cache
from metalora.backbones import Backbone, default_target_modules
from metalora.config import LoraSettings
from metalora.errors import BackboneError
from metalora.label_words import WORDS_KEY, label_word_logits, last_index, positions, prompt_tokenize, template

Params = dict[str, Tensor]
HEAD_KEYS = ("head.weight", "head.bias")
SCALE_KEY = "logit_scale"
PRIOR_KEY = "head.prior"  # meta-learned class-prior direction u (see prototype_head)
DEFAULT_LOGIT_SCALE = 10.0


def head_tail_tokenize(tok, texts: Sequence[str], max_length: int, head_tokens: int) -> tuple[Tensor, Tensor]:
    """Keep a too-long text's first `head_tokens` and its last tokens, special tokens added after.

    Why: a review's verdict ("one star", "would not buy again") is often at its end, which plain
    truncation drops; head+tail truncation (Sun et al., "How to Fine-Tune BERT for Text
    Classification?", 2019) keeps both ends at the same sequence length and so the same cost.
    Padding is on the right, as everywhere in metalora.
    """
    # the special tokens a single text gets, read off a probe (transformers 5 tokenizers have no
    # build_inputs_with_special_tokens): [CLS] ... [SEP] for BERT, <s> ... for Llama, nothing for GPT-2
    probe = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(probe) + 1) if full[i:i + len(probe)] == probe), None)
    if start is None:
        raise BackboneError(f"backbone.truncation: head_tail cannot find where {type(tok).__name__} puts its special tokens "
                            "(its ids for a text change when they are added); use truncation: head for this backbone")
    prefix, suffix = full[:start], full[start + len(probe):]
    body = max(1, max_length - len(prefix) - len(suffix))
    head = min(head_tokens, body - 1)
    rows = []
    for ids in tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]:
        if len(ids) > body:
            ids = ids[:head] + ids[len(ids) - (body - head):]
        rows.append(prefix + ids + suffix)
    width = max((len(r) for r in rows), default=0)
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)
    return input_ids, mask


@dataclass
class Encoded:
    """Tokenised examples, and for cacheable backbones the frozen prefix's hidden states."""

    ids: Tensor  # [N, T]
    mask: Tensor  # [N, T]
    hidden: Tensor | None = None  # [N, T, H] states entering the lowest LoRA layer (`LoraClassifier.cut`)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def select(self, index: Tensor | Sequence[int]) -> "Encoded":
        index = torch.as_tensor(index, dtype=torch.long)
        mask = self.mask[index]
        width = max(int(mask.sum(1).max().item()), 1) if len(index) else 1
        hidden = self.hidden[index, :width] if self.hidden is not None else None
        return Encoded(self.ids[index, :width], mask[:, :width], hidden)

    def batches(self, size: int) -> Iterable["Encoded"]:
        for start in range(0, len(self), size):
            yield self.select(range(start, min(start + size, len(self))))


def lora_config(backbone: Backbone, settings: LoraSettings) -> LoraConfig:
    targets = list(settings.target_modules) if settings.target_modules else default_target_modules(backbone)
    layers = None
    if settings.top_layers is not None:
        top = min(settings.top_layers, backbone.num_layers)
        layers = list(range(backbone.num_layers - top, backbone.num_layers))
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        layers_pattern=backbone.layers_path.split(".")[-1] if layers and backbone.layers_path else None,
        task_type="FEATURE_EXTRACTION",
        base_model_name_or_path=backbone.base_model,
        revision=backbone.config.revision,
    )


class LoraClassifier(nn.Module):
    """A frozen backbone with peft LoRA layers; features are pooled, L2-normalised token states."""

    def __init__(self, backbone: Backbone, settings: LoraSettings):
        super().__init__()
        self.backbone = backbone
        self.settings = settings
        self.peft_config = lora_config(backbone, settings)
        backbone.model.name_or_path = backbone.base_model  # peft records it as the adapter's base model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # peft's default LoRA init (A random, B zero) is the same in every run
            self.peft = get_peft_model(backbone.model, self.peft_config)
        self.peft.eval()  # dropout off unless a caller opts in; LoRA dropout is applied via train()
        self.lora_names = tuple(n for n, p in self.named_parameters() if "lora_" in n)
        self.lora_set = frozenset(self.lora_names)
        for name, p in self.named_parameters():
            p.requires_grad_(name in self.lora_names)
        self.default_lora = self.lora_params()  # peft's own init: the `vanilla` starting point
        self.cache_plan = prefix_cache.plan(backbone.model_type, self.lora_names, backbone.layers_path)
        self.cut = self.cache_plan.cut or 0  # layers [0, cut) run once per example in `encode`

    def enable_double_backward(self) -> None:
        """Second-order MAML differentiates through attention's backward, which the fused CPU SDPA
        kernels do not support; the eager implementation does (and computes the same values)."""
        self.base.set_attn_implementation("eager")

    # -- structure -------------------------------------------------------------------------------
    @property
    def cacheable(self) -> bool:
        """Whether `encode` keeps the frozen prefix's states (see `metalora.prefix_cache`; `cache_plan.why_not`)."""
        return self.cache_plan.cut is not None

    @property
    def base(self) -> nn.Module:
        return self.peft.base_model.model

    def lora_params(self) -> Params:
        """The current LoRA weights, detached copies (a snapshot, e.g. peft's default init)."""
        named = dict(self.named_parameters())
        return {n: named[n].detach().clone() for n in self.lora_names}

    def load_lora(self, params: Params) -> None:
        named = dict(self.named_parameters())
        with torch.no_grad():
            for n in self.lora_names:
                named[n].copy_(params[n])

    # -- inputs ----------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        cfg, tok = self.backbone.config, self.backbone.tokenizer
        prompt = template(cfg)
        if prompt != "{text}":  # only the text is shortened, never the prompt's end
            return prompt_tokenize(tok, texts, prompt, cfg.max_length, cfg.truncation, cfg.head_tokens,
                                   trailing_specials=cfg.scoring != "label_words")
        if cfg.truncation == "head":
            out = tok(list(texts), padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
            return out["input_ids"], out["attention_mask"]
        return head_tail_tokenize(tok, texts, cfg.max_length, cfg.head_tokens)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Encoded:
        """Tokenise, and run the frozen prefix once (the part of the stack LoRA never touches)."""
        ids, mask = self.tokenize(texts)
        enc = Encoded(ids, mask)
        if not self.cacheable:
            return enc
        device, stack = self.device, self.cache_plan.stack
        chunks = []
        for start in range(0, len(ids), batch_size):
            i, m = ids[start:start + batch_size].to(device), mask[start:start + batch_size].to(device)
            chunks.append(prefix_cache.prefix(stack, self.base, i, m, self.cut).cpu())
        enc.hidden = torch.cat(chunks) if chunks else torch.zeros(0, ids.shape[1], self.backbone.hidden_size)
        return enc

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, ids: Tensor, mask: Tensor, hidden: Tensor | None = None, tokens: bool = False) -> Tensor:
        """Pooled, normalised features [N, H] from token ids (or the cached prefix states); with
        `tokens=True` the last layer's token states [N, T, H] (final norm included) instead."""
        if hidden is not None and self.cacheable:
            h = prefix_cache.suffix(self.cache_plan.stack, self.base, hidden, mask, self.cut)
        elif self.backbone.kind == "decoder":  # positions from the mask: left padding = right padding
            h = self.peft(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).last_hidden_state
        else:
            h = self.peft(input_ids=ids, attention_mask=mask).last_hidden_state
        if tokens:
            return h
        return F.normalize(pool(h, mask, self.backbone.pooling), dim=-1)

    def features(self, params: Params | None, enc: Encoded) -> Tensor:
        """Features under `params` (LoRA weights by name) without touching the module's own weights."""
        return self._run(params, enc, tokens=False)

    def token_states(self, params: Params | None, enc: Encoded) -> Tensor:
        """The last layer's token states [N, T, H] under `params` (e.g. for a language-model head),
        from the cached prefix when `enc` has one."""
        return self._run(params, enc, tokens=True)

    def _run(self, params: Params | None, enc: Encoded, tokens: bool) -> Tensor:
        device = self.device
        args = (enc.ids.to(device), enc.mask.to(device), enc.hidden.to(device) if enc.hidden is not None else None)
        if params is None:
            return self(*args, tokens=tokens)
        return functional_call(self, self.lora_only(params), args, {"tokens": tokens}, strict=False)

    def lora_only(self, params: Params) -> Params:
        """The LoRA entries of a params dict (dropping head, scale and anything else)."""
        return {k: v for k, v in params.items() if k in self.lora_set}

    def logits(self, params: Params, enc: Encoded) -> Tensor:
        if WORDS_KEY in params:  # a label-word head: the LM head scores each class's word (metalora.label_words)
            return label_word_logits(self, params, enc)
        return head_logits(params, self.features(params, enc))

    @torch.no_grad()
    def predict_proba(self, params: Params, enc: Encoded, batch_size: int = 64) -> Tensor:
        out = [torch.softmax(self.logits(params, b), dim=-1).cpu() for b in enc.batches(batch_size)]
        classes = params[WORDS_KEY if WORDS_KEY in params else "head.weight"].shape[0]
        return torch.cat(out) if out else torch.zeros(0, classes)


def pool(h: Tensor, mask: Tensor, how: str) -> Tensor:
    m = mask.to(h.dtype).unsqueeze(-1)
    if how == "mean":
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "cls":
        return h[:, 0]
    # the last real token, wherever the padding is
    return h[torch.arange(h.shape[0], device=h.device), last_index(mask)]


# -- heads -----------------------------------------------------------------------------------------
def prototype_head(features: Tensor, labels: Tensor, num_labels: int, prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Proto-MAML's head: row k = 2 c_k, bias k = -|c_k|^2, so logits rank classes by distance to c_k.

    Differentiable in `features`, so a second-order meta-gradient flows through the prototypes into
    the LoRA init. A class absent from the support set gets a zero row and a very low bias.

    `prior` (u, meta-learned) adds u . c_k to bias k. A balanced support set says nothing about how
    often each class occurs, but the training scenarios do: on ARSC the positive class is the frequent
    one, and its prototype sits in a recognisable region, so u learns to favour classes that look like
    it. Being a function of the prototypes, it needs no fixed label order and serves unseen labels.
    """
    onehot = F.one_hot(labels, num_labels).to(features.dtype)  # [N, C]
    counts = onehot.sum(0)  # [C]
    protos = (onehot.T @ features) / counts.clamp_min(1.0).unsqueeze(1)  # [C, H]
    weight = 2.0 * protos
    bias = -(protos * protos).sum(1)
    if prior is not None:
        bias = bias + protos @ prior.to(protos)
    bias = torch.where(counts > 0, bias, torch.full_like(bias, -1e4))
    return weight, bias


def random_head(hidden: int, num_labels: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    bound = 1.0 / math.sqrt(hidden)
    weight = (torch.rand(num_labels, hidden, generator=generator) * 2 - 1) * bound
    return weight, torch.zeros(num_labels)


def head_logits(params: Params, features: Tensor) -> Tensor:
    scale = params[SCALE_KEY].exp() if SCALE_KEY in params else DEFAULT_LOGIT_SCALE
    return scale * (features @ params["head.weight"].T + params["head.bias"])


def fold_head(params: Params) -> tuple[Tensor, Tensor]:
    """The head as a plain linear layer (the scale multiplied in), for saving and for plain-peft users."""
    scale = params[SCALE_KEY].exp() if SCALE_KEY in params else torch.tensor(DEFAULT_LOGIT_SCALE)
    return (scale * params["head.weight"]).detach().clone(), (scale * params["head.bias"]).detach().clone()
