"""4-bit (QLoRA: NF4, bf16 compute) and 8-bit backbones: on a machine without CUDA, one clear line and the float
path, never a crash deep inside bitsandbytes; the settings themselves are checked where CUDA is present."""
from __future__ import annotations

import warnings

import pytest
import torch

from metalora.backbones import load_backbone, quantization_kwargs
from metalora.config import BackboneConfig, LoraSettings
from metalora.errors import ConfigError
from metalora.model import LoraClassifier


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A tiny Llama saved as an ordinary local model folder (config, safetensors, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from metalora.backbones import _tiny_config, minilm_dir

    folder = tmp_path_factory.mktemp("tiny-llama-folder")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_tiny_config("tiny-llama")).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(str(folder))
    return folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback")
@pytest.mark.parametrize("field", ["load_in_4bit", "load_in_8bit"])
def test_quantisation_without_cuda_warns_once_and_loads_float(llama_folder, field):
    cfg = BackboneConfig(name=str(llama_folder), max_length=32, **{field: True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb = load_backbone(cfg)
    ours = [w for w in caught if "backbone." in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    msg = str(ours[0].message)
    assert f"backbone.{field} needs CUDA" in msg and "loads in float32 instead" in msg and "\n" not in msg
    assert not bb.quantized and bb.kind == "decoder"
    assert all(p.dtype == torch.float32 for p in bb.model.parameters())
    model = LoraClassifier(bb, LoraSettings(r=2))  # and the float path trains as usual
    params = {k: v.requires_grad_(True) for k, v in model.lora_params().items()}
    feats = model.features(params, model.encode(["fine", "broken"]))
    feats.sum().backward()
    assert all(params[k].grad is not None for k in params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback")
def test_quantization_kwargs_on_cpu_are_empty():
    with pytest.warns(UserWarning, match="backbone.load_in_4bit needs CUDA"):
        assert quantization_kwargs(BackboneConfig(load_in_4bit=True)) == {}
    assert quantization_kwargs(BackboneConfig()) == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bitsandbytes)")
def test_quantization_kwargs_with_cuda_are_qlora_settings():
    four = quantization_kwargs(BackboneConfig(load_in_4bit=True))["quantization_config"]
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_kwargs(BackboneConfig(load_in_8bit=True))["quantization_config"].load_in_8bit


def test_four_and_eight_bits_together_are_refused():
    with pytest.raises(ConfigError, match=r"backbone\.load_in_8bit: choose load_in_4bit or load_in_8bit, not both"):
        BackboneConfig(load_in_4bit=True, load_in_8bit=True)
