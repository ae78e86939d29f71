"""Run fits in worker processes that can be killed, each task under a wall-clock limit.

:class:`KillablePool` keeps ``processes`` workers (``spawn`` context by default: no state
inherited from a threaded parent). ``submit`` returns a :class:`concurrent.futures.Future`
(``await pool.run(...)`` from asyncio). A task that outlives its limit has its worker killed
and replaced, and its future fails with :class:`WallClockExceeded`; ``kill(future)`` does the
same for cancellation of a running task. ``shutdown`` (or leaving the ``with`` block) stops
every worker: nothing is left running.

:func:`submit_patches` runs an engine per patch (each worker receives the workspace and its
one patch) as :class:`PatchJob` objects whose results turn those failures into
``PatchResult(status="failed")`` with a reason: the service always gets one result per patch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import itertools
import multiprocessing
import multiprocessing.connection
import pickle
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field, replace
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from typing import Any, cast

from afhub.fitting.types import FitTask, PatchResult
from afhub.fitting.worker import die_with_parent

_READY = "ready"
#: what ``multiprocessing.get_context`` returns for the names it accepts
_Context = SpawnContext | ForkContext | ForkServerContext


class WallClockExceeded(TimeoutError):
    """The task ran past its wall-clock limit; its worker process was killed."""


class WorkerDied(RuntimeError):
    """The worker process running the task ended without answering (crash, OOM kill)."""


class TaskKilled(RuntimeError):
    """The task was killed on request (cancellation of a running task)."""


class RemoteError(RuntimeError):
    """The task raised in the worker; ``type_name`` names the original exception type."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self):  # picklable (a Dask task's exception travels back pickled)
        return (RemoteError, (self.type_name, self.message))


def _worker_main(conn: multiprocessing.connection.Connection, preload: tuple[str, ...]) -> None:
    """Worker loop: arrange to die with the parent process (:func:`die_with_parent`), import
    ``preload``, say ready, then run ``(fn, args, kwargs)`` jobs and send back
    ``(ok, value)``; stop on None or when the parent goes away."""
    die_with_parent()
    for module in preload:
        # a module that fails here fails again, reported, in the task that needs it
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    conn.send(_READY)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            job = pickle.loads(raw)  # noqa: S301 - written by the parent pool, never by users
        except Exception as exc:  # noqa: BLE001 - any unpickling failure goes back as the answer
            conn.send((False, (type(exc).__name__, f"task could not be unpickled: {exc}")))
            continue
        if job is None:
            return
        fn, args, kwargs = job
        try:
            reply: tuple[bool, Any] = (True, fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - whatever the task raised is its answer
            reply = (False, (type(exc).__name__, str(exc)[:2000]))
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result is reported, not fatal
            conn.send((False, (type(exc).__name__, f"result could not be sent back: {exc}")))


@dataclass
class _Job:
    future: Future
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    wall_seconds: float


@dataclass
class _Worker:
    process: Any
    conn: multiprocessing.connection.Connection
    job: _Job | None = None
    ready: bool = False
    deadline: float = 0.0
    kill_reason: BaseException | None = field(default=None)


class KillablePool:
    """A pool of worker processes; every task has a wall-clock limit and can be killed."""

    #: the executor's kind and the ledger's resource name for what runs on it
    kind = "local"
    resource = "local-pool"

    def __init__(
        self, processes: int = 1, *, context: str = "spawn", preload: tuple[str, ...] = ()
    ):
        """``preload``: modules each worker imports before it takes tasks (the wall-clock
        limit of a task starts when a ready worker receives it)."""
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self._ctx = cast("_Context", multiprocessing.get_context(context))
        self._preload = tuple(preload)
        self._size = processes
        self._lock = threading.Lock()
        self._pending: collections.deque[_Job] = collections.deque()
        self._workers: list[_Worker] = []
        self._closing = False
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._ids = itertools.count()
        # the pool's own thread starts every worker: a worker's parent-death signal
        # (afhub.fitting.worker.die_with_parent) fires when the *thread* that started it
        # ends, so a worker started by a passing thread (an event loop's executor) would be
        # killed with that thread
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(started,), name="killable-pool", daemon=True
        )
        self._thread.start()
        started.wait()
        if len(self._workers) < processes:
            raise RuntimeError("the fitting worker processes could not be started")
        # at interpreter exit at the latest, every worker (the list is updated in place)
        self._finalizer = weakref.finalize(self, KillablePool._stop_all, self._workers)

    # ------------------------------------------------------------------ public API

    @property
    def size(self) -> int:
        """Number of worker processes."""
        return self._size

    def cores(self) -> int:
        """Cores the pool's fits use (one per worker process)."""
        return self._size

    def pids(self) -> list[int]:
        """Process ids of the current workers (they change when a worker is replaced)."""
        with self._lock:
            return [w.process.pid for w in self._workers]

    def submit(
        self, fn: Callable[..., Any], *args: Any, wall_seconds: float, **kwargs: Any
    ) -> Future:
        """Queue ``fn(*args, **kwargs)`` (picklable, module-level) with a wall-clock limit."""
        if wall_seconds <= 0:
            raise ValueError("wall_seconds must be > 0")
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("pool is shut down")
            self._pending.append(_Job(future, fn, args, kwargs, float(wall_seconds)))
        self._wake()
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, wall_seconds: float, **kwargs) -> Any:
        """``submit`` for asyncio callers: await the result."""
        return await asyncio.wrap_future(
            self.submit(fn, *args, wall_seconds=wall_seconds, **kwargs)
        )

    def kill(self, future: Future) -> bool:
        """Cancel a queued task or kill the worker running it; False when already done."""
        if future.cancel():
            return True
        with self._lock:
            for worker in self._workers:
                if worker.job is not None and worker.job.future is future:
                    worker.kill_reason = TaskKilled("task was cancelled")
                    worker.deadline = 0.0
                    self._wake()
                    return True
        return False

    def shutdown(self, wait: bool = True, cancel_pending: bool = True) -> None:
        """Stop accepting tasks, cancel queued ones (by default), stop every worker."""
        with self._lock:
            self._closing = True
            if cancel_pending:
                while self._pending:
                    self._pending.popleft().future.cancel()
        self._wake()
        if wait:
            self._thread.join()

    def __enter__(self) -> KillablePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ internals

    def _start_worker(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self._preload),
            name="afhub-fit-worker",
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process=process, conn=parent)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"x")

    @staticmethod
    def _stop_all(workers: list[_Worker]) -> None:
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(timeout=5)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()
        fresh = self._start_worker()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def _dispatch(self) -> None:
        for worker in self._workers:
            if worker.job is not None or not worker.ready:
                continue
            while self._pending:
                job = self._pending.popleft()
                if job.future.set_running_or_notify_cancel():
                    try:
                        worker.conn.send_bytes(pickle.dumps((job.fn, job.args, job.kwargs)))
                    except Exception as exc:  # noqa: BLE001 - the task's future carries it
                        job.future.set_exception(exc)
                        continue
                    worker.job = job
                    worker.deadline = time.monotonic() + job.wall_seconds
                    break

    def _finish(self, worker: _Worker) -> None:
        job = worker.job
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.job = None
            if job is not None:
                job.future.set_exception(WorkerDied("the worker process ended without an answer"))
            with self._lock:
                self._replace(worker)
            return
        if message == _READY:
            worker.ready = True
            return
        worker.job = None
        assert job is not None, "a worker answered without a task"
        ok, value = message
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(RemoteError(*value))

    def _expire(self, now: float) -> None:
        for worker in list(self._workers):
            if worker.job is not None and now >= worker.deadline:
                job = worker.job
                reason = worker.kill_reason or WallClockExceeded(
                    f"wall-clock limit of {job.wall_seconds:g} s exceeded"
                )
                worker.job = None
                self._replace(worker)
                job.future.set_exception(reason)

    def _loop(self, started: threading.Event) -> None:
        try:
            with self._lock:
                self._workers.extend(self._start_worker() for _ in range(self._size))
        finally:
            started.set()
        try:
            while True:
                with self._lock:
                    self._dispatch()
                    busy = [w for w in self._workers if w.job is not None]
                    if self._closing and not busy and not self._pending:
                        break
                    watched = [w for w in self._workers if w.job is not None or not w.ready]
                now = time.monotonic()
                timeout = min((w.deadline - now for w in busy), default=None)
                ready = multiprocessing.connection.wait(
                    [self._wake_r] + [w.conn for w in watched],
                    timeout=None if timeout is None else max(0.0, timeout),
                )
                if self._wake_r in ready:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                for worker in watched:
                    if worker.conn in ready:
                        self._finish(worker)
                with self._lock:
                    self._expire(time.monotonic())
        finally:
            self._close_workers()

    def _close_workers(self) -> None:
        with self._lock:
            self._closing = True
            while self._pending:
                self._pending.popleft().future.cancel()
            for worker in self._workers:
                if worker.job is not None:
                    worker.job.future.set_exception(TaskKilled("pool was shut down"))
                    worker.job = None
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(pickle.dumps(None))
            for worker in self._workers:
                worker.process.join(timeout=2)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join(timeout=5)
                worker.conn.close()
            self._finalizer.detach()
        self._wake_r.close()
        self._wake_w.close()


def run_with_limit(
    fn: Callable[..., Any], args: tuple = (), wall_seconds: float = 60.0, *, context: str = "spawn"
) -> Any:
    """Run ``fn(*args)`` in a fresh killable process; raise WallClockExceeded past the limit."""
    with KillablePool(1, context=context) as pool:
        return pool.submit(fn, *args, wall_seconds=wall_seconds).result()


def failed_result(task: FitTask, patch_index: int, engine: str, reason: str) -> PatchResult:
    """A ``failed`` result for a patch whose fit never answered (timeout, crash, kill)."""
    patch = task.patches[patch_index]["name"] if task.patches else None
    return PatchResult(
        patch=patch,
        engine=engine,
        status="failed",
        diagnostics={"reason": reason},
        provenance={
            "workspace_sha256": task.workspace_sha256,
            "settings": task.settings.to_dict(),
            "engine": engine,
            "patch": patch,
        },
    )


@dataclass
class PatchJob:
    """One patch of a task running in a :class:`KillablePool`.

    ``result()`` (or ``await job.wait()``) always gives a PatchResult: a timeout, a crash, a
    kill or an exception in the worker becomes ``status="failed"`` with the reason.
    """

    pool: KillablePool
    task: FitTask
    index: int
    engine: str
    future: Future

    def done(self) -> bool:
        """True once the patch has an outcome."""
        return self.future.done()

    def kill(self) -> bool:
        """Cancel the patch if queued, kill its worker if running."""
        return self.pool.kill(self.future)

    def result(self, timeout: float | None = None) -> PatchResult:
        """The PatchResult (blocks up to ``timeout`` seconds)."""
        try:
            return self.future.result(timeout=timeout)
        except CancelledError:
            return failed_result(self.task, self.index, self.engine, "cancelled")
        except (WallClockExceeded, WorkerDied, TaskKilled, RemoteError) as exc:
            return failed_result(self.task, self.index, self.engine, str(exc))

    async def wait(self) -> PatchResult:
        """``result()`` for asyncio callers."""
        try:
            await asyncio.wrap_future(self.future)
        except asyncio.CancelledError:
            if not self.future.cancelled():
                raise  # the awaiting task itself was cancelled
        except Exception:  # noqa: S110, BLE001 - turned into a failed PatchResult below
            pass
        return self.result()


def single_patch_task(task: FitTask, index: int) -> FitTask:
    """``task`` reduced to its ``index``-th patch (what one worker needs to receive)."""
    if not task.patches:
        return task
    return replace(task, patches=(task.patches[index],))


def submit_patches(
    pool: KillablePool,
    task: FitTask,
    wall_seconds: float,
    fn: Callable[[FitTask, int], PatchResult] | None = None,
    engine: str = "pyhf",
) -> list[PatchJob]:
    """Submit one job per patch (``fn(task_with_that_patch, 0)``); results in patch order."""
    if fn is None:
        from afhub.fitting.pyhf_engine import run_patch

        fn = run_patch
    jobs = []
    for index in range(max(1, len(task.patches))):
        future = pool.submit(fn, single_patch_task(task, index), 0, wall_seconds=wall_seconds)
        jobs.append(PatchJob(pool, task, index, engine, future))
    return jobs
