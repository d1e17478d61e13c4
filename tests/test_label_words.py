"""Label-word scoring (metalora.label_words): exact word likelihoods, padding-side invariance, clear errors,
and the same adapt / save / load / meta-train paths as the prototype head, on tiny random decoders."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from metalora.config import AdaptConfig, BackboneConfig, EpisodeConfig, LoraSettings, MetaTrainConfig
from metalora.errors import BackboneError, ConfigError, DataError
from metalora.label_words import BIAS_KEY, WORDS_KEY, positions, start_params, template, word_ids
from metalora.model import Encoded, LoraClassifier

from conftest import NEGATIVE, POSITIVE

TEXTS = POSITIVE[:3] + NEGATIVE[:3]
DECODERS = ["tiny-gpt2", "tiny-llama"]


def _model(tiny_backbone, name: str, **cfg) -> LoraClassifier:
    return LoraClassifier(tiny_backbone(name, scoring="label_words", **cfg), LoraSettings(r=4))


def _perturbed(model: LoraClassifier) -> dict:
    params = model.lora_params()
    for k in params:
        if "lora_B" in k:
            params[k] = torch.randn_like(params[k]) * 0.5
    return params


def _left_padded(enc: Encoded, pad: int) -> Encoded:
    ids, mask = torch.full_like(enc.ids, pad), torch.zeros_like(enc.mask)
    for i in range(len(enc)):
        n = int(enc.mask[i].sum())
        ids[i, -n:], mask[i, -n:] = enc.ids[i, :n], 1
    return Encoded(ids, mask)


def _reference(model: LoraClassifier, params: dict, enc: Encoded, words: list[list[int]]) -> torch.Tensor:
    """log p(word | prompt) = sum of log-softmax over the vocabulary, one unpadded sequence at a time."""
    model.load_lora(params)
    emb = model.backbone.output_embeddings().weight
    out = torch.zeros(len(enc), len(words))
    with torch.no_grad():
        for i in range(len(enc)):
            real = enc.ids[i][enc.mask[i].bool()].tolist()
            for k, w in enumerate(words):
                seq = torch.tensor([real + w])
                h = model.peft(input_ids=seq, attention_mask=torch.ones_like(seq)).last_hidden_state[0]
                logp = torch.log_softmax(h @ emb.T, dim=-1)
                out[i, k] = sum(logp[len(real) - 1 + j, t] for j, t in enumerate(w))
    return out


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("labels", [("negative", "positive"), ("bad", "very good indeed")], ids=["one-token", "multi-token"])
def test_scores_are_the_words_log_likelihood(tiny_backbone, seed, name, labels):
    model = _model(tiny_backbone, name)
    tok = model.backbone.tokenizer
    words = word_ids(tok, template(model.backbone.config), labels)
    rows = [[t for t in r if t >= 0] for r in words.tolist()]
    assert (words.shape[1] == 1) == all(len(r) == 1 for r in rows)
    params = {**_perturbed(model), **start_params(words)}
    enc = model.encode(TEXTS)
    got = model.logits(params, enc)
    assert_close(got, _reference(model, params, enc, rows), atol=2e-5, rtol=1e-4)
    # the calibration bias adds to each class's score
    shifted = {**params, BIAS_KEY: torch.tensor([0.5, -1.0])}
    assert_close(model.logits(shifted, enc), got + torch.tensor([0.5, -1.0]))


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("scoring", ["pooled", "label_words"])
def test_left_and_right_padding_give_the_same_scores(tiny_backbone, seed, name, scoring):
    model = LoraClassifier(tiny_backbone(name, scoring=scoring), LoraSettings(r=4))
    params = _perturbed(model)
    enc = model.encode(TEXTS)
    assert enc.mask[:, -1].sum() < len(TEXTS)  # right padded, with padding to move
    left = _left_padded(enc, model.backbone.tokenizer.pad_token_id)
    assert not torch.equal(left.ids, enc.ids)
    if scoring == "pooled":
        assert_close(model.features(params, left), model.features(params, enc), atol=1e-5, rtol=1e-4)
    else:
        params.update(start_params(word_ids(model.backbone.tokenizer, template(model.backbone.config), ["no", "yes please"])))
        assert_close(model.logits(params, left), model.logits(params, enc), atol=1e-5, rtol=1e-4)


def test_positions_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def test_prompt_end_survives_truncation_and_nothing_follows_it(tiny_backbone):
    model = _model(tiny_backbone, "tiny-llama", max_length=16, prompt="Review: {text}\nSentiment:")
    tok = model.backbone.tokenizer
    ids, mask = model.tokenize([" ".join(["word"] * 100), "short"])
    assert ids.shape == (2, 16) and mask[0].all()
    cue = tok("sentiment:", add_special_tokens=False)["input_ids"]
    for i in range(2):
        real = ids[i][mask[i].bool()].tolist()
        assert real[-len(cue):] == cue  # the cue is the last token: the label word continues it
        assert real[0] == tok.cls_token_id  # leading special tokens kept, trailing ones ([SEP]) dropped


def test_word_errors_name_the_word_and_the_fix(tiny_backbone):
    tok = tiny_backbone("tiny-gpt2").tokenizer
    with pytest.raises(DataError, match=r"label word ' ' tokenises to nothing.*verbalizer"):
        word_ids(tok, "{text}\nAnswer:", ["good", " "])
    with pytest.raises(DataError, match=r"'Good' and 'good' are the same tokens"):
        word_ids(tok, "{text}\nAnswer:", ["Good", "good"])  # the tiny models' tokenizer lower-cases


def test_label_words_need_a_decoder_and_a_prompt_with_one_text_slot(tiny_backbone):
    with pytest.raises(BackboneError, match=r"scoring=label_words .* 'tiny-bert' is an encoder"):
        tiny_backbone("tiny-bert", scoring="label_words")
    with pytest.raises(ConfigError, match=r"backbone\.prompt: .* must contain `\{text\}` exactly once"):
        BackboneConfig(prompt="no slot here")
    with pytest.raises(ConfigError, match=r"backbone\.scoring: got 'words'"):
        BackboneConfig(scoring="words")
    with pytest.raises(ConfigError, match=r"meta\.head_prior: .*label_words"):
        MetaTrainConfig(backbone=BackboneConfig(name="tiny-llama", scoring="label_words"), head_prior=True)


def test_card_verbalizer_sets_the_words_and_is_checked(write_card, tiny_backbone):
    from metalora.cards import load_card
    from metalora.label_words import scenario_words
    from metalora.scenarios import get_scenario

    card = write_card(verbalizer={"positive": "great", "negative": "awful"})
    assert dict(load_card(card).verbalizer) == {"negative": "awful", "positive": "great"}
    model = _model(tiny_backbone, "tiny-gpt2")
    tok = model.backbone.tokenizer
    assert scenario_words(model, get_scenario(str(card))).tolist() == word_ids(tok, "{text}\nAnswer:", ["awful", "great"]).tolist()
    plain = write_card(folder="plain")
    assert scenario_words(model, get_scenario(str(plain))).tolist() == word_ids(tok, "{text}\nAnswer:", ["negative", "positive"]).tolist()
    partial = write_card(folder="partial", verbalizer={"positive": "great"})  # a label left out is its own word
    assert scenario_words(model, get_scenario(str(partial))).tolist() == word_ids(tok, "{text}\nAnswer:", ["negative", "great"]).tolist()
    with pytest.raises(DataError, match=r"metalora\.verbalizer: names no label: postive; must map label names"):
        load_card(write_card(folder="bad", verbalizer={"postive": "great"}))
    with pytest.raises(DataError, match=r"metalora\.verbalizer: must map label names to non-empty words"):
        load_card(write_card(folder="empty", verbalizer={"positive": " "}))


def test_adapt_zero_shot_training_save_and_load(tiny_backbone, local_card, tmp_path, seed):
    from metalora import api

    cfg = AdaptConfig(backbone=BackboneConfig(name="tiny-llama", scoring="label_words"), lora=LoraSettings(r=4), steps=0)
    model = _model(tiny_backbone, "tiny-llama")
    zero = api.adapt(str(local_card), config=cfg, model=model)
    assert set(zero.params) == set(model.lora_names) | {WORDS_KEY, BIAS_KEY}  # no head was built
    assert all(torch.equal(zero.params[k], model.default_lora[k]) for k in model.lora_names)
    trained = api.adapt(str(local_card), config=AdaptConfig(**{**cfg.__dict__, "steps": 3, "lr": 1e-2}), model=model)
    assert any(not torch.equal(trained.params[k], model.default_lora[k]) for k in model.lora_names)
    assert trained.params[BIAS_KEY].abs().sum() > 0
    texts = POSITIVE[5:] + NEGATIVE[5:]
    before = trained.predict(texts)
    folder = trained.save(tmp_path / "adapter")
    assert "scored by label words" in (folder / "README.md").read_text()  # the model card says what the head is
    loaded = api.load_adapter(folder)
    assert loaded.model.backbone.config.scoring == "label_words"
    after = loaded.predict(texts)
    assert before.labels == after.labels
    assert_close(torch.tensor(after.probabilities), torch.tensor(before.probabilities), atol=1e-5, rtol=1e-4)


def test_adapt_refuses_a_mode_mismatch(tiny_backbone, seed):
    from metalora.adapt import Init, adapt

    model = _model(tiny_backbone, "tiny-gpt2")
    enc = model.encode(TEXTS)
    with pytest.raises(ConfigError, match="scoring is 'label_words' but the scenario's label words were not given"):
        adapt(model, enc, torch.tensor([1, 1, 1, 0, 0, 0]), 2, Init(lora=model.default_lora), AdaptConfig(steps=1))


@pytest.mark.parametrize("algorithm", ["fomaml", "maml", "reptile", "metasgd", "multitask"])
def test_meta_training_through_label_words(tiny_backbone, write_card, tmp_path, algorithm):
    from metalora.meta.trainer import MetaTrainer

    cards = tmp_path / "cards"
    rows = {"train": [{"review": t, "label": lab} for lab, texts in (("positive", POSITIVE), ("negative", NEGATIVE)) for t in texts]}
    for i in range(2):
        write_card(rows, folder=f"cards/s{i}", name=f"local/s{i}", verbalizer={"negative": "bad", "positive": "good"})
    cfg = MetaTrainConfig(backbone=BackboneConfig(name="tiny-llama", scoring="label_words"), lora=LoraSettings(r=4, top_layers=1),
                          algorithm=algorithm, scenarios=("local/*",), episodes=EpisodeConfig(k_shot=2, query_size=4),
                          steps=2, meta_batch=2, inner_steps=1, eval_every=0, checkpoint_every=0, log_with="none",
                          output_dir=str(tmp_path / "run"))
    model = LoraClassifier(tiny_backbone("tiny-llama", scoring="label_words"), cfg.lora)
    trainer = MetaTrainer(cfg, cards_dir=cards, model=model)
    assert not any(k.startswith("heads.") for k in trainer.meta)  # label words need no per-scenario heads
    ep = trainer.sampler.episode(0, 0)
    res = trainer.episode_grads(ep)
    assert all(torch.isfinite(g).all() for g in res.grads.values())
    assert sum(float(res.grads[k].abs().sum()) for k in model.lora_names if "lora_A" in k or "lora_B" in k) > 0
    start = {k: v.detach().clone() for k, v in trainer.lora().items()}
    result = trainer.train(resume=False)
    assert any(not torch.equal(start[k], v) for k, v in trainer.lora().items())
    from metalora.api import load_init

    loaded, init = load_init(result.init_dir)
    assert loaded.backbone.config.scoring == "label_words"


LABEL_WORD_META = """\
backbone: {name: tiny-llama, max_length: 32, scoring: label_words}
lora: {r: 4, top_layers: 1}
algorithm: fomaml
steps: 2
meta_batch: 2
inner_steps: 1
episodes: {k_shot: 2, query_size: 4}
eval_every: 0
checkpoint_every: 0
log_with: none
"""


def test_bench_zero_shot_and_meta_with_label_words(tmp_path):
    import json

    from metalora.cli import main
    from test_bench import make_arsc

    data = make_arsc(tmp_path / "arsc")
    cfg = tmp_path / "lw.yaml"
    cfg.write_text(LABEL_WORD_META)
    args = ["bench", "arsc", "--data-dir", str(data), "--targets", "tgt.t4", "--train-domains", "aa,bb", "--shots", "2",
            "--seeds", "0", "1", "--meta-config", str(cfg), "--steps", "1", "--curve-steps", "0,1", "--no-progress"]
    assert main(args + ["--methods", "zero-shot,vanilla,meta", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["methods"]["zero-shot"]["adapt"]["steps"] == 0
    zero = report["methods"]["zero-shot"]["tasks"]["arsc/tgt.t4"]
    # no step, no support set: it runs once per task, and it is vanilla's step-0 point of the curve (B = 0)
    assert len(zero["runs"]) == 1
    curve = report["methods"]["vanilla"]["curve"]
    assert curve["steps"][0] == 0 and curve["accuracy"][0] == pytest.approx(zero["accuracy"]["mean"])
    pooled = tmp_path / "pooled.yaml"
    pooled.write_text(LABEL_WORD_META.replace(", scoring: label_words", ""))
    assert main(["bench", "arsc", "--data-dir", str(data), "--targets", "tgt.t4", "--methods", "zero-shot", "--meta-config",
                 str(pooled), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
