"""What the fitting service's worker processes run (module-level, picklable functions).

Imports only the fitting core; the per-patch pyhf entry point is
:func:`afhub.fitting.pyhf_engine.run_patch`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import multiprocessing
import signal
import sys
from typing import Any

from afhub.fitting.types import FitTask

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """In a worker process on Linux: be killed when the service that started it dies (a
    crashed service leaves no fit running). True when set."""
    if not sys.platform.startswith("linux") or multiprocessing.parent_process() is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# workers import this module before they take tasks (the scheduler's PRELOAD)
die_with_parent()


def batched_available() -> bool:
    """Whether the batched torch engine can run here (torch installed)."""
    return importlib.util.find_spec("torch") is not None


def run_batched(
    task: FitTask, threads: int | None = None, device: str = "cpu"
) -> list[tuple[dict | None, str | None]]:
    """Run every patch of ``task`` the batched engine supports, in one computation.

    Returns, per patch in order, ``(result dict, None)`` for a patch it ran and
    ``(None, reason)`` for one it does not support (the service runs those with pyhf).
    """
    from afhub.fitting.batched import BatchedEngine

    engine = BatchedEngine(device=device, num_threads=threads)
    reasons = engine.unsupported_reason(task)
    results = iter(engine.run(task))
    out: list[tuple[dict[str, Any] | None, str | None]] = []
    for reason in reasons:
        out.append((next(results).to_dict(), None) if reason is None else (None, reason))
    return out
