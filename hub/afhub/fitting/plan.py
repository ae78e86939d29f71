"""How a fit job is planned for the workers: which engine, which cache key, which chunks, and
how a task is stored and read back. Pure functions; the scheduler
(:mod:`afhub.services.fitting.scheduler`) runs the plan.

* :data:`PRELOAD`: the modules each worker imports before it takes tasks (fitting core only,
  none with an import-time side effect).
* :func:`use_batched`: ``engine: pyhf`` never batches; ``batched`` always (where torch is
  installed); ``auto`` batches two or more patches with the default optimizer and tolerance.
* :func:`batch_chunks`: the batched engine's tasks, as many as the executor has workers (one
  on a GPU), so a job gives the same numbers on either executor with the same workers.
* :func:`cache_key`: what determines a patch's result (workspace hash, patch, operation,
  measurement, settings).
* :func:`task_from_request` / :func:`request_of_task`: a task to and from what the store keeps.
"""

from __future__ import annotations

from typing import Any, Protocol

from afhub.fitting.types import FitSettings, FitTask
from afhub.fitting.validation import canonical_sha256, parse_settings
from afhub.fitting.worker import batched_available

#: what each worker imports before taking tasks (the batched engine, torch, where installed)
PRELOAD: tuple[str, ...] = ("afhub.fitting.ladder", "afhub.fitting.worker") + (
    ("afhub.fitting.batched",) if batched_available() else ()
)


class StoredJob(Protocol):
    """What :func:`task_from_request` reads of a stored job (the store's ``JobInfo``)."""

    @property
    def operation(self) -> str: ...
    @property
    def settings(self) -> dict[str, Any]: ...
    @property
    def workspace_sha256(self) -> str: ...
    @property
    def measurement(self) -> str | None: ...


def use_batched(settings: FitSettings, count: int, available: bool) -> bool:
    """Whether ``count`` patches with these settings go to the batched engine (``available``:
    torch is installed on the workers)."""
    if settings.engine == "pyhf" or not available:
        return False
    if settings.engine == "batched":
        return True
    return count >= 2 and settings.optimizer == "scipy" and settings.tolerance is None


def batch_chunks(indices: list[int], parts: int) -> list[list[int]]:
    """``indices`` cut into ``min(parts, len(indices))`` contiguous chunks of sizes that
    differ by at most one (the batched engine's tasks)."""
    parts = max(1, min(parts, len(indices)))
    size, extra = divmod(len(indices), parts)
    chunks, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        chunks.append(indices[start:end])
        start = end
    return [c for c in chunks if c]


def cache_key(task: FitTask, index: int) -> str:
    """sha256 of what determines a patch's result: workspace hash, patch content,
    operation, measurement and settings."""
    patch = task.patches[index]["patch"] if task.patches else None
    return canonical_sha256(
        {
            "workspace_sha256": task.workspace_sha256,
            "patch": patch,
            "operation": task.operation,
            "measurement": task.measurement,
            "settings": task.settings.to_dict(),
        }
    )


def own_timings(stored: dict[str, float] | None, elapsed: float) -> dict[str, float]:
    """Timings for a result served from another user's identical request: this job's own
    time (``elapsed``) as ``total``, the stored parts scaled to it (the same keys a fresh
    result has, none of the first computation's durations)."""
    stored = {k: v for k, v in (stored or {}).items() if isinstance(v, int | float)}
    total = stored.get("total") or sum(stored.values())
    scale = elapsed / total if total > 0 else 0.0
    out = {key: value * scale for key, value in stored.items()}
    out["total"] = elapsed
    return out


def task_from_request(job: StoredJob, request: dict[str, Any]) -> FitTask:
    """The FitTask of a stored (already validated) job."""
    return FitTask(
        workspace=request["workspace"],
        patches=tuple(request.get("patches") or ()),
        operation=job.operation,
        settings=parse_settings(job.settings),
        workspace_sha256=job.workspace_sha256,
        measurement=job.measurement,
    )


def request_of_task(task: FitTask) -> dict[str, Any]:
    """What the store keeps of a validated task to run it again."""
    return {"workspace": task.workspace, "patches": list(task.patches)}
