"""Evaluation metrics that work offline.

`evaluate.load("accuracy")` fetches the metric script from the Hub, so it fails without a network.
metalora ships its metrics as local `evaluate` scripts in `metalora/metrics_modules/` (one file per
metric, listed in setup.cfg's package_data) and loads them by path: `evaluate.load(<file>)` copies
the script into the modules cache (`$HF_HOME/modules/evaluate_modules/metrics/<name>/<hash>/`) and
imports it from there, which needs no network. If that cache cannot be written (a read-only
`HF_HOME`), the script is imported straight from the package instead; the metric is the same
`evaluate.EvaluationModule` either way.

    METRIC_NAMES            the metrics this module knows
    load_metric(name)       a fresh evaluate module (`.compute(...)`, `.add_batch(...)`)
    compute_metrics(...)    {name: float} from label ids and probability rows
    default_metrics(task)   the metrics reported for a task type
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from metalora.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

METRIC_NAMES = ("accuracy", "macro_f1", "auroc", "pr_auc")

METRIC_MODULES_DIR = Path(__file__).resolve().parent / "metrics_modules"

_DEFAULT_METRICS = {
    "multiclass": ("accuracy", "macro_f1"),
    "binary": ("accuracy", "macro_f1", "auroc"),
    "rare_positive": ("pr_auc", "auroc", "macro_f1", "accuracy"),
}

# Metrics that take per-class scores instead of predicted label ids.
_SCORE_METRICS = frozenset({"auroc", "pr_auc"})
_BINARY_ONLY = frozenset({"pr_auc"})

# Instances used by compute_metrics, one per metric name and process. evaluate modules are
# stateful (add_batch), so these are never handed out; the lock keeps threads from interleaving.
_COMPUTE_CACHE: dict[str, object] = {}
_COMPUTE_LOCK = threading.Lock()


def _check_name(name: str) -> str:
    if name not in METRIC_NAMES:
        raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
    return name


def metric_module_path(name: str) -> Path:
    """The local evaluate script of metric `name` (inside the installed package)."""
    path = METRIC_MODULES_DIR / f"{_check_name(name)}.py"
    if not path.is_file():  # a broken install (package_data not shipped)
        raise ConfigError(
            f"metric {name!r}: its script {path} is missing from the metalora install; "
            "reinstall metalora (setup.cfg package_data must list metrics_modules/*.py)"
        )
    return path


def _load_direct(name: str, path: Path):
    """Import the metric script from the package and instantiate its module class (no cache dir copy)."""
    import evaluate

    module_name = f"metalora._metric_scripts.{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, evaluate.EvaluationModule)
        and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise ConfigError(f"metric script {path} must define exactly one evaluate module class")
    return classes[0](keep_in_memory=True)


def load_metric(name: str):
    """A fresh `evaluate.EvaluationModule` for metric `name`, loaded from the local script (offline).

    Each call returns a new instance (modules keep `add_batch` state, so instances are not shared);
    the script itself is copied and imported once per cache dir/process by evaluate.
    Unknown names raise ConfigError listing METRIC_NAMES.
    """
    path = metric_module_path(name)
    import evaluate

    try:
        return evaluate.load(str(path), keep_in_memory=True)
    except OSError as err:  # e.g. HF_HOME / modules cache not writable
        logger.warning("evaluate.load(%s) failed (%s); importing the metric script directly", path, err)
        return _load_direct(name, path)


def _cached_metric(name: str):
    metric = _COMPUTE_CACHE.get(name)
    if metric is None:
        metric = _COMPUTE_CACHE[name] = load_metric(name)
    return metric


def default_metrics(task_type: str) -> tuple[str, ...]:
    """The metrics reported for a task type: multiclass, binary or rare_positive."""
    try:
        return _DEFAULT_METRICS[task_type]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown task type {task_type!r}; choose from {', '.join(_DEFAULT_METRICS)}"
        ) from None


def compute_metrics(
    names: Iterable[str],
    references: Sequence[int],
    probabilities,
    num_labels: int,
) -> dict[str, float]:
    """Score probability rows against reference label ids with the named metrics.

    references: int label ids in [0, num_labels); probabilities: array-like [n, num_labels] whose
    rows sum to 1 (they are renormalised in float64). Predictions are the row argmax. Binary tasks
    (num_labels == 2) score auroc/pr_auc on the probability of label id 1; multiclass auroc is
    one-vs-rest macro over the full rows. macro_f1 averages over label ids range(num_labels),
    leaving out a label that is in neither predictions nor references. A metric that is
    undefined on this data (auroc with a single reference class, pr_auc with no positive) is NaN.
    Returns {name: float} in the order given.
    """
    if isinstance(names, str):
        names = (names,)
    names = [_check_name(n) for n in names]
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 2:
        raise ConfigError(f"num_labels must be an integer >= 2, got {num_labels!r}")
    num_labels = int(num_labels)
    for name in names:
        if name in _BINARY_ONLY and num_labels != 2:
            raise ConfigError(f"metric {name!r} is for binary tasks; this task has {num_labels} labels")

    refs = np.asarray(references)
    probs = np.asarray(probabilities, dtype=np.float64)
    if refs.ndim != 1 or len(refs) == 0:
        raise DataError(f"references must be a non-empty 1-D sequence of label ids, got shape {refs.shape}")
    if refs.dtype.kind not in "iub":
        if refs.dtype.kind == "f" and np.all(np.isfinite(refs)) and np.all(refs == np.round(refs)):
            pass
        else:
            raise DataError(f"references must be integer label ids, got dtype {refs.dtype}")
    refs = refs.astype(np.int64)
    if probs.shape != (len(refs), num_labels):
        raise DataError(
            f"probabilities must have shape [n={len(refs)}, num_labels={num_labels}], got {probs.shape}"
        )
    bad = (refs < 0) | (refs >= num_labels)
    if bad.any():
        raise DataError(
            f"reference label id {int(refs[bad][0])} is outside [0, {num_labels}) (num_labels={num_labels})"
        )
    if not np.all(np.isfinite(probs)) or (probs < 0).any():
        raise DataError("probabilities must be finite and non-negative")
    totals = probs.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise DataError("every probability row must have a positive sum")
    probs = probs / totals
    preds = probs.argmax(axis=1)
    labels = list(range(num_labels))

    results: dict[str, float] = {}
    with _COMPUTE_LOCK:
        for name in names:
            if name in results:
                continue
            metric = _cached_metric(name)
            try:
                if name == "accuracy":
                    out = metric.compute(predictions=preds, references=refs)
                elif name == "macro_f1":
                    out = metric.compute(predictions=preds, references=refs, labels=labels)
                elif num_labels == 2:  # auroc / pr_auc, binary: positive-class probability
                    out = metric.compute(prediction_scores=probs[:, 1], references=refs)
                else:  # auroc, multiclass: full probability rows
                    out = metric.compute(prediction_scores=probs, references=refs, labels=labels)
            except BaseException:
                _COMPUTE_CACHE.pop(name, None)  # never reuse an instance left mid-compute
                raise
            results[name] = float(out[name])
    return {name: results[name] for name in names}
