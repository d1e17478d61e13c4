"""Label-preserving text perturbations of a support set: word dropout, word swaps, and words replaced by
their neighbours in the backbone's own input-embedding space.

Why nlpaug: its rule-based word augmenters (RandomWordAug, WordEmbsAug) are the well-kept version of
these operations (Wei & Zou, "EDA", 2019; Kobayashi, 2018 for embedding substitution); what metalora
adds is the neighbour table. WordEmbsAug expects word2vec/GloVe/fastText files, which would be a
download; `EmbeddingNeighbours` serves it the backbone's own input embeddings instead (the whole-word
entries of its vocabulary), so nothing is fetched and the neighbours are those the encoder itself sees.

nlpaug draws from Python's and NumPy's global generators; `seeded` sets both for one call and restores
them after, so a seed reproduces the same texts and nothing else in the process is disturbed.
"""
from __future__ import annotations

import contextlib
import random
import weakref
from typing import Sequence

import numpy as np
import torch

from metalora.config import AugmentConfig
from metalora.errors import ConfigError

MIN_WORDS = 100  # a vocabulary with fewer whole-word entries cannot serve `neighbours`


def _nlpaug():
    try:
        import nlpaug.augmenter.word as naw
        import nlpaug.model.word_embs as nmw
    except ImportError:
        raise ConfigError("augment dropout/swap/neighbours need the nlpaug package: pip install 'metalora[augment]'") from None
    return naw, nmw


@contextlib.contextmanager
def seeded(seed: int):
    py, npy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


class _Vocab(list):
    """nlpaug tests `word in model.get_vocab()`; this answers case-insensitively and in O(1)."""

    def __init__(self, words: Sequence[str]):
        super().__init__(words)
        self._set = frozenset(words)

    def __contains__(self, word) -> bool:
        return isinstance(word, str) and word.lower() in self._set


def _neighbour_model_class():
    _, nmw = _nlpaug()

    class EmbeddingNeighbours(nmw.WordEmbeddings):
        """nlpaug's word-embedding model interface over a backbone's input-embedding matrix."""

        def __init__(self, backbone, top_k: int):
            super().__init__(top_k=top_k, skip_check=True)
            tok = backbone.tokenizer
            ids, words = whole_words(tok)
            if len(words) < MIN_WORDS:
                raise ConfigError(f"augment neighbours: backbone {backbone.name!r} has only {len(words)} whole-word tokens "
                                  f"in its vocabulary, too few for embedding neighbours; use dropout or swap instead")
            emb = backbone.model.get_input_embeddings().weight.detach().float().cpu()[ids]
            self.vectors = torch.nn.functional.normalize(emb, dim=-1)
            self.words = _Vocab(words)
            self.index = {w: i for i, w in enumerate(words)}
            self.emb_size = emb.shape[1]
            self.vocab_size = len(words)
            self._cache: dict[tuple[str, int], list[str]] = {}

        def predict(self, word: str, n: int = 1) -> list[str]:
            key = (word.lower(), self.top_k)
            if key not in self._cache:
                i = self.index.get(word.lower())
                if i is None:
                    return [word]
                sims = self.vectors @ self.vectors[i]
                sims[i] = -2.0
                top = sims.topk(self.top_k).indices.tolist()
                self._cache[key] = [self.words[j] for j in top]
            return list(self._cache[key])

    return EmbeddingNeighbours


def whole_words(tok) -> tuple[list[int], list[str]]:
    """Vocabulary entries that decode to one whole lower-case alphabetic word (>= 2 letters): `great` in
    WordPiece (continuations decode to `##ing` and drop out), `Ġgreat` in GPT-2's BPE, `▁great` in
    SentencePiece. Where a word has a space-prefixed and a bare entry, the space-prefixed one (how it
    appears inside a text) is kept; one id per word."""
    ids = sorted(tok.get_vocab().values())
    cands: dict[str, tuple[bool, int]] = {}
    for i, decoded in zip(ids, tok.batch_decode([[i] for i in ids])):
        word = decoded.strip()
        if len(word) >= 2 and word.isascii() and word.isalpha() and word.lower() == word:
            spaced = decoded[:1].isspace()
            if word not in cands or (spaced and not cands[word][0]):
                cands[word] = (spaced, i)
    keep = sorted((i, w) for w, (_, i) in cands.items())
    return [i for i, _ in keep], [w for _, w in keep]


_NEIGHBOURS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def neighbour_model(backbone, top_k: int):
    """One neighbour table per loaded backbone (built in about a second, kept while the backbone lives)."""
    model = _NEIGHBOURS.get(backbone.model)
    if model is None:
        model = _neighbour_model_class()(backbone, top_k)
        _NEIGHBOURS[backbone.model] = model
    model.top_k = top_k
    return model


class TextAugmenter:
    """The text-level augmentations of an AugmentConfig (dropout, swap, neighbours, paraphrase)."""

    def __init__(self, cfg: AugmentConfig, backbone=None):
        self.cfg = cfg
        self.augmenters = []
        naw = None
        for name in cfg.methods:
            if name in ("dropout", "swap", "neighbours") and naw is None:
                naw, _ = _nlpaug()
            if name == "dropout":
                self.augmenters.append((name, naw.RandomWordAug(action="delete", aug_p=cfg.word_p, aug_min=1, aug_max=None)))
            elif name == "swap":
                self.augmenters.append((name, naw.RandomWordAug(action="swap", aug_p=cfg.word_p, aug_min=1, aug_max=None)))
            elif name == "neighbours":
                if backbone is None:
                    raise ConfigError("augment neighbours needs the backbone whose input embeddings give the neighbours")
                model = neighbour_model(backbone, cfg.neighbour_top_k)
                self.augmenters.append((name, naw.WordEmbsAug(model_type="word2vec", model=model, action="substitute",
                                                              aug_p=cfg.word_p, aug_min=1, aug_max=None,
                                                              top_k=cfg.neighbour_top_k)))
            elif name == "paraphrase":
                from metalora.augment.paraphrase import paraphraser

                self.augmenters.append((name, paraphraser(cfg.paraphrase_model)))

    def __bool__(self) -> bool:
        return bool(self.augmenters)

    def __call__(self, texts: Sequence[str], labels: Sequence[int], seed: int) -> tuple[list[str], list[int]]:
        """The support texts followed by `copies` perturbed versions of each per augmentation, labels copied."""
        out_t, out_y = list(texts), list(labels)
        for k, (name, aug) in enumerate(self.augmenters):
            if name == "paraphrase":
                made = aug(list(texts), self.cfg.copies, seed=seed * 1009 + k, max_new_tokens=self.cfg.paraphrase_max_new_tokens)
            else:
                with seeded(seed * 1009 + k):
                    made = [[_one(aug, t) for _ in range(self.cfg.copies)] for t in texts]
            for variants, y in zip(made, labels):
                out_t.extend(variants)
                out_y.extend([int(y)] * len(variants))
        return out_t, out_y


def _one(aug, text: str, tries: int = 5) -> str:
    """One perturbed copy; a draw that happens to give the text back (two swaps that undo each other)
    is drawn again, a few times, since an unchanged copy only duplicates a support example."""
    for _ in range(tries):
        got = aug.augment(text) if text.strip() else []
        if got and got[0] != text:
            return got[0]
    return text
