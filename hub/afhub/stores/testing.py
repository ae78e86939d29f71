"""Helpers for tests of code that uses the stores: throw-away databases.

PostgreSQL tests read ``AFHUB_TEST_POSTGRES_URL`` (a server URL whose user may create
databases, e.g. ``postgresql+psycopg2://afhub_test:x@127.0.0.1:5432/postgres``); each test
session gets a fresh database with a random name, dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from afhub.stores.migrate import upgrade
from afhub.stores.models import Base

POSTGRES_ENV = "AFHUB_TEST_POSTGRES_URL"
POSTGRES_SKIP_REASON = (
    "AFHUB_TEST_POSTGRES_URL not set: PostgreSQL tests run in CI (.ci/run starts a server)"
)


def postgres_server_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database on ``server_url``'s server; dropped after."""
    name = f"afhub_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        _drop_database(admin, name)
        admin.dispose()


def _drop_database(admin, name: str, attempts: int = 30) -> None:
    """Drop ``name``; an autovacuum worker (a superuser session that FORCE may not end)
    can hold a freshly filled database for a moment, so retry for a while."""
    import time

    from sqlalchemy.exc import OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except (OperationalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(1)


@contextmanager
def sqlite_template(folder: Path) -> Iterator[Path]:
    """A migrated SQLite file to copy for each test (migrating once is the slow part)."""
    path = folder / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    yield path


def fresh_sqlite(template: Path, folder: Path) -> str:
    target = folder / "afhub.sqlite"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def empty_postgres(url: str) -> None:
    """Delete every afhub row (keeps the schema)."""
    engine = create_engine(url)
    try:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


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

    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    db = stores.db
    paths = [f"g{i}" for i in range(min(10, groups))]
    while len(paths) < groups:
        parent = rng.choice(paths)
        if parent.count("/") + 1 < max_depth:
            paths.append(f"{parent}/s{len(paths)}")
    for path in paths:  # parents come before children
        stores.groups.create(path)
    with db.write() as s:
        gid = dict(s.execute(select(Group.path, Group.id)).all())
        ancestors: dict[int, list[int]] = defaultdict(list)
        for a, d in s.execute(select(GroupClosure.ancestor_id, GroupClosure.descendant_id)):
            ancestors[d].append(a)
        names = [f"u{i}" for i in range(users)]
        s.execute(
            insert(User),
            [{"name": n, "is_facility_admin": False, "created_at": now} for n in names],
        )
        uid = dict(s.execute(select(User.name, User.id)).all())
        home = {n: rng.choice(paths) for n in names}
        s.execute(
            insert(Membership),
            [
                {
                    "group_id": gid[home[n]],
                    "user_id": uid[n],
                    "role": "member",
                    "source": "manual",
                    "created_at": now,
                }
                for n in names
            ],
        )
        s.execute(
            update(User),
            [{"id": uid[n], "default_group_id": gid[home[n]]} for n in names],
        )
        s.execute(
            insert(Quota),
            [
                {
                    "group_id": gid[p],
                    "gpu_hours": 1e8,
                    "cpu_core_hours": 1e8,
                    "max_servers": 1_000_000,
                    "max_gpus": 1_000_000,
                    "max_dask_cores": 1e8,
                    "period": "month",
                    "updated_at": now,
                }
                for p in paths
            ],
        )
    end = now.timestamp() - 1
    begin = end - days * 86400
    amounts: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for offset in range(0, ledger_rows, chunk):
        rows = []
        for _ in range(min(chunk, ledger_rows - offset)):
            user = rng.choice(names)
            group = gid[home[user]]
            start = begin + rng.random() * (end - begin)
            stop = min(start + rng.expovariate(1 / 7200), end)
            cores, gpus = rng.choice([1, 2, 4, 8]), rng.choice([0, 0, 0, 1])
            rows.append(
                {
                    "user_name": user,
                    "group_id": group,
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
            for hour, seconds in split_by_hour(start, stop):
                for a in ancestors[group]:
                    amount = amounts[(a, hour)]
                    amount[0] += cores * seconds
                    amount[1] += gpus * seconds
        with db.write() as s:
            s.execute(insert(LedgerInterval), rows)
    items = sorted(amounts.items())
    for offset in range(0, len(items), 100_000):
        with db.write() as s:
            s.execute(
                insert(UsageHourly),
                [
                    {"group_id": g, "hour_ts": h, "cpu_core_seconds": v[0], "gpu_seconds": v[1]}
                    for (g, h), v in items[offset : offset + 100_000]
                ],
            )
    started = now - timedelta(minutes=30)
    for user in rng.sample(names, min(running, users)):
        admission = stores.ledger.admit(
            user=user, charge=Charge("server", 2, 0), now=started, enforce=False
        )
        stores.ledger.mark_running(admission.interval_id, at=started)
    stores.ledger.checkpoint(now=now - timedelta(minutes=1))
    with db.engine.connect() as conn:
        if db.is_postgresql:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    return {"paths": paths, "users": names}
