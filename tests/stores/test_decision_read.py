"""The one-statement decision read (``read_decision_chain``, used by ``preview`` and, after
the chain's row locks, by ``admit`` on PostgreSQL) equals the multi-statement
``chain_states`` on a generated tree with intervals in every state, rolling and monthly
periods, limits on some nodes only, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from afhub.quotas.decisions import decide
from afhub.quotas.limits import Charge
from afhub.stores.errors import NotAMember
from afhub.stores.groups import group_row
from afhub.stores.ledger import QuotaExceeded
from afhub.stores.ledger.chains import chain_states, charge_target
from afhub.stores.ledger.decision_read import read_decision_chain

NOW = datetime(2026, 11, 20, 15, 17, 23, 250000, tzinfo=UTC)
PERIODS = [None, "month", "rolling:5h", "rolling:2d", "rolling:40d"]
CHARGES = [
    Charge("server", cpu_cores=2),
    Charge("server", cpu_cores=16, gpus=2),
    Charge("dask", cpu_cores=24),
]


def _generated_facility(stores, rng: random.Random) -> list[str]:
    """12 groups up to depth 4, random limits and periods, 10 users, ~60 intervals in every
    state with checkpoints in between; returns the users."""
    paths = ["a", "b"]
    while len(paths) < 12:
        parent = rng.choice(paths)
        if parent.count("/") < 3:
            paths.append(f"{parent}/g{len(paths)}")
    for path in paths:
        stores.groups.create(path)
        if rng.random() < 0.75:
            stores.quotas.set(
                path,
                {
                    "gpu_hours": rng.choice([None, 5.0, 40.0]),
                    "cpu_core_hours": rng.choice([None, 30.0, 400.0]),
                    "max_servers": rng.choice([None, 2, 6]),
                    "max_gpus": rng.choice([None, 2]),
                    "max_dask_cores": rng.choice([None, 20.0]),
                    "period": rng.choice(PERIODS),
                },
            )
    users = [f"u{i}" for i in range(10)]
    for user in users:
        stores.groups.add_member(rng.choice(paths), user)
    for i in range(60):
        user, start = rng.choice(users), NOW - timedelta(hours=rng.uniform(0.2, 45 * 24))
        charge = rng.choice(CHARGES)
        admitted = stores.ledger.admit(
            user=user, charge=charge, server_name=f"s{i}", now=start, enforce=False
        )
        fate = rng.choice(["pending", "running", "closed", "failed", "failed-running"])
        if fate != "pending":
            stores.ledger.mark_running(admitted.interval_id, at=start)
        if fate in ("closed", "failed-running"):
            stores.ledger.checkpoint(now=start + timedelta(minutes=rng.uniform(1, 300)))
        if fate == "closed":
            stop = min(NOW, start + timedelta(hours=rng.uniform(0.01, 30)))
            stores.ledger.close(admitted.interval_id, at=stop)
        elif fate in ("failed", "failed-running"):
            stores.ledger.fail(admitted.interval_id)
    stores.ledger.checkpoint(now=NOW - timedelta(minutes=7))
    return users


def _same_states(new, old):
    assert [(s.path, s.limits) for s in new] == [(s.path, s.limits) for s in old]
    for n, o in zip(new, old, strict=True):
        assert n.usage.holdings == o.usage.holdings, n.path
        assert n.usage.cpu_core_hours == pytest.approx(o.usage.cpu_core_hours, rel=1e-9, abs=1e-9)
        assert n.usage.gpu_hours == pytest.approx(o.usage.gpu_hours, rel=1e-9, abs=1e-9)


def test_decision_read_equals_chain_states(stores):
    users = _generated_facility(stores, random.Random(16))
    # now; before the last checkpoint (checkpoints ahead of now); a month boundary later
    instants = [NOW, NOW - timedelta(minutes=30), datetime(2026, 12, 1, 0, 30, tzinfo=UTC)]
    compared = refused = 0
    with stores.db.engine.connect() as connection, Session(bind=connection) as session:
        for now in instants:
            for user in users:
                gid, path, new = read_decision_chain(connection, now, user=user)
                assert (gid, path) == charge_target(session, user, None)
                _same_states(new, chain_states(session, gid, now, full=True))
                for charge in CHARGES:
                    old = decide(chain_states(session, gid, now), charge, now)
                    assert stores.ledger.preview(user=user, charge=charge, now=now) == old
                    refused += not old.allowed
                    compared += 1
            # an explicit group (not the default) is read by id
            target = group_row(session, "a")
            _, path, new = read_decision_chain(connection, now, group_id=target.id)
            assert path == "a"
            _same_states(new, chain_states(session, target.id, now, full=True))
    assert compared == 90
    assert 0 < refused < compared  # the limits bite for some charges, not all


def _admitted_decision(stores, user, charge, now, server, group=None):
    """The decision ``admit`` takes (allowed or refused); an admitted charge is failed at
    once, so that the state stays what it was (a failed charge holds and costs nothing)."""
    try:
        admission = stores.ledger.admit(
            user=user, charge=charge, group=group, server_name=server, now=now
        )
    except QuotaExceeded as refused:
        return refused.decision
    stores.ledger.fail(admission.interval_id)
    return admission.decision


def test_admission_decides_as_preview_on_the_same_state(stores):
    users = _generated_facility(stores, random.Random(17))
    before = stores.ledger.open_intervals()
    instants = [NOW, datetime(2026, 12, 1, 0, 30, tzinfo=UTC)]
    allowed = refused = 0
    for n, (now, user, charge) in enumerate(
        (now, user, charge) for now in instants for user in users for charge in CHARGES
    ):
        expected = stores.ledger.preview(user=user, charge=charge, now=now)
        assert _admitted_decision(stores, user, charge, now, f"same{n}") == expected
        allowed += expected.allowed
        refused += not expected.allowed
    assert allowed > 0  # both outcomes compared
    assert refused > 0
    # an explicit group (another of the user's groups), locked and read by id
    stores.groups.create("b/extra")
    stores.groups.add_member("b/extra", users[0])
    for charge in CHARGES:
        expected = stores.ledger.preview(user=users[0], charge=charge, group="b/extra", now=NOW)
        decision = _admitted_decision(stores, users[0], charge, NOW, "explicit", "b/extra")
        assert decision == expected
    assert stores.ledger.open_intervals() == before  # every admitted charge was failed


def test_preview_and_admission_without_a_group_say_why(stores):
    stores.groups.create("lonely")
    with stores.db.engine.connect() as connection:
        assert read_decision_chain(connection, NOW, user="nobody") is None
    with pytest.raises(NotAMember, match="ask a group admin for an invitation"):
        stores.ledger.preview(user="nobody", charge=CHARGES[0], now=NOW)
    with pytest.raises(NotAMember, match="ask a group admin for an invitation"):
        stores.ledger.admit(user="nobody", charge=CHARGES[0], now=NOW)
    stores.groups.create("other")
    stores.groups.add_member("other", "someone")
    with pytest.raises(NotAMember, match="cannot charge group 'lonely'"):
        stores.ledger.admit(user="someone", charge=CHARGES[0], group="lonely", now=NOW)
