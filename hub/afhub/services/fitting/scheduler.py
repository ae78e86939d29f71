"""The scheduler: runs queued fit jobs on an executor of killable fit processes.

* The executor (``FittingService.executor``): ``local``, a
  :class:`~afhub.fitting.runner.KillablePool` of worker processes on this node, or
  ``dask``, a :class:`~afhub.fitting.dask_executor.DaskExecutor` (a Dask cluster the service
  owns, or an existing one). Both take one task per patch, each under the wall-clock limit
  (a fit past it is killed and reported ``failed``), and can kill a running task.
* Jobs run oldest first, at most ``max_running_jobs`` at a time; their patches share the
  executor.
* ``engine``: ``pyhf`` fits each patch with pyhf; ``batched`` runs the patches the batched
  torch engine supports in batches (as many chunks as the executor has workers, one chunk
  on a GPU) and the rest with pyhf; ``auto`` (the default) does the same for two or more
  patches with the default optimizer, and uses pyhf otherwise. Every result says which
  engine produced it. The chunking depends only on the number of workers, so a job gives
  the same numbers on either executor with the same number of workers.
* With ``batched_device: cuda`` the scheduler checks at start, on a worker, that a CUDA
  device is there (:class:`DeviceUnavailable` otherwise: the service does not start).
* Every value carries a certificate (:mod:`afhub.fitting.certificate`). A patch the batched
  engine does not certify (not converged, non-finite), and every patch left to pyhf, climbs
  the fallback ladder (:mod:`afhub.fitting.ladder`: pyhf with SciPy, then with MINUIT) in
  one worker task; ``not_converged`` is stored only when every rung failed, with each
  attempt in ``provenance["ladder"]``.
* Results are stored as they arrive. A patch whose identical request (same workspace hash,
  patch, operation, measurement, settings) already has a stored converged or not-converged
  result is served from it, without computing (among the results ``cache_scope`` allows:
  anyone's, the job's group's or the owner's own). Served from the owner's own earlier job,
  the result says ``cached: true`` with that computation's timings; served from someone
  else's, it says ``cached: false`` and carries this job's own timing, so nobody learns that
  another user ran the same request, or when, or how long it took them.
* Charging: when a job starts, a ``fit`` charge of the cores it can use (its patches to
  compute, at most the executor's worker cores) is admitted on the owner's group in the
  usage ledger (refused: the job fails with the quota's message); it is closed when the
  job ends.
* A restart loses nothing: at start, fit charges left open are closed at their last
  checkpoint, running jobs go back to the queue, and only their missing patches run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from afhub.fitting.ladder import certify_batched_result, ladder_patch, needs_ladder
from afhub.fitting.plan import (
    PRELOAD,
    batch_chunks,
    cache_key,
    own_timings,
    task_from_request,
    use_batched,
)
from afhub.fitting.pyhf_engine import safe_message
from afhub.fitting.runner import (
    KillablePool,
    PatchJob,
    RemoteError,
    TaskKilled,
    WallClockExceeded,
    WorkerDied,
    failed_result,
    single_patch_task,
)
from afhub.fitting.types import FitTask, PatchResult
from afhub.fitting.worker import batched_available, probe_device, run_batched
from afhub.quotas.limits import Charge, ChargeKind
from afhub.services.fitting.config import FittingService
from afhub.stores.errors import StoreError
from afhub.stores.fitting import DONE, FAILED, FitStore, JobInfo, StoredResult
from afhub.stores.ledger import LedgerStore
from afhub.stores.registry import RegistryStore

log = logging.getLogger("afhub.fitting")
T = TypeVar("T")


class StartError(ValueError):
    """The scheduler cannot start with these settings (the message says why)."""


class DeviceUnavailable(StartError):
    """``batched_device`` names a device the workers do not have."""


def make_executor(config: FittingService, preload: tuple[str, ...] = PRELOAD) -> Any:
    """The executor ``config`` asks for (starts its processes or its Dask cluster)."""
    if config.executor == "dask":
        from afhub.fitting.dask_executor import DaskExecutor

        return DaskExecutor(
            config.dask_workers,
            address=config.dask_address,
            gateway_url=config.dask_gateway_url,
            gateway_cluster=config.dask_gateway_cluster,
            preload=preload,
        )
    return KillablePool(config.workers, preload=preload)


@dataclass
class JobRun:
    """A job being run: what can be killed when it is cancelled."""

    job_id: str
    futures: list[Future] = field(default_factory=list)
    cancelled: bool = False
    #: the ledger interval charged while the job runs (closed when it ends)
    interval: int | None = None
    #: per patch index: the batched engine's uncertified result, the ladder's first attempt
    previous: dict[int, dict[str, Any]] = field(default_factory=dict)


class Scheduler:
    """Queue → workers → stored results; see the module docstring."""

    def __init__(
        self,
        fits: FitStore,
        ledger: LedgerStore,
        config: FittingService,
        *,
        pool: Any = None,
        registry: RegistryStore | None = None,
    ) -> None:
        """``pool``: the executor to use (a KillablePool or a DaskExecutor); default: the one
        ``config`` asks for, started by :meth:`start`. ``registry``: where
        ``gpu_resource`` is looked up."""
        self.fits = fits
        self.registry = registry
        self.ledger = ledger
        self.config = config
        self.pool = pool
        #: the device the batched engine runs on, as the workers name it (``cpu``, ``cuda:0``)
        self.device: dict[str, Any] | None = None
        self.runs: dict[str, JobRun] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._batched = batched_available()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(fn, *args, **kwargs)
        )

    # --- life cycle -------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """At start: close fit charges left open by a previous run and re-queue its jobs."""
        report = self.ledger.reconcile([], kind=ChargeKind.FIT.value)
        requeued = self.fits.requeue_interrupted()
        if requeued or report.closed or report.failed:
            log.info(
                "Recovered after a restart: re-queued jobs %s; closed charges %s, failed %s",
                requeued,
                report.closed,
                report.failed,
            )
        return requeued

    def check_device(self) -> dict[str, Any] | None:
        """With ``batched_device: cuda``: ask a worker whether it has the device; raise
        :class:`DeviceUnavailable` with the reason when it does not."""
        wanted = self.config.batched_device
        if wanted == "cpu":
            return None
        probe = self.pool.submit(probe_device, wanted, wall_seconds=300).result()
        if not probe["ok"]:
            raise DeviceUnavailable(
                f"FittingService.batched_device is {wanted!r} but the {self.pool.kind} "
                f"workers cannot use it: {probe['reason']}. Set AFHUB_FIT_BATCHED_DEVICE=cpu "
                "or run the workers where a GPU is."
            )
        log.info("batched engine on %s (%s)", probe["device"], probe["name"])
        return probe

    async def start(self) -> None:
        """Start the executor (unless one was given), check the device, recover, run."""
        if self.pool is None:
            try:
                self.pool = await self.call(make_executor, self.config)
            except Exception as exc:
                raise StartError(
                    f"could not start the {self.config.executor!r} executor: {safe_message(exc)}"
                ) from exc
        try:
            self.device = await self.call(self.check_device)
        except Exception:
            await self.call(self.pool.shutdown, False)
            raise
        await self.call(self.recover)
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self, shutdown_pool: bool = True) -> None:
        """Stop scheduling and kill running fits at once. Their jobs stay ``running`` in the
        store and are re-queued by the next start; nothing is waited for.
        ``shutdown_pool=False`` kills only this scheduler's fits and leaves the executor
        running (one shared by tests)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        for run in self.runs.values():
            run.cancelled = True  # results that still arrive are not stored
        if self.pool is None:
            return
        if shutdown_pool:
            # the local pool's daemonic workers are terminated when this process exits; a
            # Dask executor kills what runs on its cluster (and closes the cluster it owns)
            await self.call(self.pool.shutdown, False)
        else:
            for run in self.runs.values():
                for future in run.futures:
                    self.pool.kill(future)

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 5)
            self._wake.clear()
            try:
                await self._start_queued()
            except Exception:
                log.exception("scheduler round failed")

    async def _start_queued(self) -> None:
        free = self.config.max_running_jobs - len(self._tasks)
        if free <= 0:
            return
        for job in await self.call(self.fits.queued):
            if free <= 0:
                break
            if job.id in self._tasks:
                continue
            free -= 1
            self._tasks[job.id] = asyncio.create_task(self._run(job))

    def cancel(self, job_id: str) -> bool:
        """Kill the tasks of a running job (its state is already ``cancelled`` in the
        store); False if it is not running here."""
        run = self.runs.get(job_id)
        if run is None:
            return False
        run.cancelled = True
        for future in run.futures:
            self.pool.kill(future)
        return True

    # --- one job ----------------------------------------------------------------------------

    async def _run(self, job: JobInfo) -> None:
        run = self.runs[job.id] = JobRun(job.id)
        try:
            await self._execute(job, run)
        except Exception as exc:
            log.exception("fit job %s failed", job.id)
            await self.call(
                self.fits.finish, job.id, FAILED, f"internal error: {safe_message(exc)}"
            )
        finally:
            if run.interval is not None:
                try:
                    await self.call(self.ledger.close, run.interval, note=f"fit job {job.id}")
                except Exception:
                    log.exception("could not close the ledger interval of job %s", job.id)
            self.runs.pop(job.id, None)
            self._tasks.pop(job.id, None)
            self.wake()

    async def _execute(self, job: JobInfo, run: JobRun) -> None:
        """Run the job (``run.interval``: its ledger charge, closed by the caller): serve what
        the cache has, admit the charge, run the rest batched and/or with pyhf, finish."""
        task = task_from_request(job, await self.call(self.fits.request_of, job.id))
        keys = [cache_key(task, i) for i in range(max(1, len(task.patches)))]
        todo = await self._serve_cached(job, task, keys)
        batched = bool(todo) and use_batched(task.settings, len(todo), self._batched)
        gpu = batched and self.config.batched_device == "cuda"
        refusal = await self.call(self.gpu_refusal, job.group) if gpu else None
        if refusal is not None:
            if task.settings.engine == "batched":
                await self.call(self.fits.finish, job.id, FAILED, f"not admitted: {refusal}")
                return
            batched = gpu = False  # auto: pyhf on the CPU workers
        if todo and not await self._admit(job, run, len(todo), gpu):
            return
        if not await self.call(self.fits.start, job.id, run.interval):
            return  # cancelled meanwhile: closing the pending charge charges nothing
        if run.interval is not None:
            await self.call(self.ledger.mark_running, run.interval)

        pyhf_todo, fallback = list(todo), {}
        if batched and not run.cancelled:
            pyhf_todo, fallback = await self._run_batched(job, task, todo, keys, run)
        if pyhf_todo and not run.cancelled:
            await self._run_pyhf(job, task, pyhf_todo, keys, run, fallback)
        if not run.cancelled:
            await self._finish(job)

    async def _serve_cached(self, job: JobInfo, task: FitTask, keys: list[str]) -> list[int]:
        """Store the patches not done yet whose identical request has a stored result (among
        those ``cache_scope`` allows); return the indices left to compute."""
        have = await self.call(self.fits.done_indices, job.id)
        todo = [i for i in range(len(keys)) if i not in have]
        started = time.monotonic()
        if not todo:
            return todo
        scope = self.config.cache_scope
        hits = await self.call(
            functools.partial(
                self.fits.cached_results,
                [keys[i] for i in todo],
                owner=job.owner if scope == "user" else None,
                group=job.group if scope == "group" else None,
                prefer_owner=job.owner,
            )
        )
        for i in list(todo):
            hit = hits.get(keys[i])
            if hit is not None:
                await self._store_cached(job, task, i, keys[i], hit, started)
                todo.remove(i)
        return todo

    async def _store_cached(
        self, job: JobInfo, task: FitTask, i: int, key: str, hit: StoredResult, started: float
    ) -> None:
        """Store ``hit`` as patch ``i``'s result: ``cached`` with its own timings when it is
        the owner's, else with this job's timing (nobody learns of another user's run)."""
        own = hit.owner == job.owner
        result = dict(hit.result)
        if not own:
            result["timings"] = own_timings(result.get("timings"), time.monotonic() - started)
        result["patch"] = task.patches[i]["name"] if task.patches else None
        await self.call(
            self.fits.add_result,
            job.id,
            i,
            patch=result["patch"],
            cache_key=key,
            status=hit.status,
            engine=hit.engine,
            result=result,
            cached=own,
        )

    async def _admit(self, job: JobInfo, run: JobRun, count: int, gpu: bool) -> bool:
        """Admit the job's ``fit`` charge (the cores ``count`` patches can use) on the owner's
        group and keep its interval in ``run``; False, the job failed with the quota's
        message, when refused."""
        cores = float(min(await self.call(self.pool.cores), count))
        try:
            admission = await self.call(
                self.ledger.admit,
                user=job.owner,
                group=job.group,
                charge=Charge(
                    kind=ChargeKind.FIT,
                    cpu_cores=cores,
                    gpus=int(gpu),
                    resource=self.pool.resource + ("+gpu" if gpu else ""),
                ),
                server_name=job.id,
            )
        except StoreError as exc:
            await self.call(self.fits.finish, job.id, FAILED, f"not admitted: {exc}")
            return False
        run.interval = admission.interval_id
        return True

    async def _finish(self, job: JobInfo) -> None:
        """Mark the job done, or failed when every patch failed (with the first reason)."""
        results = await self.call(self.fits.results, job.id)
        failed = [r for r in results if r.status == "failed"]
        if results and len(failed) == len(results):
            reason = failed[0].result.get("diagnostics", {}).get("reason", "unknown")
            await self.call(
                self.fits.finish, job.id, FAILED, f"every patch failed; the first: {reason}"
            )
        else:
            await self.call(self.fits.finish, job.id, DONE)

    def gpu_refusal(self, group: str | None) -> str | None:
        """None when a job charged to ``group`` may run on the service's GPU, else why not:
        with ``gpu_resource`` set, the GPU is that registry resource, and only a group it is
        open to (or one below) may pay for it (:meth:`Resource.payer_refusal`)."""
        name = self.config.gpu_resource
        if not name:
            return None
        resource = None
        if self.registry is not None:
            resource = self.registry.load().resources.get(name)
        if resource is None:
            return (
                f"the fitting service's GPU is the resource {name!r}, which is not in the "
                "registry; ask the facility's operators"
            )
        return resource.payer_refusal(group or "")

    async def _store(
        self, job: JobInfo, index: int, key: str, result: PatchResult, run: JobRun
    ) -> None:
        if run.cancelled:
            return
        await self.call(
            self.fits.add_result,
            job.id,
            index,
            patch=result.patch,
            cache_key=key,
            status=result.status,
            engine=result.engine,
            result=result.to_dict(),
        )

    async def _run_batched(
        self, job: JobInfo, task: FitTask, todo: list[int], keys: list[str], run: JobRun
    ) -> tuple[list[int], dict[int, str]]:
        """Run the supported patches batched, one task per chunk (as many chunks as workers;
        one on a GPU); returns the indices left for pyhf and why."""
        gpu = self.config.batched_device != "cpu"
        chunks = batch_chunks(todo, 1 if gpu else self.pool.size)
        outcomes = await asyncio.gather(
            *(self._run_chunk(job, task, chunk, keys, run) for chunk in chunks)
        )
        left: list[int] = []
        why: dict[int, str] = {}
        for chunk_left, chunk_why in outcomes:
            left += chunk_left
            why.update(chunk_why)
        return sorted(left), why

    async def _run_chunk(
        self, job: JobInfo, task: FitTask, todo: list[int], keys: list[str], run: JobRun
    ) -> tuple[list[int], dict[int, str]]:
        sub = replace(task, patches=tuple(task.patches[i] for i in todo)) if task.patches else task
        wall = job.wall_seconds * max(1, len(todo))
        future = self.pool.submit(
            run_batched, sub, 1, self.config.batched_device, wall_seconds=wall
        )
        run.futures.append(future)
        try:
            outcome = await asyncio.wrap_future(future)
        except (WallClockExceeded, TaskKilled, WorkerDied) as exc:
            if run.cancelled:
                return [], {}
            for i in todo:
                await self._store(job, i, keys[i], failed_result(task, i, "batched", str(exc)), run)
            return [], {}
        except (RemoteError, Exception) as exc:  # noqa: BLE001 - any failure: pyhf fits them
            if run.cancelled:
                return [], {}
            reason = f"the batched engine failed ({safe_message(exc)}); fitted with pyhf"
            log.warning("job %s: %s", job.id, reason)
            return list(todo), dict.fromkeys(todo, reason)
        left, why = [], {}
        for i, (result, reason) in zip(todo, outcome, strict=True):
            if result is None:
                left.append(i)
                why[i] = reason or "not supported by the batched engine"
                continue
            patch_result = certify_batched_result(PatchResult(**result), sub)
            if needs_ladder(patch_result):
                # the ladder (pyhf with SciPy, then MINUIT) gets the patch; this attempt is
                # its first record
                run.previous[i] = patch_result.to_dict()
                left.append(i)
                why[i] = "the batched engine: " + str(patch_result.diagnostics.get("reason"))
                continue
            await self._store(job, i, keys[i], patch_result, run)
        return left, why

    async def _run_pyhf(
        self,
        job: JobInfo,
        task: FitTask,
        todo: list[int],
        keys: list[str],
        run: JobRun,
        fallback: dict[int, str],
    ) -> None:
        # at most `workers` patches of one job in the pool's queue at a time, so that the
        # patches of jobs running together interleave (a big patchset does not hold a small
        # job behind all of its patches)
        window = asyncio.Semaphore(self.pool.size)

        async def one(i: int) -> None:
            async with window:
                if run.cancelled:
                    return
                future = self.pool.submit(
                    ladder_patch,
                    single_patch_task(task, i),
                    0,
                    [run.previous[i]] if i in run.previous else None,
                    wall_seconds=job.wall_seconds,
                )
                run.futures.append(future)
                result = await PatchJob(self.pool, task, i, "pyhf", future).wait()
            if i in fallback:
                result.diagnostics["batched_fallback_reason"] = fallback[i]
            await self._store(job, i, keys[i], result, run)

        await asyncio.gather(*(one(i) for i in todo))
