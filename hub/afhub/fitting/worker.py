"""What a fit worker process runs: module-level, picklable functions (the executors send them
by reference) and the worker's one piece of process setup.

Importing this module does nothing but define them (the worker pool preloads it, see
:data:`afhub.fitting.plan.PRELOAD`); :func:`die_with_parent` is called by the worker loop
(:func:`afhub.fitting.runner._worker_main`), never at import. The per-patch pyhf entry point
is :func:`afhub.fitting.ladder.ladder_patch`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import multiprocessing
import platform
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


def batched_available() -> bool:
    """Whether the batched torch engine can run here (torch installed)."""
    return importlib.util.find_spec("torch") is not None


def probe_device(device: str) -> dict[str, Any]:
    """In a worker: whether the batched engine can run on ``device`` here.

    Returns ``{"ok": True, "device": explicit name ("cpu", "cuda:0"), "name": ...}`` or
    ``{"ok": False, "reason": ...}``.
    """
    if not batched_available():
        return {"ok": False, "reason": "torch is not installed on the workers"}
    import torch

    try:
        wanted = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        return {"ok": False, "reason": f"unknown device {device!r}: {exc}"}
    if wanted.type == "cpu":
        return {"ok": True, "device": "cpu", "name": platform.machine() or "cpu"}
    if wanted.type != "cuda":
        return {"ok": False, "reason": f"device type {wanted.type!r} is not supported"}
    if not torch.cuda.is_available():
        return {"ok": False, "reason": "no CUDA device (torch.cuda.is_available() is false)"}
    index = torch.cuda.current_device() if wanted.index is None else wanted.index
    if index >= torch.cuda.device_count():
        return {"ok": False, "reason": f"no CUDA device {index} ({torch.cuda.device_count()})"}
    return {"ok": True, "device": f"cuda:{index}", "name": torch.cuda.get_device_name(index)}


def run_batched(
    task: FitTask, threads: int | None = None, device: str = "cpu"
) -> list[tuple[dict | None, str | None]]:
    """Run every patch of ``task`` the batched engine supports, in one computation.

    Returns, per patch in order, ``(result dict, None)`` for a patch it ran and
    ``(None, reason)`` for one it does not support (the service runs those with pyhf).
    The results' provenance names the device explicitly (``cpu``, ``cuda:0``) and its model
    (``device_name``).
    """
    from afhub.fitting.batched import BatchedEngine

    probe = probe_device(device)
    if not probe["ok"]:
        raise RuntimeError(f"the batched engine cannot run on {device!r}: {probe['reason']}")
    engine = BatchedEngine(device=probe["device"], num_threads=threads)
    reasons = engine.unsupported_reason(task)
    results = iter(engine.run(task))
    out: list[tuple[dict[str, Any] | None, str | None]] = []
    for reason in reasons:
        if reason is not None:
            out.append((None, reason))
            continue
        result = next(results).to_dict()
        result["provenance"]["device"] = probe["device"]
        result["provenance"]["device_name"] = probe["name"]
        out.append((result, None))
    return out
