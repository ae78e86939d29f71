"""Freed memory kept for the next Newton iteration (glibc's malloc), not given back and
faulted in again.

Every Newton iteration of a chunk allocates the same large tensors (the Hessians
``[B, P, P]``, the cell derivatives ``[B, C, P]``) and frees them at its end. With glibc's
defaults a block over the dynamic mmap threshold is a fresh ``mmap`` each time, and freed
memory at the top of the heap is trimmed back to the system: the next iteration faults the
same pages in again, and the kernel zeroes each of them. On sbottom RegionA (217 patches,
1,085 fits in the largest chunk) that was 0.5-1.1 s of system time in a 4 s run, about
400,000 page faults (``benchmarks/batched.py``; docs/fitting-engine.md, "Memory").

:func:`keep_freed_memory` sets two of malloc's documented tunables (``mallopt(3)``):
blocks up to ``M_MMAP_THRESHOLD`` come from the heap and ``M_TRIM_THRESHOLD`` bytes of free
heap are kept, so an iteration reuses the pages of the one before. The process then holds on
to up to that much freed memory; a fitting worker is a process of its own that fits again and
again, which is what the setting is for. Elsewhere (another C library, another system) the
call does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt(3) parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2): larger blocks are
#: always mapped afresh, so a chunk whose largest tensor stays under it reuses all its memory
MAX_REUSED_BLOCK = 32 * 1024 * 1024

_applied: int | None = None


def keep_freed_memory(keep_bytes: int) -> bool:
    """Keep up to ``keep_bytes`` of freed memory in this process for reuse; ``True`` where
    the C library took the setting. Raising the amount again later is allowed; lowering it
    is not done (another engine of the same process may need it)."""
    global _applied
    if _applied is not None and _applied >= keep_bytes:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MAX_REUSED_BLOCK)) and bool(
        mallopt(M_TRIM_THRESHOLD, min(int(keep_bytes), 2**31 - 1))
    )
    if ok:
        _applied = int(keep_bytes)
    return ok


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    # glibc's own tunables only: musl's mallopt does nothing
    if not hasattr(libc, "gnu_get_libc_version"):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn
