"""Label-word scoring: a decoder classifies by how likely its language-model head finds each label's word.

Why: a decoder already knows what "positive" and "negative" mean. Wrap a text in a prompt
("...\\nAnswer:") and score every label's verbalizer word (the card's `verbalizer`, by default the
label names) by its log-likelihood as the prompt's continuation: that is a classifier with no head at
all, so it works zero-shot, and the same scores go through the same cross-entropy in adaptation and
in every meta-learning algorithm (the init learns to make the right word likely).

In a params dict the head of a label-word scenario is its words: `head.words` (token ids [C, L],
padded with -1; not trained) and `head.bias` (a per-class calibration, trained, zero at the start).
A word of several tokens scores the SUM of its tokens' log-probabilities, each given the prompt and
the word's earlier tokens (the word's likelihood, exactly), which costs one forward pass per class;
when every word is one token, one pass over the texts serves all classes.

Padding: the last real token and every position are found from the attention mask, so left and
right padding give the same scores (positions are passed explicitly, which absolute position
embeddings such as GPT-2's need).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from metalora.errors import BackboneError, DataError

WORDS_KEY = "head.words"
BIAS_KEY = "head.bias"
DEFAULT_PROMPT = "{text}\nAnswer:"
PAD = -1


def template(cfg) -> str:
    """The prompt a backbone config wraps texts in (`{text}` marks the text)."""
    if cfg.prompt:
        return cfg.prompt
    return DEFAULT_PROMPT if cfg.scoring == "label_words" else "{text}"


# -- tokenisation ------------------------------------------------------------------------------------
def _specials(tok) -> tuple[list[int], list[int]]:
    probe = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(probe) + 1):
        if full[i:i + len(probe)] == probe:
            return full[:i], full[i + len(probe):]
    raise BackboneError(f"backbone.prompt: cannot find where {type(tok).__name__} puts its special tokens; "
                        "leave backbone.prompt empty for this backbone")


def prompt_tokenize(tok, texts: Sequence[str], prompt: str, max_length: int, truncation: str, head_tokens: int,
                    trailing_specials: bool = True) -> tuple[Tensor, Tensor]:
    """Token ids of `prompt` with each text in it; only the text is shortened, so the prompt's end (the
    cue the label word follows) always survives. Right padding. Without `trailing_specials` nothing
    comes after the prompt's last token (label-word scoring continues from it)."""
    before, _, after = prompt.partition("{text}")
    lead, trail = _specials(tok)
    trail = trail if trailing_specials else []
    pre = tok(before, add_special_tokens=False)["input_ids"] if before else []
    post = tok(after, add_special_tokens=False)["input_ids"] if after else []
    budget = max_length - len(lead) - len(trail) - len(pre) - len(post)
    if budget < 1:
        raise BackboneError(f"backbone.prompt takes {max_length - budget} of max_length={max_length} tokens and leaves none "
                            "for the text; shorten the prompt or raise max_length")
    rows = []
    for ids in tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]:
        if len(ids) > budget:
            if truncation == "head_tail":
                head = min(head_tokens, budget - 1)
                ids = ids[:head] + ids[len(ids) - (budget - head):]
            else:
                ids = ids[:budget]
        rows.append(lead + pre + ids + post + trail)
    width = max((len(r) for r in rows), default=0)
    pad = tok.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)
    return ids, mask


def word_ids(tok, prompt: str, words: Sequence[str], where: str = "verbalizer") -> Tensor:
    """Token ids [C, L] (padded with -1) of each word as it continues the prompt's end.

    A word is tokenised after the prompt's last characters (with a space unless the prompt ends in
    whitespace), so a BPE tokenizer gives the ids it would give in running text (" positive", not "positive").
    """
    _, _, after = prompt.partition("{text}")
    context = after if after else "x"
    sep = "" if context[-1:].isspace() else " "
    base = tok(context, add_special_tokens=False)["input_ids"]
    rows = []
    for word in words:
        full = tok(context + sep + str(word), add_special_tokens=False)["input_ids"]
        ids = full[len(base):] if full[:len(base)] == base else tok(sep + str(word), add_special_tokens=False)["input_ids"]
        if not ids or not str(word).strip():
            raise DataError(f"{where}: the label word {str(word)!r} tokenises to nothing; give every label a word with "
                            "letters in the card's `verbalizer` (e.g. verbalizer: {negative: bad, positive: good})")
        rows.append(ids)
    seen: dict[tuple, str] = {}
    for word, ids in zip(words, rows):
        if tuple(ids) in seen:
            raise DataError(f"{where}: the label words {seen[tuple(ids)]!r} and {word!r} are the same tokens {ids}; "
                            "give each label its own word")
        seen[tuple(ids)] = word
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long)


def scenario_words(model, scenario) -> Tensor | None:
    """The label-word head of a scenario for this classifier; None when it scores with a pooled head."""
    if model.backbone.config.scoring != "label_words":
        return None
    card = scenario.card
    table = dict(card.verbalizer or ())
    words = [table.get(name, name) for name in scenario.label_names]  # a label the verbalizer leaves out is its own word
    return word_ids(model.backbone.tokenizer, template(model.backbone.config), words,
                    where=f"scenario {scenario.name} ({card.path})")


def start_params(words: Tensor, device=None) -> dict[str, Tensor]:
    """The label-word head a scenario starts from: its words and a zero calibration bias (trainable)."""
    return {WORDS_KEY: words.to(device), BIAS_KEY: torch.zeros(words.shape[0], device=device, requires_grad=True)}


# -- scoring -----------------------------------------------------------------------------------------
def positions(mask: Tensor) -> Tensor:
    """Position ids that count real tokens only (the same for left and right padding)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def last_index(mask: Tensor) -> Tensor:
    """Index of each row's last real token, for either padding side."""
    t = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * (t + 1)).argmax(-1)


def _vocab_logprobs(model, states: Tensor) -> Tensor:
    head = model.backbone.output_embeddings()
    logits = states @ head.weight.to(states.dtype).T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias.to(states.dtype)
    return torch.log_softmax(logits.float(), dim=-1)


def label_word_logits(model, params: dict[str, Tensor], enc) -> Tensor:
    """[N, C] log-likelihood of each class's word after each example's prompt, plus the class bias."""
    from metalora.model import Encoded

    words = params[WORDS_KEY].to(model.device)
    lora = model.lora_only(params)
    ids, mask = enc.ids.to(model.device), enc.mask.to(model.device)
    n, c = ids.shape[0], words.shape[0]
    rows = torch.arange(n, device=ids.device)
    if words.shape[1] == 1:
        states = model.token_states(lora, enc)  # (from the prefix cache where the encoding has one)
        logp = _vocab_logprobs(model, states[rows, last_index(mask)])  # [N, V]
        scores = logp[:, words[:, 0]]
    else:
        # each example followed by each class's word but its last token: one pass over N x C sequences
        lengths = mask.long().sum(1)
        width = ids.shape[1] + words.shape[1] - 1
        x = torch.full((n, c, width), model.backbone.tokenizer.pad_token_id or 0, dtype=torch.long, device=ids.device)
        m = torch.zeros(n, c, width, dtype=torch.long, device=ids.device)
        wlen = (words != PAD).sum(1)
        for i in range(n):
            real = ids[i][mask[i].bool()]
            for k in range(c):
                seq = torch.cat([real, words[k, :wlen[k] - 1]])
                x[i, k, :len(seq)] = seq
                m[i, k, :len(seq)] = 1
        states = model.token_states(lora, Encoded(x.view(n * c, width), m.view(n * c, width)))
        at = (lengths - 1).view(n, 1, 1) + torch.arange(words.shape[1], device=ids.device).view(1, 1, -1)  # [N, 1, L]
        at = at.expand(n, c, -1).clamp_max(width - 1)
        picked = states.view(n, c, width, -1).gather(2, at.unsqueeze(-1).expand(-1, -1, -1, states.shape[-1]))
        logp = _vocab_logprobs(model, picked)  # [N, C, L, V]
        tgt = words.clamp_min(0).view(1, c, -1, 1).expand(n, -1, -1, 1)
        tok_lp = logp.gather(-1, tgt).squeeze(-1)  # [N, C, L]
        scores = (tok_lp * (words != PAD).view(1, c, -1)).sum(-1)
    if BIAS_KEY in params:
        scores = scores + params[BIAS_KEY].to(scores)
    return scores
