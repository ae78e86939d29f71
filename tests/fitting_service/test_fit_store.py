"""The job store and the scheduler's pieces, without a facility: limits, ownership,
restart recovery, the cache, and a scheduler run on a real worker pool."""

from __future__ import annotations

import asyncio
import json

import pytest

from afhub.fitting.plan import PRELOAD, cache_key, request_of_task
from afhub.fitting.runner import KillablePool
from afhub.fitting.validation import validate_request
from afhub.services.fitting.config import FittingService
from afhub.services.fitting.scheduler import Scheduler
from afhub.stores.errors import NotFound
from afhub.stores.facade import Stores
from afhub.stores.fitting import FitStore, TooManyJobs, new_job_id
from afhub.stores.models import FitJob
from tests.support.workspaces import tiny_workspace


@pytest.fixture
def stores(tmp_path):
    stores = Stores.open(f"sqlite:///{tmp_path / 'afhub.sqlite'}")
    stores.groups.create("users")
    for name in ("ann", "ben"):
        stores.groups.add_member("users", name)
    yield stores
    stores.close()


def _task(obs: float = 52.0, **settings):
    return validate_request(
        json.dumps({"workspace": tiny_workspace(obs=obs), "settings": settings})
    )


def _create(fits: FitStore, owner: str, task, *, per_user: int = 5, per_group: int = 10):
    return fits.create_job(
        owner=owner,
        group="users",
        operation=task.operation,
        settings=task.settings.to_dict(),
        measurement=task.measurement,
        workspace_sha256=task.workspace_sha256,
        request=request_of_task(task),
        patch_count=1,
        wall_seconds=60,
        max_per_user=per_user,
        max_per_group=per_group,
    )


def test_job_ids_are_unique_letters_and_digits():
    """An id never starts with ``-`` (``afhub fit status ID`` would read it as an option)."""
    ids = {new_job_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and i.isascii() and i.isalnum() for i in ids)


def test_limits_ownership_and_recovery(stores):
    fits = FitStore(stores.db)
    task = _task()
    first = _create(fits, "ann", task, per_user=2)
    _create(fits, "ann", task, per_user=2)
    with pytest.raises(TooManyJobs, match="limit per user is 2") as refused:
        _create(fits, "ann", task, per_user=2)
    assert refused.value.status == 429
    with pytest.raises(TooManyJobs, match="limit per group is 2"):
        _create(fits, "ben", task, per_group=2)
    assert fits.active_counts("ann", "users") == (2, 2)

    with pytest.raises(NotFound):
        fits.get(first.id, "ben")
    with pytest.raises(NotFound):
        fits.cancel(first.id, "ben")
    assert fits.get(first.id, "ann").state == "queued"
    assert fits.request_of(first.id)["workspace"] == task.workspace

    assert fits.start(first.id, None)
    assert fits.requeue_interrupted() == [first.id]
    again = fits.get(first.id)
    assert again.state == "queued"
    assert again.attempts == 1
    assert fits.cancel(first.id, "ann").state == "cancelled"
    assert not fits.start(first.id, None)  # a cancelled job never starts


def test_cache_reuses_outcomes_never_failures(stores):
    fits = FitStore(stores.db)
    task = _task()
    job = _create(fits, "ann", task)
    key = cache_key(task, 0)
    assert key == cache_key(_task(), 0) != cache_key(_task(obs=53.0), 0)
    assert key != cache_key(_task(engine="pyhf"), 0)
    fits.add_result(
        job.id, 0, patch=None, cache_key=key, status="failed", engine="pyhf", result={"x": 1}
    )
    assert fits.cached_results([key]) == {}
    other = _create(fits, "ann", task)
    fits.add_result(
        other.id, 0, patch=None, cache_key=key, status="converged", engine="pyhf", result={"x": 2}
    )
    assert not fits.add_result(
        other.id, 0, patch=None, cache_key=key, status="converged", engine="pyhf", result={}
    )
    assert fits.cached_results([key])[key].result == {"x": 2}
    assert fits.get(other.id).done_count == 1


def test_scheduler_runs_a_job_charges_it_and_serves_the_repeat_from_the_cache(stores):
    fits = FitStore(stores.db)
    config = FittingService(workers=1, max_running_jobs=2)
    task = _task(engine="pyhf")

    async def scenario():
        pool = KillablePool(1, preload=PRELOAD)
        scheduler = Scheduler(fits, stores.ledger, config, pool=pool)
        await scheduler.start()
        try:
            jobs = []
            for _ in range(2):
                job = _create(fits, "ann", task)
                scheduler.wake()
                while fits.get(job.id).state in ("queued", "running"):
                    await asyncio.sleep(0.05)
                jobs.append(fits.get(job.id))
            return jobs
        finally:
            await scheduler.stop()

    first, second = asyncio.run(scenario())
    assert first.state == second.state == "done"
    (computed,) = fits.results(first.id)
    (cached,) = fits.results(second.id)
    assert computed.status == "converged"
    assert not computed.cached
    assert cached.cached
    assert cached.result["values"] == computed.result["values"]
    charges = [i for i in stores.ledger.open_intervals()]
    assert charges == []
    assert first.ledger_interval_id is not None
    assert second.ledger_interval_id is None
    interval = stores.ledger.get(first.ledger_interval_id)
    assert interval.kind == "fit"
    assert interval.state == "closed"
    assert interval.cpu_cores == 1
    assert interval.server_name == first.id
    assert interval.group == "users"


def test_cache_lookups_name_the_owner_prefer_ones_own_and_honour_the_scope(stores):
    fits = FitStore(stores.db)
    task = _task(obs=57.0)
    key = cache_key(task, 0)
    ann = _create(fits, "ann", task)
    fits.add_result(
        ann.id, 0, patch=None, cache_key=key, status="converged", engine="pyhf", result={"x": 1}
    )
    ben = _create(fits, "ben", task)
    fits.add_result(
        ben.id, 0, patch=None, cache_key=key, status="converged", engine="pyhf", result={"x": 2}
    )
    newest = fits.cached_results([key])[key]
    assert (newest.owner, newest.group, newest.result) == ("ben", "users", {"x": 2})
    assert fits.cached_results([key], prefer_owner="ann")[key].owner == "ann"
    assert fits.cached_results([key], owner="ann")[key].result == {"x": 1}
    assert fits.cached_results([key], owner="cat") == {}
    assert fits.cached_results([key], group="atlas") == {}
    assert fits.cached_results([key], group="users")[key].owner == "ben"


def test_a_result_from_another_users_job_gets_this_jobs_own_timing():
    from afhub.fitting.plan import own_timings

    theirs = {"build": 0.5, "compute": 1.5, "total": 2.0}
    mine = own_timings(theirs, 0.01)
    assert set(mine) == set(theirs)
    assert mine["total"] == 0.01
    assert mine["build"] == pytest.approx(0.0025)
    assert mine["compute"] == pytest.approx(0.0075)
    assert own_timings(None, 0.2) == {"total": 0.2}


def test_a_fit_job_runs_on_a_registered_gpu_only_when_its_group_may_pay_for_it(stores):
    """Issue 11, finding 3, for fit jobs: the service's GPU registered as a resource open to
    ``atlas/higgs`` is not charged to ``users``."""
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students"]:
        stores.groups.create(path)
    stores.groups.add_member("atlas/higgs/students", "ann")
    stores.registry.add_provider({"name": "lab", "institution": "A Lab"})
    stores.registry.add_resource(
        {
            "name": "fit-gpu",
            "provider": "lab",
            "site": "here",
            "kind": "gpu",
            "accelerator": "NVIDIA A100",
            "count_per_node": 1,
            "cpu_per_node": 8,
            "memory_per_node": "64Gi",
            "extended_resource": "nvidia.com/gpu",
            "image": "ghcr.io/afhub/notebook-gpu:1",
            "allowed_groups": ["atlas/higgs"],
        }
    )
    fits = FitStore(stores.db)
    config = FittingService(workers=1, batched_device="cuda", gpu_resource="fit-gpu")
    signal = {"op": "replace", "path": "/channels/0/samples/0/data", "value": [4.0]}
    two = validate_request(
        json.dumps(
            {
                "workspace": tiny_workspace(obs=58.0),
                "patches": [{"name": "a", "patch": [signal]}, {"name": "b", "patch": []}],
            }
        )
    )
    batched = _task(obs=58.0, engine="batched")

    def create(group: str, task):
        job = _create(fits, "ann", task)
        with stores.db.write() as session:  # charged to ``group`` (the owner's choice)
            session.get(FitJob, job.id).group_path = group
        return fits.get(job.id)

    async def scenario():
        pool = KillablePool(1, preload=PRELOAD)
        scheduler = Scheduler(fits, stores.ledger, config, pool=pool, registry=stores.registry)
        try:
            jobs = [
                create("users", batched),
                create("users", two),
                create("atlas/higgs/students", batched),
            ]
            for job in jobs:
                await scheduler._run(job)  # the scheduler's loop, one job at a time
            return [fits.get(job.id) for job in jobs]
        finally:
            await scheduler.stop()

    refused, auto, payer = asyncio.run(scenario())
    # engine batched, charged to a group the GPU is not open to: refused, nothing charged
    assert refused.state == "failed"
    assert refused.ledger_interval_id is None
    assert "'fit-gpu' is open to 'atlas/higgs'" in refused.error
    assert "not to 'users'" in refused.error
    # engine auto: the patches run with pyhf on the CPU workers, never on the GPU
    assert auto.state == "done"
    for result in fits.results(auto.id):
        assert result.engine == "pyhf"
        assert "batched_fallback_reason" not in result.result.get("diagnostics", {})
    assert stores.ledger.get(auto.ledger_interval_id).gpus == 0
    # a group below atlas/higgs may pay: the job goes to the GPU (on this machine without
    # one the batched engine says so and pyhf runs instead), charged one GPU
    (result,) = fits.results(payer.id)
    assert "cuda" in result.result["diagnostics"]["batched_fallback_reason"]
    assert stores.ledger.get(payer.ledger_interval_id).gpus == 1
