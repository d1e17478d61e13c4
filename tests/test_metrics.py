"""Tests for metalora.metrics: offline evaluate modules that match scikit-learn."""
from __future__ import annotations

import configparser
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from metalora import metrics
from metalora.errors import ConfigError, DataError
from metalora.metrics import METRIC_NAMES, compute_metrics, default_metrics, load_metric

REPO_ROOT = Path(__file__).resolve().parents[1]


def _random_task(num_labels: int, n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(num_labels), size=n)
    refs = rng.integers(0, num_labels, size=n)
    refs[:num_labels] = np.arange(num_labels)  # every class present
    return refs, probs


def test_public_api_constants():
    assert METRIC_NAMES == ("accuracy", "macro_f1", "auroc", "pr_auc")
    assert default_metrics("multiclass") == ("accuracy", "macro_f1")
    assert default_metrics("binary") == ("accuracy", "macro_f1", "auroc")
    assert default_metrics("rare_positive") == ("pr_auc", "auroc", "macro_f1", "accuracy")


def test_metric_scripts_are_shipped_as_package_data():
    for name in METRIC_NAMES:
        assert (REPO_ROOT / "metalora" / "metrics_modules" / f"{name}.py").is_file()
        assert metrics.metric_module_path(name).is_file()
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    assert "metrics_modules/*.py" in cfg["options.package_data"]["metalora"]


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_values_match_sklearn(seed):
    refs, probs = _random_task(2, seed=seed)
    preds = probs.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn warning spam on ordinary data
        got = compute_metrics(METRIC_NAMES, refs.tolist(), probs.tolist(), num_labels=2)
    assert list(got) == list(METRIC_NAMES)
    assert all(type(v) is float for v in got.values())
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert got["macro_f1"] == pytest.approx(f1_score(refs, preds, labels=[0, 1], average="macro"))
    assert got["auroc"] == pytest.approx(roc_auc_score(refs, probs[:, 1]))
    assert got["pr_auc"] == pytest.approx(average_precision_score(refs, probs[:, 1]))
    # sanity: random data is not trivially perfect, so the comparisons above mean something
    assert 0.0 < got["accuracy"] < 1.0


@pytest.mark.parametrize("num_labels", [3, 5])
def test_multiclass_values_match_sklearn(num_labels):
    refs, probs = _random_task(num_labels, n=80, seed=num_labels)
    probs = probs.astype(np.float32)  # logits-softmax output is usually float32
    preds = probs.argmax(1)
    got = compute_metrics(("accuracy", "macro_f1", "auroc"), refs, probs, num_labels=num_labels)
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert got["macro_f1"] == pytest.approx(
        f1_score(refs, preds, labels=list(range(num_labels)), average="macro")
    )
    expected_auroc = roc_auc_score(
        refs, probs.astype(np.float64), multi_class="ovr", average="macro", labels=list(range(num_labels))
    )
    assert got["auroc"] == pytest.approx(expected_auroc, rel=1e-6)


def test_modules_directly_are_evaluate_compatible():
    import evaluate

    refs, probs = _random_task(2, n=40, seed=3)
    preds = probs.argmax(1)
    acc = load_metric("accuracy")
    assert isinstance(acc, evaluate.EvaluationModule)
    assert acc.name == "accuracy"
    acc.add_batch(predictions=preds[:20], references=refs[:20])
    acc.add_batch(predictions=preds[20:], references=refs[20:])
    assert acc.compute()["accuracy"] == pytest.approx(accuracy_score(refs, preds))

    auroc = load_metric("auroc")
    assert auroc.compute(prediction_scores=probs[:, 1], references=refs)["auroc"] == pytest.approx(
        roc_auc_score(refs, probs[:, 1])
    )
    # 2-column probability rows are accepted for binary auroc / pr_auc (column 1 = positive class)
    assert auroc.compute(prediction_scores=probs.tolist(), references=refs)["auroc"] == pytest.approx(
        roc_auc_score(refs, probs[:, 1])
    )
    pr = load_metric("pr_auc")
    for start in range(0, 40, 10):
        pr.add_batch(prediction_scores=probs[start : start + 10, 1], references=refs[start : start + 10])
    assert pr.compute()["pr_auc"] == pytest.approx(average_precision_score(refs, probs[:, 1]))

    # load_metric hands out a fresh instance each time (modules are stateful)
    assert load_metric("accuracy") is not load_metric("accuracy")


def test_macro_f1_label_absent_from_preds_and_refs_does_not_crash():
    # label 2 occurs in neither references nor predictions
    refs = [0, 0, 1, 1, 1]
    probs = [[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0], [0.1, 0.9, 0.0]]
    preds = np.argmax(probs, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute_metrics(("macro_f1", "accuracy"), refs, probs, num_labels=3)
    expected = f1_score(refs, preds, labels=[0, 1, 2], average="macro", zero_division=np.nan)
    assert got["macro_f1"] == pytest.approx(expected)
    assert got["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro"))  # absent label left out
    assert not math.isnan(got["macro_f1"])
    # the module itself, with labels given
    m = load_metric("macro_f1")
    assert m.compute(predictions=preds, references=refs, labels=[0, 1, 2])["macro_f1"] == pytest.approx(expected)


def test_auroc_nan_with_one_class():
    # binary, only negatives in the references
    got = compute_metrics(("auroc", "accuracy"), [0, 0, 0], [[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]], 2)
    assert math.isnan(got["auroc"])
    assert got["accuracy"] == pytest.approx(2 / 3)
    # binary, only positives
    got = compute_metrics(("auroc",), [1, 1], [[0.9, 0.1], [0.2, 0.8]], 2)
    assert math.isnan(got["auroc"])
    # multiclass, only class 2
    got = compute_metrics(("auroc",), [2, 2], [[0.1, 0.1, 0.8], [0.5, 0.2, 0.3]], 3)
    assert math.isnan(got["auroc"])
    # module directly
    assert math.isnan(load_metric("auroc").compute(prediction_scores=[0.2, 0.9], references=[1, 1])["auroc"])
    # pr_auc without a positive is undefined too
    assert math.isnan(compute_metrics(("pr_auc",), [0, 0], [[0.6, 0.4], [0.3, 0.7]], 2)["pr_auc"])


def test_multiclass_auroc_with_a_class_missing_from_references():
    # class 2 never occurs: one-vs-rest macro over the classes that do occur, not NaN, not a crash
    refs = [0, 0, 1, 1]
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.5, 0.1]])
    got = compute_metrics(("auroc",), refs, probs, 3)["auroc"]
    y = np.array(refs)
    expected = np.mean([roc_auc_score(y == k, probs[:, k]) for k in (0, 1)])
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("num_labels", [2, 4])
def test_perfect_classifier(num_labels):
    refs = np.tile(np.arange(num_labels), 5)
    probs = np.full((len(refs), num_labels), 0.1 / (num_labels - 1))
    probs[np.arange(len(refs)), refs] = 0.9
    names = ("accuracy", "macro_f1", "auroc") + (("pr_auc",) if num_labels == 2 else ())
    got = compute_metrics(names, refs, probs, num_labels)
    assert got == {name: 1.0 for name in names}


def test_unknown_metric_raises_config_error():
    with pytest.raises(ConfigError) as err:
        load_metric("f1_micro")
    msg = str(err.value)
    assert "f1_micro" in msg and all(name in msg for name in METRIC_NAMES)
    with pytest.raises(ConfigError, match="bogus"):
        compute_metrics(("accuracy", "bogus"), [0, 1], [[0.9, 0.1], [0.2, 0.8]], 2)
    with pytest.raises(ConfigError, match="regression"):
        default_metrics("regression")


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="binary"):
        compute_metrics(("pr_auc",), [0, 1, 2], np.eye(3), 3)
    with pytest.raises(DataError, match="shape"):
        compute_metrics(("accuracy",), [0, 1], [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], 2)
    with pytest.raises(DataError, match="outside"):
        compute_metrics(("accuracy",), [0, 3], [[0.9, 0.1], [0.2, 0.8]], 2)
    with pytest.raises(DataError, match="non-empty"):
        compute_metrics(("accuracy",), [], np.zeros((0, 2)), 2)
    with pytest.raises(ConfigError, match="num_labels"):
        compute_metrics(("accuracy",), [0, 0], [[1.0], [1.0]], 1)


def test_compute_metrics_caches_loaded_modules(monkeypatch):
    calls = []
    real = metrics.load_metric
    monkeypatch.setattr(metrics, "_COMPUTE_CACHE", {})
    monkeypatch.setattr(metrics, "load_metric", lambda name: calls.append(name) or real(name))
    for _ in range(3):
        compute_metrics(("accuracy", "auroc"), [0, 1], [[0.9, 0.1], [0.2, 0.8]], 2)
    assert calls == ["accuracy", "auroc"]


def test_falls_back_to_direct_import_when_evaluate_cache_unwritable(monkeypatch):
    import evaluate

    def broken_load(*args, **kwargs):
        raise PermissionError("read-only modules cache")

    monkeypatch.setattr(evaluate, "load", broken_load)
    m = load_metric("macro_f1")
    assert isinstance(m, evaluate.EvaluationModule)
    assert m.compute(predictions=[0, 1, 1], references=[0, 1, 0])["macro_f1"] == pytest.approx(
        f1_score([0, 1, 1], [0, 1, 0], average="macro")
    )


_OFFLINE_SCRIPT = r"""
import json, socket, sys

def _no_network(*args, **kwargs):
    raise OSError("network disabled in test")

socket.socket.connect = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network

from metalora.metrics import METRIC_NAMES, compute_metrics, load_metric

out = {"classes": {}}
for name in METRIC_NAMES:
    m = load_metric(name)
    out["classes"][name] = [type(m).__module__, m.name]
out["binary"] = compute_metrics(METRIC_NAMES, [0, 1, 1, 0], [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]], 2)
out["multi"] = compute_metrics(("accuracy", "macro_f1", "auroc"), [0, 1, 2], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], 3)
print(json.dumps(out))
"""


def test_loads_offline_in_fresh_cache_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_CACHE"))}
    env.update(
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["binary"] == {"accuracy": 1.0, "macro_f1": 1.0, "auroc": 1.0, "pr_auc": 1.0}
    assert out["multi"] == {"accuracy": 1.0, "macro_f1": 1.0, "auroc": 1.0}
    # loaded through evaluate.load (not the fallback), each into its own cache folder: no collisions
    cache = tmp_path / "hf" / "modules" / "evaluate_modules" / "metrics"
    for name in METRIC_NAMES:
        module_name, metric_name = out["classes"][name]
        assert metric_name == name
        assert module_name.startswith(f"evaluate_modules.metrics.{name}."), module_name
        copies = list((cache / name).glob(f"*/{name}.py"))
        assert len(copies) == 1, copies
    assert len({tuple(v) for v in out["classes"].values()}) == len(METRIC_NAMES)
