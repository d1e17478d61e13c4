"""Adapting LoRA + head to one scenario's support set: the loop every method ends with.

The same loop serves peft's default init (vanilla), a multi-task init and a meta-learned init; only
the starting `Init` differs. That is what makes the comparison in the bench fair. The head always
starts from the support set's class prototypes (computed under the starting LoRA weights), so an
unseen label set needs nothing but its support examples.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metalora.augment.support import FeatureAugmenter
from metalora.config import AdaptConfig
from metalora.errors import ConfigError, DataError, TrainingError
from metalora.heads import HeadBank, HeadInfo
from metalora.label_words import BIAS_KEY, start_params as label_word_head
from metalora.model import HEAD_KEYS, SCALE_KEY, DEFAULT_LOGIT_SCALE, Encoded, LoraClassifier, Params, prototype_head, random_head


@dataclass
class Init:
    """Where adaptation starts: LoRA weights, a logit scale, and (Meta-SGD) per-weight learning rates."""

    lora: Params
    logit_scale: Tensor = field(default_factory=lambda: torch.tensor(DEFAULT_LOGIT_SCALE).log())
    inner_lrs: Params | None = None
    head_prior: Tensor | None = None  # meta-learned class-prior direction (MetaTrainConfig.head_prior)
    lineage: dict | None = None  # where it came from: {"path": ...} or {"repo_id": ..., "revision": ...}
    meta: dict | None = None  # metalora.json of a meta-init (algorithm, suite, recommended adapt settings)
    head_bank: HeadBank | None = None  # training scenarios' heads + the validated shrinkage (metalora.heads)
    feature_stats: object | None = None  # training-class statistics for augment calibrate (augment.calibration.FeatureStats)


def build_head(model: LoraClassifier, lora: Params, support: Encoded, labels: Tensor, num_labels: int,
               how: str = "prototype", generator: torch.Generator | None = None,
               prior: Tensor | None = None, bank: HeadBank | None = None, label_names: Sequence[str] | None = None,
               scale: float = DEFAULT_LOGIT_SCALE, extra: tuple[Tensor, Tensor] | None = None,
               ) -> tuple[Tensor, Tensor, HeadInfo]:
    """The starting head: random, or support prototypes (shrunk toward the init's head bank when it has one).

    `extra`: (features, labels) that join the support's own (augment calibrate's samples).
    """
    if how == "random":
        return (*random_head(model.backbone.hidden_size, num_labels, generator), HeadInfo("random"))
    with torch.no_grad():
        feats = torch.cat([model.features(lora, b) for b in support.batches(64)])
        labels = labels.to(feats.device)
        if extra is not None:
            feats, labels = torch.cat([feats, extra[0].to(feats)]), torch.cat([labels, extra[1].to(labels.device)])
        if bank is not None:
            return bank.build(feats, labels, num_labels, label_names, scale, prior)
        return (*prototype_head(feats, labels, num_labels, prior), HeadInfo("prototypes", "the init has no head bank"))


def adapt(
    model: LoraClassifier,
    support: Encoded,
    labels: Tensor,
    num_labels: int,
    init: Init,
    cfg: AdaptConfig,
    on_step: Callable[[int, Params], None] | None = None,
    where: str = "support set",
    label_names: Sequence[str] | None = None,
    info: dict | None = None,
    label_words: Tensor | None = None,
) -> Params:
    """Fine-tune LoRA + head on the support set for `cfg.steps` steps; returns detached params.

    With `label_words` (a label-word backbone: `metalora.label_words.scenario_words`) the head is the
    scenario's words and a calibration bias instead of prototypes; 0 steps is then the zero-shot model.

    `on_step(step, params)` is called after step 0 (before any update) and after every step, which
    is how the bench records accuracy as a function of adaptation steps. `label_names` (in label-id
    order) let a head bank find the training scenarios with the same labels; `info`, when given, is
    filled with how the head was built (`route`: bank or prototypes, and why).
    """
    if len(support) == 0:
        raise DataError(f"{where}: the support set is empty")
    if (label_words is not None) != (model.backbone.config.scoring == "label_words"):
        raise ConfigError(f"{where}: backbone.scoring is {model.backbone.config.scoring!r} but the scenario's label words were "
                          f"{'given' if label_words is not None else 'not given'}; pass label_words=scenario_words(model, scenario)")
    device = model.device
    labels = labels.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    aug = FeatureAugmenter.build(cfg, init, model, where)  # None unless cfg.augment has calibrate or mixup
    if aug is not None and label_words is not None:
        raise ConfigError(f"{where}: adapt.augment (calibrate, mixup) mixes pooled features under the prototype head; "
                          "backbone.scoring=label_words has neither: drop adapt.augment or use scoring: pooled")
    params: Params = {k: v.detach().clone().to(device).requires_grad_(True) for k, v in init.lora.items()}
    if label_words is not None:
        params.update(label_word_head(label_words, device))
        params[BIAS_KEY].requires_grad_(True)
        head_keys = [BIAS_KEY]
        how = HeadInfo("label_words", "the backbone scores label words")
    else:
        extra = aug.head_extra(model, init.lora, support, labels, num_labels) if aug else None
        weight, bias, how = build_head(model, init.lora, support, labels, num_labels, cfg.head_init, gen, init.head_prior,
                                       init.head_bank, label_names, float(init.logit_scale.exp()), extra)
        params["head.weight"] = weight.detach().clone().to(device).requires_grad_(True)
        params["head.bias"] = bias.detach().clone().to(device).requires_grad_(True)
        params[SCALE_KEY] = init.logit_scale.detach().clone().to(device).requires_grad_(True)
        head_keys = [*HEAD_KEYS, SCALE_KEY]
    if info is not None:
        info.update(how.to_dict())
    lora_keys = [k for k in params if k in init.lora]

    if cfg.optimizer == "sgd":
        lrs = init.inner_lrs
        step_fn = _sgd_stepper(params, lora_keys, head_keys, cfg, lrs)
    else:
        opt = torch.optim.AdamW(
            [{"params": [params[k] for k in lora_keys], "lr": cfg.lr},
             {"params": [params[k] for k in head_keys], "lr": cfg.head_lr}],
            weight_decay=cfg.weight_decay,
        )

        def step_fn() -> None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    if on_step:
        on_step(0, _detached(params))
    n = len(support)
    for step in range(1, cfg.steps + 1):
        if cfg.batch_size >= n:
            batch, y = support, labels
        else:
            idx = torch.randperm(n, generator=gen)[: cfg.batch_size]
            batch, y = support.select(idx), labels[idx]
        loss = aug.loss(model, params, batch, y) if aug else F.cross_entropy(model.logits(params, batch), y)
        if not torch.isfinite(loss):
            raise TrainingError(f"{where}: the loss became {loss.item()} at adaptation step {step}; lower the learning rate (lr={cfg.lr})")
        loss.backward()
        step_fn()
        if on_step:
            on_step(step, _detached(params))
    return _detached(params)


def _detached(params: Params) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


def _sgd_stepper(params: Params, lora_keys, head_keys, cfg: AdaptConfig, lrs: Params | None):
    """Plain SGD, with Meta-SGD's learned per-weight rates where the init has them."""

    def step() -> None:
        with torch.no_grad():
            for k in lora_keys + head_keys:
                p = params[k]
                if p.grad is None:
                    continue
                if lrs is not None and k in lrs:
                    lr = lrs[k].to(p.device)
                else:
                    lr = cfg.lr if k in lora_keys else cfg.head_lr
                p.sub_(lr * p.grad)
                p.grad = None

    return step


class Timer:
    """Wall time and peak memory (RSS on CPU, allocator peak on CUDA) of a block."""

    def __enter__(self) -> "Timer":
        import resource

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        import resource

        self.seconds = time.perf_counter() - self.start
        if torch.cuda.is_available():
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
