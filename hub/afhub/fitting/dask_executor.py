"""Run fits on a Dask cluster, each in a killable process under a wall-clock limit.

:class:`DaskExecutor` has the interface of :class:`~afhub.fitting.runner.KillablePool`
(``submit(fn, *args, wall_seconds=...) -> concurrent.futures.Future``, ``kill(future)``,
``shutdown()``, ``size``, ``cores()``), so the fitting service's scheduler runs on either.
The cluster is a :class:`distributed.LocalCluster` the executor owns (``workers`` worker
processes with one thread each), or an existing scheduler (``address``: any address
:class:`distributed.Client` accepts, e.g. a scheduler started with ``dask scheduler``), or a
Dask Gateway cluster (``gateway_url`` and ``gateway_cluster``).

Every submitted call becomes one Dask task, :func:`run_task`. On the worker it hands the call
to a fit process (``python -m afhub.fitting.child``; one per worker thread, started on first
use with the modules of ``preload`` imported, then reused) and waits for the answer under
the wall-clock limit, which starts when the ready fit process receives the call. Past the
limit the fit process is killed (SIGKILL) and the task fails with
:class:`~afhub.fitting.runner.WallClockExceeded`; ``kill(future)`` cancels a queued task and
kills the fit process of a running one (:class:`~afhub.fitting.runner.TaskKilled`). A fit
process that dies fails its task with :class:`~afhub.fitting.runner.WorkerDied`; an
exception in the fit arrives as :class:`~afhub.fitting.runner.RemoteError`, as on the local
pool. Fit processes exit by themselves when their Dask worker goes away.

The workers need this package installed (the same version as the service's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from multiprocessing.connection import Connection
from typing import Any

from afhub.fitting.runner import RemoteError, TaskKilled, WallClockExceeded, WorkerDied

log = logging.getLogger("afhub.fitting.dask")

_READY = "ready"  # what a fit process says once it has imported its modules (runner's loop)
#: how long a new fit process may take to import its modules
START_SECONDS = 300.0
#: the numerical environment of fit processes: one thread per fit, as the local pool's
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: how long a worker remembers a killed task that it never saw
_FORGET_SECONDS = 3600.0


# --------------------------------------------------------------------- on the Dask worker


class _FitProcess:
    """A ``python -m afhub.fitting.child`` process, talked to over a socket pair."""

    def __init__(self, preload: tuple[str, ...], env: dict[str, str]):
        self.signature = (preload, tuple(sorted(env.items())))
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "afhub.fitting.child", str(theirs.fileno()), *preload],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        try:
            if self.conn.poll(timeout) and self.conn.recv() == _READY:
                return
        except (EOFError, OSError):
            pass
        self.kill()
        raise WorkerDied("the fit process did not start")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()


_lock = threading.Lock()
_idle: list[_FitProcess] = []
_running: dict[str, _FitProcess] = {}
_killed: dict[str, float] = {}


def _take_process(preload: tuple[str, ...], env: dict[str, str]) -> _FitProcess:
    signature = (preload, tuple(sorted(env.items())))
    with _lock:
        for proc in list(_idle):
            _idle.remove(proc)
            if proc.signature == signature and proc.alive():
                return proc
            proc.kill()
    proc = _FitProcess(preload, env)
    proc.wait_ready(START_SECONDS)
    return proc


def warm_up(preload: tuple[str, ...], env: dict[str, str]) -> int:
    """A Dask task: start an idle fit process on this worker (its modules imported) unless
    one is there, so that the first fit does not wait for the imports. Returns its pid."""
    signature = (tuple(preload), tuple(sorted(env.items())))
    with _lock:
        for proc in _idle:
            if proc.signature == signature and proc.alive():
                return proc.process.pid
    proc = _take_process(tuple(preload), dict(env))
    with _lock:
        _idle.append(proc)
    return proc.process.pid


def _was_killed(key: str) -> bool:
    with _lock:
        return _killed.pop(key, None) is not None


def run_task(
    key: str,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
    wall_seconds: float,
    preload: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Any:
    """The Dask task: ``fn(*args, **kwargs)`` in a fit process under the wall-clock limit."""
    if _was_killed(key):
        raise TaskKilled("task was cancelled")
    proc = _take_process(tuple(preload), dict(env or {}))
    with _lock:
        _running[key] = proc
    reusable = False
    try:
        try:
            proc.conn.send_bytes(pickle.dumps((fn, args, kwargs)))
        except (OSError, pickle.PicklingError) as exc:
            raise WorkerDied(f"the task could not be handed to the fit process: {exc}") from None
        deadline = time.monotonic() + wall_seconds
        while True:
            remaining = deadline - time.monotonic()
            try:
                answered = proc.conn.poll(max(0.0, min(0.5, remaining)))
            except (EOFError, OSError):
                answered = True
            if answered:
                try:
                    ok, value = proc.conn.recv()
                except (EOFError, OSError):
                    if _was_killed(key):
                        raise TaskKilled("task was cancelled") from None
                    raise WorkerDied("the fit process ended without an answer") from None
                reusable = True
                if ok:
                    return value
                raise RemoteError(*value)
            if _was_killed(key):
                raise TaskKilled("task was cancelled")
            if time.monotonic() >= deadline:
                raise WallClockExceeded(f"wall-clock limit of {wall_seconds:g} s exceeded")
    finally:
        with _lock:
            _running.pop(key, None)
            if reusable and proc.alive():
                _idle.append(proc)
        if not reusable:
            proc.kill()
            # a fresh fit process gets ready in the background (as the local pool replaces
            # a killed worker), so that the next task does not wait for its imports
            threading.Thread(
                target=_start_idle, args=(proc.signature,), name="fit-process", daemon=True
            ).start()


def _start_idle(signature: tuple) -> None:
    preload, env = signature
    with contextlib.suppress(Exception):
        proc = _FitProcess(preload, dict(env))
        proc.wait_ready(START_SECONDS)
        with _lock:
            _idle.append(proc)


def kill_tasks(keys: list[str]) -> int:
    """On a worker: kill the fit processes running ``keys`` and refuse those tasks later.
    Returns how many were running here."""
    now = time.monotonic()
    killed = 0
    with _lock:
        for key, at in list(_killed.items()):
            if now - at > _FORGET_SECONDS:
                del _killed[key]
        for key in keys:
            _killed[key] = now
            proc = _running.get(key)
            if proc is not None:
                killed += 1
                with contextlib.suppress(OSError):
                    proc.process.send_signal(signal.SIGKILL)
    return killed


def fit_processes() -> dict[str, list[int]]:
    """On a worker: process ids of its fit processes, ``running`` and ``idle``."""
    with _lock:
        return {
            "running": [p.process.pid for p in _running.values()],
            "idle": [p.process.pid for p in _idle],
        }


def stop_fit_processes() -> int:
    """On a worker: kill every fit process (idle or running). Returns how many."""
    with _lock:
        procs = list(_idle) + list(_running.values())
        _idle.clear()
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.process.send_signal(signal.SIGKILL)
    return len(procs)


# --------------------------------------------------------------------- in the service


def _translate(exc: BaseException) -> BaseException:
    """A Dask task's failure as the local pool reports it."""
    if isinstance(exc, WallClockExceeded | TaskKilled | WorkerDied | RemoteError):
        return exc
    name = type(exc).__name__
    if "Cancelled" in name or isinstance(exc, CancelledError | asyncio.CancelledError):
        return TaskKilled("task was cancelled")
    if name == "KilledWorker":
        return WorkerDied("the Dask workers running the task died")
    return RemoteError(name, str(exc)[:2000])


class DaskExecutor:
    """Fits as Dask tasks; the interface of :class:`~afhub.fitting.runner.KillablePool`."""

    kind = "dask"

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str = "",
        gateway_url: str = "",
        gateway_cluster: str = "",
        preload: tuple[str, ...] = (),
        connect_timeout: float = 60.0,
    ):
        """``workers``: processes of the cluster this executor starts and owns (1 thread
        each) when neither ``address`` nor ``gateway_cluster`` is given."""
        self.preload = tuple(preload)
        #: the fit processes' thread settings: the service's (default one thread)
        self.env = {name: os.environ.get(name) or "1" for name in THREAD_VARS}
        self._cluster: Any = None
        self._owns_cluster = False
        self.client = self._connect(workers, address, gateway_url, gateway_cluster, connect_timeout)
        if workers and self._owns_cluster:
            self.client.wait_for_workers(workers, timeout=connect_timeout)
        self._size = max(1, self.cores())
        self._lock = threading.Lock()
        self._futures: dict[Future, tuple[str, Any]] = {}
        self._closing = False
        self._kills: queue.SimpleQueue = queue.SimpleQueue()
        self._killer = threading.Thread(target=self._kill_loop, name="dask-kill", daemon=True)
        self._killer.start()
        #: one fit process started ahead on each worker (the local pool preloads too)
        self._warm = self._warm_up()

    def _connect(
        self,
        workers: int | None,
        address: str,
        gateway_url: str,
        gateway_cluster: str,
        connect_timeout: float,
    ) -> Any:
        """The Dask client of the cluster asked for: a Dask Gateway cluster, an existing
        scheduler, or a LocalCluster this executor starts and owns. Sets ``resource`` (the
        ledger's name for it) and the cluster this executor holds."""
        import distributed

        if gateway_cluster:
            from dask_gateway import Gateway
            from dask_gateway.auth import JupyterHubAuth

            gateway = Gateway(
                address=gateway_url or None,
                auth=JupyterHubAuth(api_token=os.environ.get("JUPYTERHUB_API_TOKEN")),
            )
            self._cluster = gateway.connect(gateway_cluster)
            self.resource = f"dask-gateway:{gateway_cluster}"
            return self._cluster.get_client(set_as_default=False)
        if address:
            self.resource = "dask"
            return distributed.Client(address, timeout=connect_timeout, set_as_default=False)
        if not workers or workers < 1:
            raise ValueError("workers must be >= 1")
        self._cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
        self.resource = "dask-local"
        self._owns_cluster = True
        return distributed.Client(self._cluster, set_as_default=False)

    def _warm_up(self) -> list[Any]:
        """Start one fit process ahead on each worker; the tasks that do it."""
        return [
            self.client.submit(
                warm_up,
                self.preload,
                self.env,
                workers=[address],
                allow_other_workers=False,
                pure=False,
                key=f"afhub-warm-{uuid.uuid4().hex}",
            )
            for address in self.client.nthreads()
        ]

    # ------------------------------------------------------------------ the pool's API

    @property
    def size(self) -> int:
        """Worker threads of the cluster when the executor started (one fit each)."""
        return self._size

    @property
    def scheduler_address(self) -> str:
        """The Dask scheduler's address (of the cluster the executor owns, too)."""
        return self.client.scheduler.address

    def cores(self) -> int:
        """Worker threads of the cluster now (what a fit job is charged for)."""
        return sum(self.client.nthreads().values())

    def wait_warm(self, timeout: float | None = None) -> list[int]:
        """Wait until every worker has a fit process ready; their pids."""
        return [future.result(timeout=timeout) for future in self._warm]

    def worker_pids(self) -> dict[str, int]:
        """Process id of each Dask worker (by address)."""
        return self.client.run(os.getpid)

    def submit(
        self, fn: Callable[..., Any], *args: Any, wall_seconds: float, **kwargs: Any
    ) -> Future:
        """Queue ``fn(*args, **kwargs)`` (picklable, module-level) as one Dask task."""
        if wall_seconds <= 0:
            raise ValueError("wall_seconds must be > 0")
        key = f"afhub-fit-{uuid.uuid4().hex}"
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("pool is shut down")
            task = self.client.submit(
                run_task,
                key,
                fn,
                args,
                kwargs,
                float(wall_seconds),
                self.preload,
                self.env,
                key=key,
                pure=False,
            )
            self._futures[future] = (key, task)
        task.add_done_callback(lambda done: self._settle(future, done))
        return future

    def kill(self, future: Future) -> bool:
        """Cancel a queued task or kill the fit process running it; False when done."""
        with self._lock:
            entry = self._futures.pop(future, None)
        if entry is None or future.done():
            return False
        with contextlib.suppress(InvalidStateError):
            future.set_exception(TaskKilled("task was cancelled"))
        self._kills.put(entry)
        return True

    def shutdown(self, wait: bool = True, cancel_pending: bool = True) -> None:  # noqa: ARG002
        """Kill what still runs, then close the client (and the cluster it owns). ``wait``
        and ``cancel_pending``: the local pool's signature; here shutdown always waits and
        always cancels."""
        with self._lock:
            self._closing = True
            entries = list(self._futures.items())
            self._futures.clear()
        for future, _ in entries:
            with contextlib.suppress(InvalidStateError):
                future.set_exception(TaskKilled("pool was shut down"))
        self._kills.put(None)
        try:
            keys = [key for _, (key, _) in entries]
            if keys:
                self.client.cancel([task for _, (_, task) in entries], force=True)
                self.client.run(kill_tasks, keys)
            if self._owns_cluster:
                self.client.run(stop_fit_processes)
        except Exception as exc:  # noqa: BLE001 - the cluster may be gone already: logged
            log.warning("stopping the fits on the Dask cluster: %s", exc)
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        if self._owns_cluster and self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close(timeout=30)

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ internals

    def _settle(self, future: Future, task: Any) -> None:
        with self._lock:
            self._futures.pop(future, None)
        if future.done():
            return
        try:
            value = task.result()
        except BaseException as exc:  # noqa: BLE001 - whatever the task raised is its answer
            with contextlib.suppress(InvalidStateError):
                future.set_exception(_translate(exc))
        else:
            with contextlib.suppress(InvalidStateError):
                future.set_result(value)

    def _kill_loop(self) -> None:
        while True:
            first = self._kills.get()
            entries = [first]
            while not self._kills.empty():
                entries.append(self._kills.get())
            stop = None in entries
            entries = [e for e in entries if e is not None]
            if entries:
                try:
                    # refuse (and kill) on every worker first, then drop the queued ones
                    self.client.run(kill_tasks, [key for key, _ in entries])
                    self.client.cancel([task for _, task in entries], force=True)
                except Exception as exc:  # noqa: BLE001 - logged; the loop must keep killing
                    log.warning("killing %d Dask fit tasks: %s", len(entries), exc)
            if stop:
                return
