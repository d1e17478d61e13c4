"""The per-method adaptation runners of the bench (the loop that drives them is `bench.compare`).

Every LoRA method (`meta`, `vanilla`, `multitask`) runs the one `metalora.adapt.adapt` loop; only the
starting `Init` and the adaptation settings differ. `vanilla` starts from peft's default LoRA init
drawn with the run's seed (A random, B zero), so its seeds vary what they say even on a fixed support
set. `frozen-lr` is the no-fine-tuning baseline: the frozen backbone's pooled, normalised features
(LoRA B is zero in peft's default init, so the classifier under `default_lora` IS the frozen backbone)
and a logistic regression on the support set.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from metalora.adapt import Init, Timer, adapt
from metalora.config import AdaptConfig
from metalora.errors import ConfigError
from metalora.model import Encoded, LoraClassifier, Params, head_logits

KNOWN_METHODS = ("meta", "vanilla", "multitask", "zero-shot", "frozen-lr", "setfit", "select", "compose")
LORA_METHODS = ("meta", "vanilla", "multitask")
CURVE_METHODS = ("meta", "vanilla", "multitask")
LIBRARY_METHODS = ("select", "compose")  # metalora.library: chosen from / blended over an adapter library
METRICS = ("accuracy", "macro_f1")


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """`meta,vanilla` -> ['meta', 'vanilla']; unknown names are refused."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    methods = [m.strip() for m in items if m.strip()]
    if not methods:
        raise ConfigError("--methods: list at least one method, e.g. meta,vanilla,multitask,frozen-lr")
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if unknown:
        import difflib

        hints = []
        for m in unknown:
            close = difflib.get_close_matches(m, KNOWN_METHODS, n=1)
            hints.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"--methods: unknown method {', '.join(hints)}; choose from {', '.join(KNOWN_METHODS)}")
    return list(dict.fromkeys(methods))


def setfit_available() -> bool:
    try:
        import setfit  # noqa: F401
    except Exception:
        return False
    return True


def scores(names: Sequence[str], labels: Sequence[int], probs: np.ndarray, num_labels: int) -> dict[str, float]:
    from metalora.metrics import compute_metrics

    return {k: float(v) for k, v in compute_metrics(list(names), list(labels), probs, num_labels).items()}


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float((np.asarray(probs).argmax(1) == np.asarray(labels)).mean())


@dataclass
class RunResult:
    metrics: dict[str, float]
    seconds: float
    peak_mb: float
    curve: dict[int, float] = field(default_factory=dict)

    def row(self) -> dict:
        return {**self.metrics, "seconds": self.seconds, "peak_mb": self.peak_mb}


def seeded_default_lora(model: LoraClassifier, seed: int) -> Params:
    """peft's own default LoRA init (kaiming-uniform A, zero B) drawn with `seed`; the module is left as it was."""
    from peft.tuners.lora import LoraLayer

    saved = model.lora_params()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.peft.modules():
            if isinstance(module, LoraLayer):
                module.reset_lora_parameters("default", True)
    drawn = model.lora_params()
    model.load_lora(saved)
    return drawn


def run_lora(model: LoraClassifier, init: Init, cfg: AdaptConfig, support: Encoded, support_labels: Sequence[int],
             num_labels: int, test: Encoded, test_labels: Sequence[int], curve_steps: Sequence[int] = (),
             where: str = "support set", test_features: Tensor | None = None,
             label_names: Sequence[str] | None = None, label_words: Tensor | None = None) -> RunResult:
    """Adapt from `init` for `cfg.steps` steps and score on the test set.

    With `curve_steps`, the loop runs to max(cfg.steps, max(curve_steps)) and test accuracy is recorded
    at those steps. The adaptation loop has no schedule and draws batches from one seeded generator,
    so the parameters at step `cfg.steps` are the same as in a run that stops there; the reported
    seconds are measured up to that step, without the curve's evaluation time.

    `test_features` (the test set's features under `init.lora`, computed once by the caller) may be
    given when `cfg.steps == 0`: the LoRA weights do not move, so only the head differs between
    support draws and the test set need not be encoded again.
    """
    if test_features is not None and (cfg.steps != 0 or curve_steps or label_words is not None):
        raise ValueError("test_features are the init's features: only valid for a prototype head, 0 adaptation steps and no curve")
    y = torch.as_tensor(list(support_labels), dtype=torch.long)
    test_y = np.asarray(test_labels)
    curve_steps = sorted(set(int(s) for s in curve_steps))
    total = max([cfg.steps, *curve_steps])
    final: dict = {}
    curve: dict[int, float] = {}
    spent = [0.0]
    t0 = [0.0]

    def on_step(step: int, params) -> None:
        if step == cfg.steps:
            final["params"] = params
            final["seconds"] = time.perf_counter() - t0[0] - spent[0]
        if step in curve_steps:
            s = time.perf_counter()
            curve[step] = accuracy(test_y, model.predict_proba(params, test, cfg.eval_batch_size).numpy())
            spent[0] += time.perf_counter() - s

    with Timer() as timer:
        t0[0] = timer.start
        params = adapt(model, support, y, num_labels, init, replace(cfg, steps=total),
                       on_step=on_step if curve_steps else None, where=where, label_names=label_names,
                       label_words=label_words)
    if curve_steps:
        params, seconds = final["params"], final["seconds"]
    else:
        seconds = timer.seconds
    if test_features is not None:
        with torch.no_grad():
            probs = torch.softmax(head_logits(params, test_features.to(model.device)), dim=-1).cpu().numpy()
    else:
        probs = model.predict_proba(params, test, cfg.eval_batch_size).numpy()
    return RunResult(scores(METRICS, test_y, probs, num_labels), seconds, timer.peak_mb, curve)


@torch.no_grad()
def lora_features(model: LoraClassifier, lora: Params, enc: Encoded, batch_size: int = 64) -> Tensor:
    """Pooled, normalised features under the LoRA weights `lora` (an init's, for 0-step scoring)."""
    parts = [model.features(lora, b).cpu() for b in enc.batches(batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, model.backbone.hidden_size)


def frozen_features(model: LoraClassifier, enc: Encoded, batch_size: int = 64) -> np.ndarray:
    """Pooled, normalised features of the frozen backbone (peft's default LoRA has B = 0)."""
    return lora_features(model, model.default_lora, enc, batch_size).numpy()


def run_frozen_lr(model: LoraClassifier, support: Encoded, support_labels: Sequence[int], num_labels: int,
                  test_features: np.ndarray, test_labels: Sequence[int], seed: int = 0) -> RunResult:
    """Logistic regression on frozen-backbone features of the support set."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(support_labels)
    with Timer() as timer:
        feats = frozen_features(model, support)
        clf = LogisticRegression(max_iter=1000, random_state=seed)
        clf.fit(feats, y)
    probs = np.zeros((len(test_features), num_labels))
    probs[:, clf.classes_] = clf.predict_proba(test_features)
    return RunResult(scores(METRICS, test_labels, probs, num_labels), timer.seconds, timer.peak_mb)


def meta_adapt_config(base: AdaptConfig, init: Init, steps: int | None, family: str | None = None) -> AdaptConfig:
    """A meta-init's recommended adaptation (SGD at its meta-learned inner lr; for a scenario of `family`, that family's
    budget where the init chose one per family); --steps overrides the steps."""
    meta = init.meta or {}
    rec = meta.get("adapt") or {}
    if family is not None and isinstance((meta.get("adapt_by_family") or {}).get(family), dict):
        rec = {**rec, **meta["adapt_by_family"][family]}
    cfg = replace(base, optimizer=rec.get("optimizer", "sgd"), lr=float(rec.get("lr", base.lr)),
                  head_lr=float(rec.get("head_lr", rec.get("lr", base.head_lr))),
                  steps=int(rec.get("steps", base.steps)))
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    return cfg
