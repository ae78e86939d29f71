"""The scheduler on its Dask executor (a real ``distributed.LocalCluster`` of two workers):
fan-out of a patchset, identical results to the local pool, wall-clock kills, cancellation,
a restart, charging; and the batched engine's device (CUDA when there is one)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import get_task_stream

from afhub.fitting.dask_executor import DaskExecutor, fit_processes
from afhub.fitting.plan import PRELOAD, batch_chunks, request_of_task
from afhub.fitting.runner import KillablePool
from afhub.fitting.validation import validate_request
from afhub.services.fitting.config import FittingService
from afhub.services.fitting.scheduler import Scheduler
from afhub.stores.facade import Stores
from afhub.stores.fitting import FitStore
from tests.facility import PROJECT_ROOT
from tests.fitting_service.conftest import REFERENCE_PATCH
from tests.support.workspaces import tiny_workspace

pytestmark = [pytest.mark.slow]

THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
FINAL = ("done", "failed", "cancelled")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def one_thread():
    """The workers' numerical environment (one BLAS thread), as the service sets it."""
    old = {name: os.environ.get(name) for name in THREADS}
    os.environ.update(dict.fromkeys(THREADS, "1"))
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def dask_pool(request):
    request.getfixturevalue("one_thread")  # for its effect: one thread per fit
    with DaskExecutor(2, preload=PRELOAD) as pool:
        pool.wait_warm(timeout=300)
        yield pool
        procs = pool.client.run(fit_processes)
    # closing the cluster the executor owns leaves no fit process running
    pids = [pid for p in procs.values() for pid in p["running"] + p["idle"]]
    assert pids
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "fit processes outlived their cluster"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def local_pool(request):
    request.getfixturevalue("one_thread")  # for its effect: one thread per fit
    with KillablePool(2, preload=PRELOAD) as pool:
        yield pool


def open_stores(path: Path) -> Stores:
    stores = Stores.open(f"sqlite:///{path}")
    stores.groups.create("users")
    stores.groups.add_member("users", "ann")
    return stores


@pytest.fixture
def stores(tmp_path):
    stores = open_stores(tmp_path / "afhub.sqlite")
    yield stores
    stores.close()


def tiny_task(count: int, **settings):
    patches = [
        {
            "name": f"obs{obs}",
            "patch": [{"op": "replace", "path": "/observations/0/data", "value": [obs]}],
        }
        for obs in range(48, 48 + count)
    ]
    body = {"workspace": tiny_workspace(), "patches": patches, "settings": settings}
    return validate_request(json.dumps(body))


def sbottom_task(sbottom, names, operation="hypotest", **settings):
    patches = [{"name": n, "patch": sbottom["patches"][n]} for n in names]
    body = {
        "workspace": sbottom["bkg"],
        "patches": patches,
        "operation": operation,
        "settings": settings,
    }
    return validate_request(json.dumps(body))


def create(fits: FitStore, task, wall_seconds: float = 120):
    return fits.create_job(
        owner="ann",
        group="users",
        operation=task.operation,
        settings=task.settings.to_dict(),
        measurement=task.measurement,
        workspace_sha256=task.workspace_sha256,
        request=request_of_task(task),
        patch_count=max(1, len(task.patches)),
        wall_seconds=wall_seconds,
        max_per_user=10,
        max_per_group=10,
    )


async def wait_final(fits: FitStore, job_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while (job := fits.get(job_id)).state not in FINAL:
        assert time.monotonic() < deadline, f"job still {job.state}"
        await asyncio.sleep(0.05)
    return job


async def idle(scheduler: Scheduler) -> None:
    """Wait until the scheduler has wound up its jobs (their charges closed)."""
    deadline = time.monotonic() + 60
    while scheduler.runs:
        assert time.monotonic() < deadline, list(scheduler.runs)
        await asyncio.sleep(0.05)


def running_fits(pool: DaskExecutor) -> list[int]:
    """Process ids of the fit processes running a task on the cluster's workers."""
    return [pid for procs in pool.client.run(fit_processes).values() for pid in procs["running"]]


def run_jobs(stores: Stores, pool, tasks, config: FittingService | None = None):
    """Run ``tasks`` as jobs on a scheduler over ``pool``; the finished jobs."""
    fits = FitStore(stores.db)
    config = config or FittingService(workers=2, max_running_jobs=4)

    async def scenario():
        scheduler = Scheduler(fits, stores.ledger, config, pool=pool)
        await scheduler.start()
        try:
            jobs = [create(fits, task) for task in tasks]
            scheduler.wake()
            done = [await wait_final(fits, job.id) for job in jobs]
            await idle(scheduler)
            return done
        finally:
            await scheduler.stop(shutdown_pool=False)

    return asyncio.run(scenario())


def outcome(stores: Stores, job_id: str) -> list[tuple]:
    """What must not depend on the executor: per patch its status, engine, numbers,
    diagnostics and provenance."""
    return [
        (
            r.index,
            r.status,
            r.engine,
            r.result["values"],
            {k: v for k, v in r.result["diagnostics"].items() if "time" not in k},
            r.result["provenance"],
        )
        for r in FitStore(stores.db).results(job_id)
    ]


def test_chunks_for_the_batched_engine():
    assert batch_chunks(list(range(7)), 2) == [[0, 1, 2, 3], [4, 5, 6]]
    assert batch_chunks([3, 9], 4) == [[3], [9]]
    assert batch_chunks(list(range(6)), 1) == [list(range(6))]


def test_a_patchset_fans_out_and_gives_what_the_local_pool_gives(
    stores, tmp_path, dask_pool, local_pool
):
    tasks = [tiny_task(4, engine="pyhf"), tiny_task(4, engine="batched")]
    with get_task_stream(client=dask_pool.client) as stream:
        on_dask = run_jobs(stores, dask_pool, tasks)
    local_stores = open_stores(tmp_path / "local.sqlite")
    try:
        on_local = run_jobs(local_stores, local_pool, tasks)
        assert [j.state for j in on_dask] == [j.state for j in on_local] == ["done", "done"]
        for dask_job, local_job in zip(on_dask, on_local, strict=True):
            got, want = outcome(stores, dask_job.id), outcome(local_stores, local_job.id)
            assert len(got) == 4, got
            assert all(r[1] == "converged" for r in got), got
            assert got == want  # same numbers, diagnostics and provenance, exactly
        pyhf_results, batched_results = (outcome(stores, j.id) for j in on_dask)
        assert {r[2] for r in pyhf_results} == {"pyhf"}
        assert {r[2] for r in batched_results} == {"batched"}
        assert {r[5]["device"] for r in batched_results} == {"cpu"}
    finally:
        local_stores.close()

    # one Dask task per patch for pyhf, one per chunk (two workers: two) for batched, on
    # both workers
    tasks_run = [t for t in stream.data if str(t["key"]).startswith("afhub-fit-")]
    assert len(tasks_run) == 4 + 2, [t["key"] for t in stream.data]
    assert len({t["worker"] for t in tasks_run}) == 2

    # charged: the Dask workers' cores while the job ran
    for job in on_dask:
        interval = stores.ledger.get(job.ledger_interval_id)
        assert interval.kind == "fit"
        assert interval.state == "closed"
        assert interval.cpu_cores == 2
        assert interval.resource == "dask-local"
        assert interval.gpus == 0
    assert stores.ledger.open_intervals() == []


def test_wall_clock_limit_and_cancellation_kill_the_fits(stores, dask_pool, sbottom):
    fits = FitStore(stores.db)
    config = FittingService(workers=2, max_running_jobs=4)
    names = sorted(sbottom["patches"])
    long_scan = {"engine": "pyhf", "scan": [0.0, 5.0, 41]}
    over_limit = sbottom_task(sbottom, [REFERENCE_PATCH], "upper_limit", **long_scan)
    to_cancel = sbottom_task(sbottom, names[:2], "upper_limit", **long_scan)

    async def scenario():
        scheduler = Scheduler(fits, stores.ledger, config, pool=dask_pool)
        await scheduler.start()
        try:
            started = time.monotonic()
            timed = create(fits, over_limit, wall_seconds=2)
            scheduler.wake()
            timed = await wait_final(fits, timed.id, timeout=60)
            took = time.monotonic() - started

            job = create(fits, to_cancel, wall_seconds=600)
            scheduler.wake()
            deadline = time.monotonic() + 180
            while len(pids := running_fits(dask_pool)) < 2:  # both workers on this job
                assert time.monotonic() < deadline, pids
                await asyncio.sleep(0.1)
            fits.cancel(job.id, "ann")
            assert scheduler.cancel(job.id)
            cancelled = await wait_final(fits, job.id)
            deadline = time.monotonic() + 20
            while any(alive(pid) for pid in pids) or any(dask_pool.client.processing().values()):
                assert time.monotonic() < deadline, "the cancelled fits still run"
                await asyncio.sleep(0.1)
            return timed, took, cancelled
        finally:
            await scheduler.stop(shutdown_pool=False)

    timed, took, cancelled = asyncio.run(scenario())
    assert timed.state == "failed"
    assert "wall-clock limit of 2 s" in timed.error
    assert took < 30
    (result,) = fits.results(timed.id)
    assert result.status == "failed"
    assert result.result["values"] == {}
    assert "wall-clock limit of 2 s exceeded" in result.result["diagnostics"]["reason"]
    assert cancelled.state == "cancelled"
    assert fits.results(cancelled.id) == []
    # the executor still works after its fits were killed
    (after,) = run_jobs(stores, dask_pool, [tiny_task(2, engine="pyhf")])
    assert after.state == "done"


def test_a_restart_loses_no_job_and_can_use_an_existing_cluster(stores, dask_pool, sbottom):
    fits = FitStore(stores.db)
    config = FittingService(workers=2, max_running_jobs=4)
    task = sbottom_task(sbottom, [REFERENCE_PATCH], engine="pyhf")

    async def first_run():
        scheduler = Scheduler(fits, stores.ledger, config, pool=dask_pool)
        await scheduler.start()
        job = create(fits, task)
        scheduler.wake()
        deadline = time.monotonic() + 180
        while not (pids := running_fits(dask_pool)):
            assert time.monotonic() < deadline, "the fit never started"
            await asyncio.sleep(0.1)
        await scheduler.stop(shutdown_pool=False)  # the service stops: its fits are killed
        return job, pids

    job, pids = asyncio.run(first_run())
    assert fits.get(job.id).state == "running"
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a fit outlived the service"
        time.sleep(0.1)

    # the next start runs the job again, here on the same cluster reached by its address
    address = dask_pool.scheduler_address
    with DaskExecutor(address=address, preload=PRELOAD) as pool:
        assert pool.resource == "dask"
        assert pool.cores() == 2

        async def second_run():
            scheduler = Scheduler(fits, stores.ledger, config, pool=pool)
            await scheduler.start()
            try:
                done = await wait_final(fits, job.id)
                await idle(scheduler)
                return done
            finally:
                await scheduler.stop(shutdown_pool=False)

        done = asyncio.run(second_run())
    assert done.state == "done"
    assert done.attempts == 2
    (result,) = fits.results(job.id)
    assert result.status == "converged"
    assert stores.ledger.open_intervals() == []
    charged = [stores.ledger.get(j) for j in [done.ledger_interval_id]]
    assert charged[0].resource == "dask"
    assert charged[0].cpu_cores == 1
    # the cluster the service does not own is still there
    assert sum(dask_pool.client.nthreads().values()) == 2


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_asking_for_cuda_without_a_gpu_stops_the_service_at_start(tmp_path):
    if _cuda_available():
        pytest.skip("a CUDA device is present")
    env = {
        **os.environ,
        "AFHUB_DB_URL": f"sqlite:///{tmp_path / 'afhub.sqlite'}",
        "AFHUB_HOME": str(tmp_path),
        "AFHUB_FIT_BATCHED_DEVICE": "cuda",
        "AFHUB_FIT_WORKERS": "1",
        "JUPYTERHUB_API_TOKEN": "unused",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:1/",
    }
    service = subprocess.run(
        [sys.executable, "-m", "afhub.services.fitting"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert service.returncode == 2, service.stderr[-2000:]
    message = service.stderr.strip().splitlines()[-1]
    assert message.startswith("afhub fitting service: FittingService.batched_device is 'cuda'")
    assert "no CUDA device" in message
    assert "AFHUB_FIT_BATCHED_DEVICE=cpu" in message
    assert "Traceback" not in service.stderr


@pytest.mark.usefixtures("one_thread")
def test_the_batched_engine_on_a_cuda_device(stores, tmp_path):
    if not _cuda_available():
        pytest.skip("no CUDA device")
    config = FittingService(workers=1, max_running_jobs=2, batched_device="cuda")
    task = tiny_task(4, engine="batched")
    with KillablePool(1, preload=PRELOAD) as pool:
        scheduler = Scheduler(FitStore(stores.db), stores.ledger, config, pool=pool)
        probe = scheduler.check_device()
        assert probe["ok"]
        assert probe["device"].startswith("cuda:")
        (on_gpu,) = run_jobs(stores, pool, [task], config)
    assert on_gpu.state == "done"
    gpu_results = outcome(stores, on_gpu.id)
    assert {r[2] for r in gpu_results} == {"batched"}
    assert {r[5]["device"] for r in gpu_results} == {probe["device"]}
    assert all(r[5]["device_name"] == probe["name"] for r in gpu_results)
    interval = stores.ledger.get(on_gpu.ledger_interval_id)
    assert interval.gpus == 1
    assert interval.resource == "local-pool+gpu"

    with KillablePool(1, preload=PRELOAD) as pool:
        cpu_config = FittingService(workers=1, max_running_jobs=2)
        cpu_stores = open_stores(tmp_path / "cpu.sqlite")
        try:
            (on_cpu,) = run_jobs(cpu_stores, pool, [task], cpu_config)
            cpu_results = outcome(cpu_stores, on_cpu.id)
        finally:
            cpu_stores.close()
    for gpu, cpu in zip(gpu_results, cpu_results, strict=True):
        assert gpu[1] == cpu[1] == "converged"
        for g, c in zip(gpu[3]["cls_obs"], cpu[3]["cls_obs"], strict=True):
            assert g == pytest.approx(c, abs=1e-8)
