"""Give the system back the heap pages that freed cache rows leave behind (glibc's malloc_trim).

Why: meta-training caches every drawn example's prefix states as its own tensor (a few hundred KB on
a base-size encoder) and, with `cache_mb`, frees the least recently drawn ones. glibc raises its mmap
threshold each time a large mmapped block is freed, so after the first step's temporaries these rows
come from the heap, and rows freed between live ones leave holes that malloc keeps. Measured on the
mpnet ARSC recipe: 6.46 GB peak resident for ~2 GB of live cache. On the same allocation pattern
without a model (`docs/results/arsc-dev-mpnet/fragmentation.py`, 100 MiB of live rows), the process
grew by 336-724 MiB with glibc's defaults, by 109 MiB with the mmap threshold fixed at 128 KiB, and by
105-176 MiB with one `malloc_trim(0)` per step. The fixed threshold was rejected: every activation above
it then costs a fresh mapping, and a real mpnet meta-step took 37 s instead of 28.5 s. One trim per
outer step (seconds apart): 1,182 s against 1,163 s over 40 real mpnet steps, resident at the end
1,566 MiB against 2,975 (`docs/results/arsc-dev-mpnet/realfrag.py`); the whole mpnet recipe then peaks
at 4.80 GB instead of 6.46, with the same init.

A no-op on other C libraries (musl has no malloc_trim) and on macOS / Windows.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return free heap pages to the system; True where glibc's malloc_trim ran."""
    fn = _trim()
    if fn is None:
        return False
    fn(0)
    return True
