"""Known, harmless side effects of dependencies, stopped by their exact text or module and nothing more.

Users read every line a command prints; a message that sounds like a failure makes them think
something broke, and a command that reaches the network when it was told nothing of the sort breaks
offline machines. Three such effects come with the dependencies metalora needs:

- bitsandbytes (imported by peft), on CPUs with AVX512-BF16, fetches a 4-bit CPU matmul kernel from
  the Hub (`kernels-community/quantization-bitsandbytes`, through the `kernels` package that
  transformers >= 5.25 installs) while it is being imported, and logs "Failed to load CPU
  gemm_4bit_forward from kernels-community: ..." when it cannot (offline, no cache, an HF_ENDPOINT
  that is not the Hub). metalora never runs 4-bit on a CPU (`load_in_4bit` falls back to float
  weights there), so that kernel is never used: while bitsandbytes' CPU backend module is imported,
  `kernels` reads as absent, so nothing is fetched, and the one record saying so is dropped.
  bitsandbytes then uses its own CPU kernel, as it does without `kernels`; `kernels` itself stays
  importable for everything else. The same kernel failing for any other reason still shows.
- transformers 5 warns "`is_gradient_checkpointing` is deprecated" (FutureWarning) each time peft
  0.21 or older wraps a model, from peft's own code (peft 0.22 asks for the new name first and no
  longer warns; setup.cfg admits both). It is dropped only while metalora itself calls peft
  (`peft_calls()`); the same warning raised by a user's own code, and every other warning, still shows.
- nevergrad 1.0's Cobyla hands scipy >= 1.16's COBYLA (pyprima) a final trust radius it rejects, and
  scipy warns "COBYLA: Invalid RHOEND ... it is set to 1e-06" on every `metalora library compose`
  (NGOpt picks Cobyla for a handful of weights). scipy repairs the value itself; the line is dropped
  only around compose's search (`optimizer_calls()`). COBYLA's other warnings (a budget below
  num_vars + 2, say) still show.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import sys
import warnings
from typing import Iterator

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_CPU_OPS_MODULE = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
# what `from kernels import get_kernel` raises: the package absent, or held off by KernelsHeldOff
KERNELS_ABSENT = ("No module named 'kernels'", "import of kernels halted")
_MISSING = object()
GRADIENT_CHECKPOINTING_MESSAGE = r"`is_gradient_checkpointing` is deprecated"
COBYLA_RHOEND_MESSAGE = r"COBYLA: Invalid RHOEND"


class MissingKernelsPackage(logging.Filter):
    """Drops bitsandbytes' CPU-kernel record when (and only when) the cause is that `kernels` is not installed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(BNB_KERNELS_MESSAGE):
            return True
        message = record.getMessage()
        return not any(cause in message for cause in KERNELS_ABSENT)


class _KernelsAbsentWhileExecuting(importlib.abc.Loader):
    """Runs the wrapped loader's module code with `kernels` unimportable, then puts `kernels` back."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        saved = sys.modules.get("kernels", _MISSING)
        sys.modules["kernels"] = None  # `from kernels import ...` raises ModuleNotFoundError
        try:
            self.loader.exec_module(module)
        finally:
            if saved is _MISSING:
                sys.modules.pop("kernels", None)
            else:
                sys.modules["kernels"] = saved

    def __getattr__(self, name):  # get_code, get_source, is_package ... from the real loader
        return getattr(self.loader, name)


class KernelsHeldOff(importlib.abc.MetaPathFinder):
    """Finds bitsandbytes' CPU backend module as usual, and imports it with `kernels` held off (no Hub fetch)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != BNB_CPU_OPS_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _KernelsAbsentWhileExecuting(spec.loader)
        return spec


def install() -> None:
    """Hold off bitsandbytes' Hub kernel and attach its filter (idempotent). Called on `import metalora`,
    before peft imports bitsandbytes; the import itself stays lazy (nothing is imported here)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, MissingKernelsPackage) for f in logger.filters):
        logger.addFilter(MissingKernelsPackage())
    if not any(isinstance(f, KernelsHeldOff) for f in sys.meta_path):
        sys.meta_path.insert(0, KernelsHeldOff())


@contextlib.contextmanager
def _dropping(message: str, category: type[Warning]) -> Iterator[None]:
    """Only inside the block: ignore warnings of `category` whose text starts with `message` (a regex)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield


def peft_calls() -> contextlib.AbstractContextManager[None]:
    """Around metalora's own calls into peft: drop transformers' is_gradient_checkpointing FutureWarning."""
    return _dropping(GRADIENT_CHECKPOINTING_MESSAGE, FutureWarning)


def optimizer_calls() -> contextlib.AbstractContextManager[None]:
    """Around compose's nevergrad search: drop scipy's repaired-RHOEND UserWarning (see the module docstring)."""
    return _dropping(COBYLA_RHOEND_MESSAGE, UserWarning)
