"""Known, harmless messages from dependencies, silenced by their exact text and nothing more.

Users read every line a command prints; a message that sounds like a failure makes them think
something broke. Two such messages come with the dependencies metalora needs:

- bitsandbytes (imported by peft) logs "Failed to load CPU gemm_4bit_forward from kernels-community:
  No module named 'kernels'" on CPUs with AVX512-BF16 when the optional `kernels` package is absent.
  It only means a 4-bit CPU matmul would use bitsandbytes' own kernel, and metalora never runs 4-bit
  on a CPU (`load_in_4bit` falls back to float weights there). Only that record is dropped: the same
  kernel failing for any other reason (`kernels` installed but broken) still shows.
- transformers 5 warns "`is_gradient_checkpointing` is deprecated" (FutureWarning) each time peft
  0.21 wraps a model, from peft's own code. It is dropped only while metalora itself calls peft
  (`peft_calls()`); the same warning raised by a user's own code, and every other warning, still shows.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
GRADIENT_CHECKPOINTING_MESSAGE = r"`is_gradient_checkpointing` is deprecated"


class MissingKernelsPackage(logging.Filter):
    """Drops bitsandbytes' CPU-kernel record when (and only when) the cause is that `kernels` is not installed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(BNB_KERNELS_MESSAGE):
            return True
        return "No module named 'kernels'" not in record.getMessage()


def install() -> None:
    """Attach the bitsandbytes filter (idempotent). Called on `import metalora`, before peft imports bitsandbytes."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, MissingKernelsPackage) for f in logger.filters):
        logger.addFilter(MissingKernelsPackage())


@contextlib.contextmanager
def peft_calls() -> Iterator[None]:
    """Around metalora's own calls into peft: drop transformers' is_gradient_checkpointing FutureWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=GRADIENT_CHECKPOINTING_MESSAGE, category=FutureWarning)
        yield
