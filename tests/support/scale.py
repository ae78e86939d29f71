"""A facility-sized history in an empty database, filled fast with bulk inserts.

``seed_scale`` runs the steps in order: the group tree, users with their memberships, a
quota per group, closed ledger intervals with their hourly rollups, running servers, and
fresh planner statistics. Used by benchmarks/quota.py and the scale consistency tests.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update

from afhub.quotas.limits import Charge
from afhub.stores.ledger import split_by_hour
from afhub.stores.models import (
    Group,
    GroupClosure,
    LedgerInterval,
    Membership,
    Quota,
    UsageHourly,
    User,
)

#: a limit no seeded history reaches, so decisions run every check and admit
UNREACHED = 1e8


def seed_scale(
    stores,
    *,
    groups: int = 1000,
    max_depth: int = 6,
    users: int = 10_000,
    ledger_rows: int = 1_000_000,
    running: int = 2000,
    days: int = 180,
    now=None,
    seed: int = 1,
    chunk: int = 50_000,
) -> dict[str, object]:
    """Fill an empty database with a facility-sized history, fast (bulk inserts).

    A random tree of ``groups`` groups (10 top-level, at most ``max_depth`` deep), ``users``
    users each in one group (their default), a quota on every group (high limits, so
    decisions run every check and admit), ``ledger_rows`` closed intervals spread over the
    last ``days`` days with their hourly rollups, and ``running`` running servers. Returns
    the paths and user names (for benchmarks and consistency tests).
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    paths = create_group_tree(stores, rng, groups=groups, max_depth=max_depth)
    names = [f"u{i}" for i in range(users)]
    with stores.db.write() as s:
        gid = dict(s.execute(select(Group.path, Group.id)).all())
        ancestors: dict[int, list[int]] = defaultdict(list)
        for a, d in s.execute(select(GroupClosure.ancestor_id, GroupClosure.descendant_id)):
            ancestors[d].append(a)
        home = {n: rng.choice(paths) for n in names}
        add_users(s, names, {n: gid[home[n]] for n in names}, now)
        add_quotas(s, [gid[p] for p in paths], now)
    window = (now.timestamp() - 1 - days * 86400, now.timestamp() - 1)
    amounts: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for offset in range(0, ledger_rows, chunk):
        rows = closed_intervals(rng, min(chunk, ledger_rows - offset), names, home, gid, window)
        add_to_rollup(amounts, rows, ancestors)
        with stores.db.write() as s:
            s.execute(insert(LedgerInterval), rows)
    write_rollup(stores.db, amounts)
    start_servers(stores, rng.sample(names, min(running, users)), now)
    analyze(stores.db)
    return {"paths": paths, "users": names}


def create_group_tree(stores, rng: random.Random, *, groups: int, max_depth: int) -> list[str]:
    """A random tree of ``groups`` groups, parents before children; returns the paths."""
    paths = [f"g{i}" for i in range(min(10, groups))]
    while len(paths) < groups:
        parent = rng.choice(paths)
        if parent.count("/") + 1 < max_depth:
            paths.append(f"{parent}/s{len(paths)}")
    for path in paths:
        stores.groups.create(path)
    return paths


def add_users(session, names: list[str], group_of: dict[str, int], now) -> None:
    """Users, each a member of one group that is also their default."""
    session.execute(
        insert(User), [{"name": n, "is_facility_admin": False, "created_at": now} for n in names]
    )
    uid = dict(session.execute(select(User.name, User.id)).all())
    session.execute(
        insert(Membership),
        [
            {
                "group_id": group_of[n],
                "user_id": uid[n],
                "role": "member",
                "source": "manual",
                "created_at": now,
            }
            for n in names
        ],
    )
    session.execute(update(User), [{"id": uid[n], "default_group_id": group_of[n]} for n in names])


def add_quotas(session, group_ids: list[int], now) -> None:
    """A quota no history reaches on every group."""
    session.execute(
        insert(Quota),
        [
            {
                "group_id": g,
                "gpu_hours": UNREACHED,
                "cpu_core_hours": UNREACHED,
                "max_servers": 1_000_000,
                "max_gpus": 1_000_000,
                "max_dask_cores": UNREACHED,
                "period": "month",
                "updated_at": now,
            }
            for g in group_ids
        ],
    )


def closed_intervals(rng, count, names, home, gid, window) -> list[dict]:
    """``count`` closed server intervals of random users inside ``window`` (begin, end)."""
    begin, end = window
    rows = []
    for _ in range(count):
        user = rng.choice(names)
        start = begin + rng.random() * (end - begin)
        stop = min(start + rng.expovariate(1 / 7200), end)
        cores, gpus = rng.choice([1, 2, 4, 8]), rng.choice([0, 0, 0, 1])
        rows.append(
            {
                "user_name": user,
                "group_id": gid[home[user]],
                "group_path": home[user],
                "kind": "server",
                "resource": "bench",
                "server_name": "",
                "cpu_cores": cores,
                "gpus": gpus,
                "state": "closed",
                "admitted_ts": start,
                "start_ts": start,
                "stop_ts": stop,
                "checkpoint_ts": stop,
                "note": "",
            }
        )
    return rows


def add_to_rollup(amounts, rows: list[dict], ancestors: dict[int, list[int]]) -> None:
    """Add each interval's core- and GPU-seconds, hour by hour, to its group's ancestors."""
    for row in rows:
        for hour, seconds in split_by_hour(row["start_ts"], row["stop_ts"]):
            for a in ancestors[row["group_id"]]:
                amount = amounts[(a, hour)]
                amount[0] += row["cpu_cores"] * seconds
                amount[1] += row["gpus"] * seconds


def write_rollup(db, amounts, batch: int = 100_000) -> None:
    items = sorted(amounts.items())
    for offset in range(0, len(items), batch):
        with db.write() as s:
            s.execute(
                insert(UsageHourly),
                [
                    {"group_id": g, "hour_ts": h, "cpu_core_seconds": v[0], "gpu_seconds": v[1]}
                    for (g, h), v in items[offset : offset + batch]
                ],
            )


def start_servers(stores, users: list[str], now) -> None:
    """A running two-core server for each of ``users``, started half an hour ago."""
    started = now - timedelta(minutes=30)
    for user in users:
        admission = stores.ledger.admit(
            user=user, charge=Charge("server", 2, 0), now=started, enforce=False
        )
        stores.ledger.mark_running(admission.interval_id, at=started)
    stores.ledger.checkpoint(now=now - timedelta(minutes=1))


def analyze(db) -> None:
    """Fresh planner statistics after the bulk load."""
    with db.engine.connect() as conn:
        if db.is_postgresql:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
