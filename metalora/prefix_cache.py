"""The prefix cache: run the frozen layers below the lowest LoRA layer once per example, not once per step.

Why: with LoRA on the top N layers only, everything below the lowest LoRA layer (embeddings and the
first layers) computes the same states at every training step. `prefix` runs that part once
(`LoraClassifier.encode` keeps its output as `Encoded.hidden`), and `suffix` runs the rest - the
LoRA layers and the final norm - from those states at each step. Both halves rebuild exactly what the
architecture's own forward hands every layer, so cached and uncached outputs are equal (tested
against the uncached forward for each architecture below).

Supported architectures (`STACKS`), and what each forward hands its layers:
- bert:  token/position/type embeddings; a bidirectional additive padding mask.
- mpnet: embeddings with positions counted over non-padding tokens; a bidirectional padding mask,
         and the relative position bias, computed ONCE per forward from the encoder's shared bucket
         table and handed to every layer.
- llama: token embeddings; a causal + padding mask, rotary (cos, sin) for positions 0..T-1 computed
         once and handed to every layer; the final RMSNorm.
- gpt2:  token + learned position embeddings; a causal + padding mask; the final LayerNorm.
Padding is on the right (as everywhere in metalora): a real token's state never depends on the
padding after it, so a batch cut to its own longest example (`Encoded.select`) gives the same states.

Any other architecture, LoRA on a module outside the layer stack (e.g. the embeddings), or LoRA on
the first layer (nothing but an embedding lookup below it) falls back to no cache: `plan` returns cut None, `encode` keeps no hidden states and every step runs the whole
peft model. `why_not` says why, for logs and errors.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn


def _call(fn, **kwargs):
    """Call a transformers helper with the keyword arguments its signature has (names moved between
    versions: `cache` / `past_key_values`, `inputs_embeds` / `input_embeds`). Where a version keeps
    both, the old name is only a deprecated alias that warns once per call, so it is left out."""
    params = inspect.signature(fn).parameters
    if "cache" in params and "past_key_values" in params:
        kwargs.pop("past_key_values", None)
    return fn(**{k: v for k, v in kwargs.items() if k in params and params[k].kind is not params[k].VAR_KEYWORD})


def _state(out) -> Tensor:
    """A layer's output hidden states (some layers return a tuple whose first item they are)."""
    return out[0] if isinstance(out, tuple) else out


def _bidirectional(base: nn.Module, hidden: Tensor, mask: Tensor):
    from transformers.masking_utils import create_bidirectional_mask

    return _call(create_bidirectional_mask, config=base.config, inputs_embeds=hidden, input_embeds=hidden, attention_mask=mask)


def _causal(base: nn.Module, hidden: Tensor, mask: Tensor, position_ids: Tensor):
    from transformers.masking_utils import create_causal_mask

    return _call(create_causal_mask, config=base.config, inputs_embeds=hidden, input_embeds=hidden, attention_mask=mask,
                 cache=None, past_key_values=None, position_ids=position_ids,
                 cache_position=position_ids[0])


class Stack:
    """How one architecture's base model runs: embeddings -> per-forward context -> layers -> final norm."""

    layers_path: str

    def layers(self, base: nn.Module) -> nn.ModuleList:
        node = base
        for part in self.layers_path.split("."):
            node = getattr(node, part)
        return node

    def embed(self, base: nn.Module, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def context(self, base: nn.Module, hidden: Tensor, mask: Tensor) -> dict[str, Any]:
        """What every layer of one forward receives besides the hidden states (masks, positions)."""
        raise NotImplementedError

    def layer(self, layer: nn.Module, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:
        return _state(layer(hidden, **ctx))

    def finish(self, base: nn.Module, hidden: Tensor) -> Tensor:
        return hidden


class BertStack(Stack):
    layers_path = "encoder.layer"

    def embed(self, base, ids):
        return base.embeddings(input_ids=ids)

    def context(self, base, hidden, mask):
        return {"attention_mask": _bidirectional(base, hidden, mask)}


class MPNetStack(Stack):
    layers_path = "encoder.layer"

    def embed(self, base, ids):
        return base.embeddings(input_ids=ids)

    def context(self, base, hidden, mask):
        # MPNetEncoder.forward computes this once and passes it to every layer; so do we
        return {"attention_mask": _bidirectional(base, hidden, mask),
                "position_bias": base.encoder.compute_position_bias(hidden)}


def _positions(hidden: Tensor) -> Tensor:
    return torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)


class LlamaStack(Stack):
    layers_path = "layers"

    def embed(self, base, ids):
        return base.embed_tokens(ids)

    def context(self, base, hidden, mask):
        pos = _positions(hidden)
        return {"attention_mask": _causal(base, hidden, mask, pos), "position_ids": pos,
                "position_embeddings": base.rotary_emb(hidden, position_ids=pos)}

    def finish(self, base, hidden):
        return base.norm(hidden)


class GPT2Stack(Stack):
    layers_path = "h"

    def embed(self, base, ids):
        h = base.wte(ids) + base.wpe(_positions(ids))
        return base.drop(h)

    def context(self, base, hidden, mask):
        pos = _positions(hidden)
        return {"attention_mask": _causal(base, hidden, mask, pos), "position_ids": pos}

    def finish(self, base, hidden):
        return base.ln_f(hidden)


# The one list of architectures the prefix cache supports (model_type -> how its stack runs).
STACKS: dict[str, Stack] = {"bert": BertStack(), "mpnet": MPNetStack(), "llama": LlamaStack(), "gpt2": GPT2Stack()}


@dataclass(frozen=True)
class Plan:
    """Where the stack is cut: layers [0, cut) are cached, [cut, L) run each step; cut None = no cache."""

    stack: Stack | None
    cut: int | None
    why_not: str | None = None  # the reason there is no cache


def plan(model_type: str, lora_names: Sequence[str], layers_path: str | None) -> Plan:
    """The cut for LoRA weights named `lora_names` (peft parameter names) on a `model_type` model."""
    stack = STACKS.get(model_type)
    if stack is None:
        return Plan(None, None, f"no prefix cache for model type {model_type!r} (supported: {', '.join(STACKS)}); "
                                "every step runs the whole model")
    pattern = re.compile(rf"(?:^|\.){re.escape(layers_path or stack.layers_path)}\.(\d+)\.")
    indices = []
    for name in lora_names:
        m = pattern.search(name)
        if m is None:
            return Plan(None, None, f"LoRA on {name.split('.lora_')[0]!r}, outside the layer stack: no prefix cache")
        indices.append(int(m.group(1)))
    if not indices or min(indices) == 0:
        # only the embedding lookup lies below: caching its output would save nothing and hold [N, T, H] per text
        return Plan(None, None, "LoRA on the first layer: nothing below it worth caching")
    return Plan(stack, min(indices))


def prefix(stack: Stack, base: nn.Module, ids: Tensor, mask: Tensor, cut: int) -> Tensor:
    """Hidden states entering layer `cut`."""
    h = stack.embed(base, ids)
    layers = stack.layers(base)[:cut]
    if len(layers):
        ctx = stack.context(base, h, mask)
        for layer in layers:
            h = stack.layer(layer, h, ctx)
    return h


def suffix(stack: Stack, base: nn.Module, hidden: Tensor, mask: Tensor, cut: int) -> Tensor:
    """The base model's last hidden state (final norm included) from the states entering layer `cut`."""
    ctx = stack.context(base, hidden, mask)
    h = hidden
    for layer in stack.layers(base)[cut:]:
        h = stack.layer(layer, h, ctx)
    return stack.finish(base, h)
