"""Keep the allocator from holding freed cache rows: a fixed mmap threshold for glibc's malloc.

Why: meta-training caches every drawn example's prefix states as its own tensor (a few hundred KB on
a base-size encoder) and, with `cache_mb`, frees the least recently drawn ones. glibc raises its mmap
threshold each time a large mmapped block is freed (up to 32 MB), so after the first episode's
temporaries these rows come from the heap, and rows freed between live ones leave holes the process
never returns. Measured on the mpnet ARSC recipe: 6.46 GB peak resident for ~2 GB of live cache;
on the same allocation pattern without a model (`docs/results/arsc-dev-mpnet/fragmentation.py`),
1000 MiB of live rows held 6.3 GB resident, and 1.2 GB with the threshold fixed at 128 KiB, at the same
speed. A fixed threshold sends every block above it to its own mapping, returned on free.

It is process-wide, so it is set by the meta-trainer (which owns its process) and never on import; a
threshold the user chose with `MALLOC_MMAP_THRESHOLD_` is left alone, and other C libraries are a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD_BYTES = 128 * 1024  # glibc's initial (default) value, kept instead of letting it grow


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (stops its dynamic growth); True when it was set here."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
