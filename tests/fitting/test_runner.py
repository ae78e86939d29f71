"""Worker processes: wall-clock limits, kills, crashes, and nothing left running."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from afhub.fitting.runner import (
    KillablePool,
    RemoteError,
    TaskKilled,
    WallClockExceeded,
    WorkerDied,
    run_with_limit,
    submit_patches,
)
from afhub.fitting.types import FitTask, PatchResult


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_running(futures, timeout: float = 60) -> None:
    """Wait until every future has been handed to a (ready) worker."""
    deadline = time.monotonic() + timeout
    while not all(f.running() for f in futures):
        assert time.monotonic() < deadline, "workers never became ready"
        time.sleep(0.05)


def spin_fit(_task: FitTask, _patch_index: int) -> PatchResult:
    """A fit that never ends (busy loop)."""
    while True:
        pass


def quick_fit(task: FitTask, patch_index: int) -> PatchResult:
    """A fit that answers at once, or spins for the patch named 'stuck'."""
    assert len(task.patches) == 1
    assert patch_index == 0
    if task.patches[0]["name"] == "stuck":
        spin_fit(task, patch_index)
    return PatchResult(patch=task.patches[0]["name"], engine="test", status="converged")


def small_task(names: list[str]) -> FitTask:
    workspace = {
        "version": "1.0.0",
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "s",
                        "data": [5.0, 3.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "b",
                        "data": [50.0, 52.0],
                        "modifiers": [{"name": "u", "type": "shapesys", "data": [3.0, 7.0]}],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [51.0, 48.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
    }
    patches = [
        {
            "name": n,
            "patch": [{"op": "replace", "path": "/channels/0/samples/0/data/0", "value": y}],
        }
        for n, y in zip(names, (1.0, 8.0, 4.0), strict=False)
    ]
    return FitTask(workspace=workspace, patches=tuple(patches), workspace_sha256="0" * 64)


@pytest.fixture(scope="module")
def pool():
    # this module is light (no pyhf), so replacing a killed worker is quick
    with KillablePool(2, preload=(__name__,)) as p:
        yield p
    # leaving the block stopped every worker
    assert not any(alive(pid) for pid in p.pids())


def test_results_and_remote_errors(pool):
    assert pool.submit(sum, [1, 2, 3], wall_seconds=30).result() == 6
    with pytest.raises(RemoteError, match="ValueError"):
        pool.submit(int, "x", wall_seconds=30).result()


def test_fit_that_never_ends_is_killed_at_its_limit(pool):
    before = pool.pids()
    start = time.monotonic()
    future = pool.submit(spin_fit, None, 0, wall_seconds=1.0)
    with pytest.raises(WallClockExceeded, match=r"wall-clock limit of 1 s exceeded"):
        future.result(timeout=30)
    assert time.monotonic() - start < 10
    killed = set(before) - set(pool.pids())
    assert len(killed) == 1
    assert not any(alive(pid) for pid in killed)
    # the replacement works
    assert pool.submit(os.getpid, wall_seconds=30).result() in pool.pids()


def test_crashing_worker_is_replaced(pool):
    with pytest.raises(WorkerDied):
        pool.submit(os._exit, 3, wall_seconds=30).result(timeout=30)
    assert len(pool.pids()) == 2
    assert all(alive(pid) for pid in pool.pids())
    assert pool.submit(abs, -4, wall_seconds=30).result() == 4


def test_kill_running_and_cancel_queued(pool):
    running = [pool.submit(time.sleep, 60, wall_seconds=120) for _ in range(2)]
    queued = pool.submit(time.sleep, 60, wall_seconds=120)
    wait_running(running)
    assert pool.kill(queued)
    assert queued.cancelled()
    assert all(pool.kill(f) for f in running)
    for f in running:
        with pytest.raises(TaskKilled):
            f.result(timeout=30)
    assert pool.submit(abs, -1, wall_seconds=30).result() == 1


def test_async_run(pool):
    async def main():
        return await asyncio.gather(
            pool.run(pow, 2, 10, wall_seconds=30), pool.run(abs, -3, wall_seconds=30)
        )

    assert asyncio.run(main()) == [1024, 3]


def test_submit_patches_reports_a_killed_fit_as_failed(pool):
    task = small_task(["fast", "stuck", "also-fast"])
    jobs = submit_patches(pool, task, 1.0, fn=quick_fit)
    results = [job.result(timeout=60) for job in jobs]
    assert [r.patch for r in results] == ["fast", "stuck", "also-fast"]
    assert [r.status for r in results] == ["converged", "failed", "converged"], results
    assert results[1].diagnostics["reason"] == "wall-clock limit of 1 s exceeded"
    assert results[1].values == {}
    assert results[1].provenance["workspace_sha256"] == task.workspace_sha256


def test_submit_patches_with_the_pyhf_engine_equals_in_process(pool):
    from afhub.fitting.pyhf_engine import PyhfEngine

    task = small_task(["a", "b"])

    async def gather():
        return await asyncio.gather(*(job.wait() for job in submit_patches(pool, task, 60.0)))

    remote = asyncio.run(gather())
    local = PyhfEngine().run(task)
    assert [r.status for r in remote] == ["converged", "converged"]
    for theirs, ours in zip(remote, local, strict=True):
        assert theirs.values == ours.values
        assert theirs.provenance == ours.provenance


def test_patch_job_kill(pool):
    task = small_task(["stuck", "fast"])
    stuck, fast = submit_patches(pool, task, 120.0, fn=quick_fit)
    assert fast.result(timeout=60).status == "converged"
    assert stuck.kill()
    result = stuck.result(timeout=60)
    assert result.status == "failed"
    assert result.diagnostics["reason"] == "task was cancelled"
    assert result.patch == "stuck"


def test_patch_job_wait_after_cancel_of_a_queued_patch(pool):
    blockers = [pool.submit(time.sleep, 60, wall_seconds=120) for _ in range(pool.size)]
    wait_running(blockers)
    (queued,) = submit_patches(pool, small_task(["fast"]), 30.0, fn=quick_fit)
    assert queued.kill()

    async def wait():
        return await queued.wait()

    result = asyncio.run(wait())
    assert result.status == "failed"
    assert result.diagnostics["reason"] == "cancelled"
    assert all(pool.kill(b) for b in blockers)
    for b in blockers:
        with pytest.raises(TaskKilled):
            b.result(timeout=30)


def test_run_with_limit_leaves_nothing_running(pool):
    before = _children()
    child = run_with_limit(os.getpid, (), 30)
    assert child != os.getpid()
    assert not alive(child)
    with pytest.raises(WallClockExceeded, match="wall-clock limit of 1 s"):
        run_with_limit(time.sleep, (60,), 1.0)
    assert _children() - before - set(pool.pids()) == set()


def _children() -> set[int]:
    """Live child processes of this test process, multiprocessing's resource tracker aside."""
    out = set()
    for entry in os.listdir("/proc"):
        pid = int(entry) if entry.isdigit() else 0
        mine = pid and _parent(pid) == os.getpid() and alive(pid)
        if mine and "resource_tracker" not in _cmdline(pid):
            out.add(pid)
    return out


def test_shutdown_stops_workers_and_refuses_work():
    p = KillablePool(1)
    pids = p.pids()
    pending = p.submit(time.sleep, 0.2, wall_seconds=10)
    while not pending.running():
        time.sleep(0.01)
    p.shutdown()
    assert pending.result() is None  # a running task finishes before shutdown
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="shut down"):
        p.submit(abs, 1, wall_seconds=1)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().split(")")[-1].split()[1])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""
