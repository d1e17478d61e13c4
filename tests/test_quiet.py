"""metalora.quiet drops exactly the three known, harmless messages, and nothing else."""
from __future__ import annotations

import contextlib
import logging
import warnings

import pytest

from metalora import quiet
from metalora.config import LoraSettings
from metalora.model import LoraClassifier


def _emit(logger_name: str, msg: str, *args) -> list[str]:
    """What reaches a handler when `msg % args` is logged as a warning on `logger_name`."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning(msg, *args)
    finally:
        logger.removeHandler(handler)
    return seen


def test_bitsandbytes_missing_kernels_record_is_dropped_other_failures_kept():
    import metalora  # noqa: F401 - installs the filter

    template = quiet.BNB_KERNELS_MESSAGE + ": %s. Please make sure you already `pip install kernels` and the kernels >= 0.11.1"
    assert _emit(quiet.BNB_CPU_LOGGER, template, ModuleNotFoundError("No module named 'kernels'")) == []
    kept = _emit(quiet.BNB_CPU_LOGGER, template, RuntimeError("kernel hub unreachable"))
    assert len(kept) == 1 and "kernel hub unreachable" in kept[0]
    other = _emit(quiet.BNB_CPU_LOGGER, "some other bitsandbytes warning")
    assert other == ["some other bitsandbytes warning"]
    quiet.install()  # idempotent
    assert sum(isinstance(f, quiet.MissingKernelsPackage) for f in logging.getLogger(quiet.BNB_CPU_LOGGER).filters) == 1


def test_gradient_checkpointing_future_warning_only_inside_metalora_peft_calls(tiny_backbone):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = LoraClassifier(tiny_backbone("tiny-bert"), LoraSettings(r=2))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)], [str(w.message) for w in caught]

    # the same warning from a user's own code still shows, as does any other FutureWarning
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):
        model.backbone.model.is_gradient_checkpointing
    with quiet.peft_calls(), pytest.warns(FutureWarning, match="something else"):
        warnings.warn("something else is deprecated", FutureWarning)


def _peft_reads_the_new_name() -> bool:
    """peft >= 0.22 asks for `is_activation_checkpointing` first, so transformers 5 has nothing to warn about."""
    from peft.utils import integrations

    return hasattr(integrations, "is_activation_checkpointing")


def test_the_filter_is_needed_exactly_where_peft_still_reads_the_old_name():
    """Not vacuous: with peft < 0.22 wrapping raises the warning that peft_calls() drops; with 0.22+ it does not."""
    from peft import LoraConfig, get_peft_model

    from metalora.backbones import load_backbone

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_peft_model(load_backbone("tiny-bert").model, LoraConfig(r=2, target_modules=["query"]))
    raised = [w for w in caught if issubclass(w.category, FutureWarning) and "is_gradient_checkpointing" in str(w.message)]
    if _peft_reads_the_new_name():
        assert not raised, [str(w.message) for w in raised]
    else:
        assert raised, "peft < 0.22 under transformers 5 should warn about is_gradient_checkpointing"


RECORD_GET_KERNEL = """
import kernels
calls = []
def get_kernel(repo_id, *args, **kwargs):
    calls.append(repo_id)
    raise RuntimeError("recorded, not fetched")
kernels.get_kernel = get_kernel
import logging; logging.basicConfig()
"""


def _import_in_fresh_process(code: str) -> tuple[list[str], str]:
    """Run `code` in a fresh interpreter with `kernels.get_kernel` replaced by a recorder (no network)."""
    import subprocess
    import sys

    pytest.importorskip("kernels")
    script = RECORD_GET_KERNEL + code + "\nprint(' '.join(calls))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split(), done.stderr


def test_bitsandbytes_fetches_no_hub_kernel_once_metalora_is_imported():
    """Importing peft after metalora asks `kernels` for nothing and prints nothing, and `kernels` still imports."""
    pytest.importorskip("bitsandbytes")
    calls, stderr = _import_in_fresh_process("import metalora, peft, bitsandbytes, kernels\nassert kernels.get_kernel")
    assert calls == [] and "kernels-community" not in stderr, (calls, stderr)


def test_without_metalora_bitsandbytes_does_fetch_here():
    """Not vacuous: on this CPU a bare bitsandbytes import does ask the Hub for its kernel."""
    pytest.importorskip("bitsandbytes")
    calls, stderr = _import_in_fresh_process("import bitsandbytes")
    if not calls:
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes asks for no CPU kernel here")
    assert calls == ["kernels-community/quantization-bitsandbytes"]
    assert quiet.BNB_KERNELS_MESSAGE in stderr


def _cobyla_search(around=contextlib.nullcontext) -> list[str]:
    """The warnings nevergrad's NGOpt (Cobyla, for three weights, as compose runs it) raises, `around` inside the recorder."""
    import numpy as np
    import nevergrad as ng

    param = ng.p.Array(init=np.array([1.0, 0.0, 0.0]), lower=-1.5, upper=1.5)
    param.random_state = np.random.RandomState(0)
    opt = ng.optimizers.NGOpt(parametrization=param, budget=20, num_workers=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with around():
            opt.minimize(lambda w: float(((np.asarray(w) - 0.3) ** 2).sum()))
    return [str(w.message) for w in caught]


def test_scipy_cobyla_rhoend_line_dropped_only_inside_optimizer_calls():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet.optimizer_calls():
            warnings.warn("COBYLA: Invalid RHOEND; it should be a positive number and RHOEND <= RHOBEG; it is set to 1e-06", UserWarning)
            warnings.warn("COBYLA: Invalid MAXFUN; it should be at least num_vars + 2; it is set to 6", UserWarning)
        warnings.warn("COBYLA: Invalid RHOEND; outside", UserWarning)
    assert [str(w.message) for w in caught] == [
        "COBYLA: Invalid MAXFUN; it should be at least num_vars + 2; it is set to 6", "COBYLA: Invalid RHOEND; outside"]

    # the real search: where this nevergrad + scipy pair raises the line, compose's wrapper drops it
    outside = [m for m in _cobyla_search() if "Invalid RHOEND" in m]
    inside = [m for m in _cobyla_search(quiet.optimizer_calls) if "Invalid RHOEND" in m]
    assert inside == [], inside
    if not outside:
        pytest.skip("this nevergrad + scipy pair raises no RHOEND line; only the filter itself was checked")
