"""Quota decision latency at facility scale, and spawn latency with quotas on versus off.

1. Decisions: a database seeded with 1,000 groups up to depth 6, 10,000 users and
   1,000,000 ledger rows (``tests.support.scale.seed_scale``), on SQLite and, when
   ``AFHUB_TEST_POSTGRES_URL`` names a server, on PostgreSQL. Timed: the read-only quota
   decision (``LedgerStore.preview``) and a full admission (decision plus ledger write,
   ``admit``, then ``close`` untimed), for random users, p50/p95. On PostgreSQL both read
   the chain in one prepared statement (the admission after the chain's row locks, in its
   write transaction); ``--profile`` times each SQL statement of both.
2. Spawns: two local facilities in the same run, one with quotas (admission, ledger
   interval, the accountant) and one with ``AfhubLocalSpawner.charging = False``; spawns
   alternate between them. The ratio is the cost of quotas on a spawn.

Run: ``make bench-quota`` (``.venv/bin/python benchmarks/quota.py``; ``--quick`` for a
smaller database and fewer spawns).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event

from afhub.quotas.limits import Charge, ChargeKind
from afhub.stores.facade import Stores
from benchmarks.report import summary, write_section
from benchmarks.spawn import one_spawn
from tests.facility import Facility
from tests.support.databases import postgres_database, postgres_server_url
from tests.support.scale import seed_scale

CHARGE = Charge(kind=ChargeKind.SERVER, cpu_cores=1.0)


def profile_statements(engine) -> dict[str, list[float]]:
    """Time every SQL statement ``engine`` runs from now on (ms, by its first 70 characters):
    where a decision's time goes, round trip by round trip."""
    times: dict[str, list[float]] = {}

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, _cursor, _statement, _params, _context, _executemany):
        conn.info["afhub_t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, _cursor, statement, _params, _context, _executemany):
        elapsed = (time.perf_counter() - conn.info.pop("afhub_t0")) * 1000
        times.setdefault(" ".join(statement.split())[:70], []).append(elapsed)

    return times


def print_statements(what: str, statements: dict[str, list[float]] | None) -> None:
    """Print and forget what ``profile_statements`` gathered (nothing when not profiling)."""
    if statements is None:
        return
    print(f"{what}, per statement (ms):")
    for statement, values in statements.items():
        s = summary(values)
        print(
            f"  {len(values):5d}x p50 {s['median']:.2f} p95 {s['p95']:.2f} "
            f"total {sum(values):.0f}  {statement}"
        )
    statements.clear()


def time_decisions(
    url: str, scale: dict, samples: int, profile: bool = False
) -> dict[str, dict[str, float]]:
    stores = Stores.open(url)
    try:
        t0 = time.perf_counter()
        seeded = seed_scale(stores, **scale)
        seed_s = time.perf_counter() - t0
        statements = profile_statements(stores.db.engine) if profile else None
        users = list(seeded["users"])
        rng = random.Random(7)
        load = os.getloadavg()[0]  # other work on the machine shows in the tail
        decide_ms, admit_ms = [], []
        for _ in range(samples):
            user = rng.choice(users)
            t = time.perf_counter()
            stores.ledger.preview(user=user, charge=CHARGE)
            decide_ms.append((time.perf_counter() - t) * 1000)
        print_statements(f"{len(decide_ms)} decisions", statements)
        for i in range(samples // 2):
            user = rng.choice(users)
            t = time.perf_counter()
            admission = stores.ledger.admit(user=user, charge=CHARGE, server_name=f"bench{i}")
            admit_ms.append((time.perf_counter() - t) * 1000)
            stores.ledger.close(admission.interval_id)
        print_statements(f"{len(admit_ms)} admissions (and their closes)", statements)
        return {
            "decision": summary(decide_ms),
            "admission": summary(admit_ms),
            "seed_s": {"median": seed_s},
            "load": {"median": load},
        }
    finally:
        stores.close()


def time_spawns(spawns: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        on = Facility(Path(tmp) / "on").start()
        off = Facility(Path(tmp) / "off", config={"AfhubLocalSpawner": {"charging": False}})
        off.start()
        try:
            users = {"on": ("bench", on.add_user("bench")), "off": ("bench", off.add_user("bench"))}
            hubs = {"on": on, "off": off}
            for name in hubs:  # warm-up
                one_spawn(hubs[name], *users[name])
            times: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(spawns):
                order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
                for name in order:
                    times[name].append(one_spawn(hubs[name], *users[name]))
                    print(f"quotas {name:3s} spawn {i + 1:2d}: {times[name][-1]:.2f} s", flush=True)
        finally:
            on.stop()
            off.stop()
    return {name: summary(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 4 spawns each")
    parser.add_argument("--samples", type=int, default=400, help="decisions timed per backend")
    parser.add_argument("--spawns", type=int, default=10, help="spawns per facility")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time each SQL statement of the decisions and admissions",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    scale = {"groups": 1000, "max_depth": 6, "users": 10_000, "ledger_rows": 1_000_000}
    if args.quick:
        scale["ledger_rows"], args.spawns = 100_000, 4

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("SQLite", f"sqlite:///{tmp}/quota.sqlite", None)]
        server = postgres_server_url()
        if server:
            backends.append(("PostgreSQL", None, server))
        for name, url, pg_server in backends:
            print(f"seeding {name} ...", flush=True)
            if pg_server:
                with postgres_database(pg_server) as pg_url:
                    result = time_decisions(pg_url, scale, args.samples, args.profile)
            else:
                result = time_decisions(url, scale, args.samples, args.profile)
            d, a = result["decision"], result["admission"]
            rows.append(
                f"| {name} | {d['median']:.2f} | {d['p95']:.2f} | {a['median']:.2f} | "
                f"{a['p95']:.2f} | {result['seed_s']['median']:.0f} | "
                f"{result['load']['median']:.1f} |"
            )
            print(rows[-1], flush=True)
    if len(backends) == 1:
        rows.append("| PostgreSQL | not run: set AFHUB_TEST_POSTGRES_URL | | | | | |")

    spawn = time_spawns(args.spawns)
    on, off = spawn["on"], spawn["off"]
    body = (
        "## Quotas: decision latency and spawn overhead\n\n"
        f"`make bench-quota` (`benchmarks/quota.py{' --quick' if args.quick else ''}`): "
        f"{scale['groups']:,} groups up to depth {scale['max_depth']}, "
        f"{scale['users']:,} users, {scale['ledger_rows']:,} ledger rows; {args.samples} "
        "decisions per backend for random users.\n\n"
        "| backend | decision p50 (ms) | decision p95 (ms) | admission p50 (ms) | "
        "admission p95 (ms) | seeding (s) | load average (1 min) |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nTarget: p95 decision under 5 ms.\n\n"
        f"Spawn, login to a ready JupyterLab, {args.spawns} spawns per facility, alternating, "
        "same run:\n\n| facility | median (s) | p95 (s) |\n|---|---|---|\n"
        f"| quotas on | {on['median']:.2f} | {on['p95']:.2f} |\n"
        f"| quotas off (`charging: false`) | {off['median']:.2f} | {off['p95']:.2f} |\n"
        f"| **ratio on / off** | **{on['median'] / off['median']:.3f}** | "
        f"**{on['p95'] / off['p95']:.3f}** |\n\nTarget: spawn overhead under 5%.\n"
    )
    print(body)
    if not args.no_write:
        print(f"written to {write_section('quota', body)}")


if __name__ == "__main__":
    main()
