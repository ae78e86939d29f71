"""The pure Dask policy: option bounds from the group chain, charges, how many workers
fit the group's concurrent-core limit and budgets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from afhub.dask.policy import (
    ClusterRequest,
    DaskPolicy,
    OptionsRefused,
    core_ceiling,
    max_worker_cores_for,
    max_workers_for,
    scale_notice,
    scheduler_charge,
    validate_request,
    worker_charge,
    workers_that_fit,
)
from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import ChargeKind, Holdings, Limits, Usage

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
POLICY = DaskPolicy()


def node(path, max_dask_cores=None, held=0.0, cpu_core_hours=None, used_hours=0.0):
    return NodeState(
        path,
        Limits(max_dask_cores=max_dask_cores, cpu_core_hours=cpu_core_hours),
        Usage(cpu_core_hours=used_hours, holdings=Holdings(dask_cores=held)),
    )


def chain(students=3.0, higgs=None, held=0.0):
    return [
        node("atlas", held=held),
        node("atlas/higgs", higgs, held=held),
        node("atlas/higgs/students", students, held=held),
    ]


def request(**kw):
    values = {"group": "atlas/higgs/students", "worker_cores": 1, "worker_memory_gib": 2.0}
    values.update(kw)
    values.setdefault("max_workers", 10)
    return ClusterRequest(**values)


def test_the_lowest_limit_on_the_chain_is_the_ceiling():
    assert core_ceiling(chain(students=8, higgs=4)) == (4.0, "atlas/higgs")
    assert core_ceiling(chain(students=None)) is None
    assert max_worker_cores_for(chain(students=3), POLICY) == 2
    assert max_worker_cores_for(chain(students=None), POLICY) == POLICY.max_worker_cores
    assert max_workers_for(chain(students=7), POLICY, 2) == 3
    assert max_workers_for(chain(students=None), POLICY, 2) == POLICY.max_workers


def test_options_within_the_limits_become_cluster_config():
    validate_request(request(worker_cores=2), chain(students=3), POLICY)
    config = request(worker_cores=2, worker_memory_gib=1.5, max_workers=4).config(POLICY)
    assert config["worker_cores"] == 2
    assert config["worker_threads"] == 2
    assert config["worker_memory"] == int(1.5 * 1024**3)
    assert config["cluster_max_workers"] == 4
    assert config["scheduler_cores"] == POLICY.scheduler_cores


def test_worker_bigger_than_the_group_allows_is_refused_naming_the_group():
    with pytest.raises(OptionsRefused) as err:
        validate_request(request(worker_cores=8), chain(students=8, higgs=4), POLICY)
    message = str(err.value)
    assert "worker_cores=8" in message
    assert "'atlas/higgs'" in message
    assert "4 concurrent Dask cores" in message
    assert "worker_cores <= 3" in message


def test_group_with_no_room_for_any_worker_says_so():
    with pytest.raises(OptionsRefused, match="no worker fits"):
        validate_request(request(), chain(students=1), POLICY)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"worker_cores": 0}, "worker_cores=0"),
        ({"worker_cores": 5}, "1..4"),
        ({"worker_memory_gib": 0.0}, "worker_memory=0"),
        ({"worker_memory_gib": 64.0}, "16] GiB"),
        ({"max_workers": 0}, "max_workers=0"),
        ({"max_workers": 1000}, "1..100"),
        ({"worker_gpus": 1}, "GPU"),
    ],
)
def test_options_beyond_the_policy_are_refused(change, fragment):
    with pytest.raises(OptionsRefused, match=fragment.replace(".", r"\.").replace("]", r"\]")):
        validate_request(request(**change), chain(students=None), POLICY)


def test_charges_are_dask_intervals_of_cores():
    assert scheduler_charge(POLICY).kind == ChargeKind.DASK
    assert scheduler_charge(POLICY).cpu_cores == 1.0
    charge = worker_charge(2)
    assert charge.kind == ChargeKind.DASK
    assert charge.cpu_cores == 2.0
    assert charge.gpus == 0


def test_workers_that_fit_the_concurrent_core_limit_across_clusters():
    # 3 of 8 cores held by the group (other clusters): 2-core workers, 2 more fit
    fit, why = workers_that_fit(chain(students=8, held=3), worker_charge(2), 10, NOW)
    assert fit == 2
    assert not why.allowed
    assert "atlas/higgs/students" in why.message
    assert "concurrent Dask cores" in why.message
    everything, ok = workers_that_fit(chain(students=8), worker_charge(1), 5, NOW)
    assert everything == 5
    assert ok.allowed
    assert workers_that_fit(chain(students=8), worker_charge(1), 0, NOW)[0] == 0
    none, why = workers_that_fit(chain(students=3, held=3), worker_charge(1), 4, NOW)
    assert none == 0
    assert "3/3" in why.message


def test_a_spent_budget_admits_no_worker():
    states = [node("atlas", cpu_core_hours=10, used_hours=10)]
    fit, why = workers_that_fit(states, worker_charge(1), 3, NOW)
    assert fit == 0
    assert "CPU core-hours" in why.message


def test_scale_notice_says_how_many_and_why():
    _, why = workers_that_fit(chain(students=3, held=3), worker_charge(1), 1, NOW)
    text = scale_notice(5, 2, why)
    assert "5 workers" in text
    assert "runs 2 workers instead" in text
    assert "3/3" in text


def test_policy_rejects_inconsistent_defaults():
    with pytest.raises(ValueError, match="default_worker_cores must be between 1"):
        DaskPolicy(default_worker_cores=8, max_worker_cores=4)
