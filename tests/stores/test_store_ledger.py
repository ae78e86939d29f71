import threading
from datetime import UTC, datetime, timedelta

import pytest

from afhub.quotas.decisions import EnforcementAction, plan_enforcement
from afhub.quotas.limits import Charge, LimitName
from afhub.stores.errors import LedgerConflict, NotAMember, StoreError
from afhub.stores.facade import Stores
from afhub.stores.ledger import QuotaExceeded, split_by_hour

T0 = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)
GPU = Charge("server", cpu_cores=4, gpus=1, resource="gpu-small")
CPU = Charge("server", cpu_cores=2, resource="cpu")


def hours(n):
    return timedelta(hours=n)


@pytest.fixture
def tree(stores):
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students", "atlas/top"]:
        stores.groups.create(path)
    stores.groups.add_member("atlas/higgs/students", "sam")
    stores.groups.add_member("atlas/higgs/students", "sue")
    stores.groups.add_member("atlas/top", "tom")
    return stores


def run(stores, user, charge, start, stop, server_name=""):
    admission = stores.ledger.admit(user=user, charge=charge, server_name=server_name, now=start)
    stores.ledger.mark_running(admission.interval_id, at=start)
    if stop is not None:
        stores.ledger.close(admission.interval_id, at=stop)
    return admission.interval_id


def test_split_by_hour():
    base = T0.timestamp()
    assert split_by_hour(base + 1800, base + 3600 * 2 + 60) == [
        (base, 1800),
        (base + 3600, 3600),
        (base + 7200, 60),
    ]


def test_life_cycle_and_exact_usage(tree):
    interval = run(tree, "sam", GPU, T0, T0 + hours(2.5))
    info = tree.ledger.get(interval)
    assert (info.state, info.group, info.start, info.stop) == (
        "closed",
        "atlas/higgs/students",
        T0,
        T0 + hours(2.5),
    )
    report = tree.ledger.usage("atlas", T0 - hours(1), T0 + hours(10), now=T0 + hours(10))
    assert report.gpu_hours == pytest.approx(2.5)
    assert report.cpu_core_hours == pytest.approx(10.0)
    # rolled up: every ancestor sees the same usage in its budget
    status = tree.ledger.status("atlas/higgs/students", now=T0 + hours(3))
    assert [n.path for n in status] == ["atlas", "atlas/higgs", "atlas/higgs/students"]
    assert all(n.usage.gpu_hours == pytest.approx(2.5) for n in status)
    assert tree.ledger.status("atlas/top", now=T0 + hours(3))[-1].usage.gpu_hours == 0


def test_failed_spawn_is_never_charged(tree):
    admission = tree.ledger.admit(user="sam", charge=GPU, now=T0)
    info = tree.ledger.close(admission.interval_id, at=T0 + hours(1), note="spawn failed")
    assert info.state == "failed"
    # marked running, checkpointed, then the spawn is declared failed: refunded
    admission = tree.ledger.admit(user="sam", charge=GPU, now=T0)
    tree.ledger.mark_running(admission.interval_id, at=T0)
    tree.ledger.checkpoint(now=T0 + hours(1))
    assert tree.ledger.status("atlas", now=T0 + hours(1))[0].usage.gpu_hours == pytest.approx(1)
    tree.ledger.fail(admission.interval_id)
    assert tree.ledger.status("atlas", now=T0 + hours(2))[0].usage.gpu_hours == pytest.approx(0)
    assert tree.ledger.usage("atlas", T0, T0 + hours(5), now=T0 + hours(5)).intervals == []


def test_budget_refusal_names_group_limit_and_reset(tree):
    tree.quotas.set("atlas/higgs/students", {"gpu_hours": 2})
    run(tree, "sam", GPU, T0, T0 + hours(1))
    run(tree, "sue", GPU, T0, None)  # still running: un-checkpointed usage counts
    with pytest.raises(QuotaExceeded) as info:
        tree.ledger.admit(user="sam", charge=GPU, now=T0 + hours(1))
    assert str(info.value) == (
        "group 'atlas/higgs/students' has used its GPU-hours budget for this calendar month "
        "(UTC): 2/2 GPU-hours used; it resets at 2026-12-01 00:00 UTC"
    )
    refusal = info.value.decision.refusals[0]
    assert (refusal.limit, refusal.used, refusal.limit_value) == (LimitName.GPU_HOURS, 2, 2)
    # CPU-only servers do not consume GPU-hours
    tree.ledger.admit(user="sam", charge=CPU, now=T0 + hours(1))
    # next month the budget is back
    tree.ledger.admit(
        user="sam", charge=GPU, server_name="dec", now=datetime(2026, 12, 1, tzinfo=UTC)
    )


def test_parent_limit_holds_over_children(tree):
    tree.quotas.set("atlas", {"gpu_hours": 3})
    tree.quotas.set("atlas/higgs/students", {"gpu_hours": 100})  # oversubscribes its parent
    run(tree, "sam", GPU, T0, T0 + hours(2))
    run(tree, "tom", GPU, T0, T0 + hours(1))
    with pytest.raises(QuotaExceeded, match=r"group 'atlas' .* 3/3 GPU-hours"):
        tree.ledger.admit(user="sam", charge=GPU, now=T0 + hours(3))
    with pytest.raises(QuotaExceeded, match="group 'atlas'"):
        tree.ledger.admit(user="tom", charge=GPU, now=T0 + hours(3))


def test_rolling_window_counts_only_recent_usage(tree):
    tree.quotas.set("atlas/top", {"cpu_core_hours": 10, "period": "rolling:1d"})
    run(tree, "tom", CPU, T0, T0 + hours(5))  # 10 core-hours
    with pytest.raises(QuotaExceeded, match="rolling 1 day"):
        tree.ledger.admit(user="tom", charge=CPU, now=T0 + hours(6))
    # 26.5 h later half of the first hour's usage has aged out... resolution is the hour:
    status = tree.ledger.status("atlas/top", now=T0 + hours(24.5))[-1]
    assert status.usage.cpu_core_hours == pytest.approx(9.0)
    tree.ledger.admit(user="tom", charge=CPU, now=T0 + hours(24.5))


def test_concurrency_limits_count_pending_and_running(tree):
    tree.quotas.set("atlas/higgs", {"max_servers": 2, "max_gpus": 1})
    first = tree.ledger.admit(user="sam", charge=GPU, now=T0)  # pending holds its slot
    with pytest.raises(QuotaExceeded, match="concurrent GPUs"):
        tree.ledger.admit(user="sue", charge=GPU, now=T0)
    tree.ledger.admit(user="sue", charge=CPU, now=T0)
    with pytest.raises(QuotaExceeded, match="'atlas/higgs' is at its limit of 2 concurrent"):
        tree.ledger.admit(user="sam", charge=CPU, server_name="second", now=T0)
    with pytest.raises(LedgerConflict):
        tree.ledger.admit(user="sue", charge=CPU, now=T0)
    tree.ledger.close(first.interval_id, at=T0)
    tree.ledger.admit(user="sam", charge=CPU, server_name="second", now=T0)


def test_charge_to_a_group_the_user_is_not_in(tree):
    with pytest.raises(NotAMember):
        tree.ledger.admit(user="sam", charge=CPU, group="atlas/top", now=T0)
    with pytest.raises(NotAMember):
        tree.ledger.admit(user="nobody", charge=CPU, now=T0)


def test_dask_and_fit_charges_share_the_interface(tree):
    tree.quotas.set("atlas", {"max_dask_cores": 8})
    tree.ledger.admit(user="sam", charge=Charge("dask", cpu_cores=6), server_name="c1", now=T0)
    with pytest.raises(QuotaExceeded, match="Dask cores"):
        tree.ledger.admit(user="tom", charge=Charge("dask", cpu_cores=4), server_name="c2", now=T0)
    tree.ledger.admit(user="tom", charge=Charge("fit", cpu_cores=4), server_name="job1", now=T0)


def test_crash_reconcile_loses_at_most_one_checkpoint(tree):
    gone = run(tree, "sam", GPU, T0, None)
    alive = run(tree, "tom", CPU, T0, None)
    starting = tree.ledger.admit(user="sue", charge=CPU, now=T0 + hours(1))
    tree.ledger.checkpoint(now=T0 + hours(1))
    # the hub dies at T0+1h30 (no checkpoint); sam's server died with it; restart at T0+3h
    report = tree.ledger.reconcile([("tom", ""), ("eve", "lab")], now=T0 + hours(3))
    assert report.closed == [gone]
    assert report.kept == [alive]
    assert report.failed == [starting.interval_id]
    assert report.unknown == [("eve", "lab")]
    assert tree.ledger.get(gone).stop == T0 + hours(1)
    tree.ledger.checkpoint(now=T0 + hours(4))
    status = tree.ledger.status("atlas", now=T0 + hours(4))[0].usage
    assert status.gpu_hours == pytest.approx(1.0)  # sam: up to the last checkpoint
    assert status.cpu_core_hours == pytest.approx(4 * 1 + 2 * 4)  # tom ran all along


def test_over_budget_warn_then_stop(tree):
    tree.quotas.set("atlas/higgs", {"gpu_hours": 1})
    interval = run(tree, "sam", GPU, T0, None)
    run(tree, "sue", CPU, T0, None)
    assert tree.ledger.over_budget(now=T0 + hours(0.5)) == []
    over = tree.ledger.over_budget(now=T0 + hours(1))
    assert [o.interval.id for o in over] == [interval]
    assert "'atlas/higgs'" in over[0].reason
    steps = plan_enforcement([o.pure() for o in over], T0 + hours(1), timedelta(minutes=10))
    assert [s.action for s in steps] == [EnforcementAction.WARN]
    tree.ledger.mark_warned([interval], at=T0 + hours(1))
    over = tree.ledger.over_budget(now=T0 + hours(1.25))
    steps = plan_enforcement([o.pure() for o in over], T0 + hours(1.25), timedelta(minutes=10))
    assert [(s.interval_id, s.action) for s in steps] == [(interval, EnforcementAction.STOP)]


def test_enforcement_round_warns_once_then_stops_after_grace(tree):
    tree.quotas.set("atlas/higgs/students", {"cpu_core_hours": 4})
    interval = run(tree, "sam", CPU, T0, None)  # 2 cores: spent after 2 hours
    grace = timedelta(minutes=15)
    assert tree.ledger.enforcement_round(grace, now=T0 + hours(1)) == []
    (notice,) = tree.ledger.enforcement_round(grace, now=T0 + hours(2))
    assert (notice.action, notice.interval.id) == (EnforcementAction.WARN, interval)
    assert "CPU core-hours" in notice.reason
    assert "'atlas/higgs/students'" in notice.reason
    # warned already: nothing new until the grace period has passed, then stop
    assert tree.ledger.enforcement_round(grace, now=T0 + hours(2.1)) == []
    (notice,) = tree.ledger.enforcement_round(grace, now=T0 + hours(2.25))
    assert (notice.action, notice.interval.user) == (EnforcementAction.STOP, "sam")
    tree.ledger.close(interval, at=T0 + hours(2.25), note="stopped: budget spent")
    assert tree.ledger.enforcement_round(grace, now=T0 + hours(3)) == []


def _race(db_url, n, target):
    """Run ``target(stores, i)`` in ``n`` threads released at once; return results."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    opened = Stores.open(db_url, migrate=False)

    def worker(i):
        barrier.wait()
        try:
            results[i] = target(opened, i)
        except StoreError as exc:  # a refusal: collected and checked by the caller
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    opened.close()
    return results


def test_twenty_racing_spawns_for_the_last_three_slots_start_exactly_three(tree, db_url):
    tree.quotas.set("atlas", {"max_servers": 5})
    run(tree, "tom", CPU, T0, None)
    run(tree, "sam", CPU, T0, None)
    for i in range(20):
        tree.groups.add_member("atlas/higgs/students" if i % 2 else "atlas/top", f"racer{i}")

    results = _race(db_url, 20, lambda s, i: s.ledger.admit(user=f"racer{i}", charge=CPU, now=T0))
    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(admitted) == 3
    assert len(refused) == 17
    assert all("'atlas' is at its limit of 5 concurrent servers" in str(r) for r in refused)
    assert len(tree.ledger.open_intervals("server")) == 5


def test_all_states_match_each_chain(tree):
    tree.quotas.set("atlas", {"gpu_hours": 100, "max_servers": 10})
    tree.quotas.set("atlas/top", {"cpu_core_hours": 50, "period": "rolling:1d"})
    run(tree, "sam", GPU, T0, T0 + hours(2))
    run(tree, "tom", CPU, T0, None)
    now = T0 + hours(3)
    tree.ledger.checkpoint(now=T0 + hours(2.5))
    everything = {n.path: n for n in tree.ledger.all_states(now=now)}
    for path in ["atlas/higgs/students", "atlas/top"]:
        for node in tree.ledger.status(path, now=now):
            assert everything[node.path] == node
    assert everything["atlas"].usage.holdings.servers == 1
    assert everything["atlas/top"].usage.cpu_core_hours == pytest.approx(6.0)
    assert tree.ledger.open_counts() == {("server", "running"): 1}


def test_a_group_made_again_under_a_deleted_name_is_another_identity(tree):
    """Issue 11, finding 6: usage, ledger rows (with job ids) and invitations belong to a
    group's identity, not its name."""
    since = T0 - hours(1)
    later = T0 + hours(10)
    run(tree, "sam", GPU, T0, T0 + hours(1), server_name="job-of-sam")
    tree.invitations.create("atlas/higgs/students")
    tree.groups.remove_member("atlas/higgs/students", "sam")
    tree.groups.remove_member("atlas/higgs/students", "sue")
    tree.groups.delete("atlas/higgs/students")
    # the deleted subgroup's charge stays with the ancestors that survived it
    assert tree.ledger.usage("atlas/higgs", since, later, now=later).gpu_hours == pytest.approx(1)
    # a new group under the same name starts empty: no usage, no rows, no invitations
    tree.groups.create("atlas/higgs/students")
    tree.groups.add_member("atlas/higgs/students", "new")
    fresh = tree.ledger.usage("atlas/higgs/students", since, later, now=later)
    assert (fresh.gpu_hours, fresh.intervals) == (0, [])
    assert tree.invitations.list("atlas/higgs/students") == []
    assert tree.ledger.status("atlas/higgs/students", now=later)[-1].usage.gpu_hours == 0
    # the whole tree deleted and made again: nothing of the old one shows
    tree.groups.remove_member("atlas/higgs/students", "new")
    tree.groups.remove_member("atlas/top", "tom")
    tree.groups.delete("atlas", recursive=True)
    for path in ("atlas", "atlas/higgs"):
        tree.groups.create(path)
        report = tree.ledger.usage(path, since, later, now=later)
        assert (report.gpu_hours, report.intervals) == (0, []), path
