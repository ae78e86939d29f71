"""Contributions dashboard: time until its charts are drawn, with a year of usage.

``python -m benchmarks.dashboards`` (``--rows``, ``--users``, ``--rounds``): a facility on
SQLite and one on PostgreSQL (``AFHUB_TEST_POSTGRES_URL``), each with ``--rows`` ledger
charges of ``--users`` users over the last 365 days on a provider's four resources
(bulk inserts); a provider contact logged in to headless Chromium opens
``/services/dashboards/contributions?period=year`` and the time until its five charts are
drawn is measured. In the same run, on the same facility: the hub's own ``/hub/home`` in the
same browser, the plain way of the same aggregation (read every charge of the year and
sum in Python), and the contributions store alone (``ContributionStore.report`` for the
year, no browser, no kernel). Writes its section of docs/benchmarks.md.

``--store-only`` times the store alone and the plain way on both databases, prints them and
writes nothing (no facility, no browser: a minute or two).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import requests
from sqlalchemy import insert, select, text

from afhub.stores.contributions import ContributionStore, Period
from afhub.stores.database import Database
from afhub.stores.migrate import downgrade, upgrade
from afhub.stores.models import CLOSED, LedgerInterval
from benchmarks.report import summary, write_section
from tests.browser import CHROMIUM_ARGS, chromium_path
from tests.dashboards.seed import resource
from tests.facility import Facility
from tests.support.databases import postgres_database, postgres_server_url

PROVIDER = {"name": "bench", "institution": "Benchmark University", "contacts": ["provider"]}
RESOURCES = [
    resource("bench-gpu-a", "bench", "gpu"),
    resource("bench-gpu-b", "bench", "gpu"),
    resource("bench-cpu-a", "bench", "cpu"),
    resource("bench-cpu-b", "bench", "cpu"),
]
YEAR = 365 * 86400.0
CHARTS = 5
#: a page view not drawn after this many seconds counts as stalled (and is not timed)
ROUND_TIMEOUT = 120


#: the revision before the contribution rollup: the ledger is filled there, and upgrading
#: to the head backfills the rollup as it would on a facility that already has charges
BEFORE_ROLLUP = "0005_identities"


def fill_ledger(
    url: str, rows: int, users: int, now: float, chunk: int = 50_000
) -> tuple[float, float]:
    """``rows`` closed charges of ``users`` users in 50 groups over the last year, then the
    migration that backfills the contribution rollup from them; seconds of each."""
    rng = random.Random(0)
    names = [r["name"] for r in RESOURCES]
    upgrade(url)
    downgrade(url, BEFORE_ROLLUP)
    db = Database(url)
    started = time.perf_counter()
    with db.engine.begin() as conn:
        for offset in range(0, rows, chunk):
            batch = []
            for _ in range(min(chunk, rows - offset)):
                user = rng.randrange(users)
                name = rng.choice(names)
                start = now - rng.random() * YEAR
                hours = 0.25 + rng.random() * 8
                batch.append(
                    {
                        "user_name": f"user{user:04d}",
                        "group_path": f"group{user % 50:02d}",
                        "kind": "fit" if rng.random() < 0.05 else "server",
                        "resource": name,
                        "server_name": "",
                        "cpu_cores": float(rng.choice((1, 2, 4, 8))),
                        "gpus": rng.choice((1, 2)) if "gpu" in name else 0,
                        "state": CLOSED,
                        "admitted_ts": start,
                        "start_ts": start,
                        "stop_ts": min(start + hours * 3600, now),
                        "checkpoint_ts": min(start + hours * 3600, now),
                        "note": "",
                    }
                )
            conn.execute(insert(LedgerInterval.__table__), batch)
    filled = time.perf_counter() - started
    upgrade(url)
    if db.is_postgresql:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE afhub_ledger"))
            conn.execute(text("ANALYZE afhub_contribution_rollup"))
    db.dispose()
    return filled, time.perf_counter() - started - filled


def store_alone(url: str, now: float) -> float:
    """The contributions store's report of the year (the dashboard's query), alone; seconds."""
    db = Database(url)
    started = time.perf_counter()
    report = ContributionStore(db).report(
        [r["name"] for r in RESOURCES], Period(now - YEAR, now, now), bucket=7 * 86400.0
    )
    db.dispose()
    assert len(report["resources"]) == len(RESOURCES)
    return time.perf_counter() - started


def plain_aggregation(url: str, now: float) -> float:
    """The plain way: read every charge of the year, sum per resource in Python; seconds."""
    db = Database(url)
    ledger = LedgerInterval
    started = time.perf_counter()
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    with db.engine.connect() as conn:
        query = select(
            ledger.resource, ledger.gpus, ledger.cpu_cores, ledger.start_ts, ledger.stop_ts
        )
        for name, gpus, cores, start, stop in conn.execute(query.where(ledger.start_ts < now)):
            seconds = max(0.0, min(stop or now, now) - max(start, now - YEAR))
            sums[name][0] += gpus * seconds / 3600
            sums[name][1] += cores * seconds / 3600
    db.dispose()
    assert len(sums) == len(RESOURCES)
    return time.perf_counter() - started


def register(fac: Facility) -> tuple[str, str]:
    """The provider, its resources and its contact; returns the contact's login."""
    token = fac.admin_token()
    api = fac.url + "services/facility/api/"
    headers = {"Authorization": f"token {token}"}
    requests.post(api + "providers", json=PROVIDER, headers=headers, timeout=60).raise_for_status()
    for entry in RESOURCES:
        requests.post(api + "resources", json=entry, headers=headers, timeout=60).raise_for_status()
    return "provider", fac.add_user("provider")


def wait_for_dashboards(fac: Facility, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = fac.url + "services/dashboards/contributions"
            if requests.get(url, allow_redirects=False, timeout=5).status_code == 302:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("the dashboards service did not come up")


def browser_times(
    fac: Facility, user: str, password: str, rounds: int, settle: float
) -> dict[str, list[float]]:
    """Seconds until the contributions charts are drawn (after ``settle`` s idle, and again
    at once), and until /hub/home has loaded."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"dashboard": [], "again": [], "home": [], "stalled": []}
    url = fac.url + "services/dashboards/contributions?period=year"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        page.fill("#username_input", user)
        page.fill("#password_input", password)
        page.click("#login_submit")
        drawn = f"document.querySelectorAll('.js-plotly-plot').length >= {CHARTS}"
        try:  # warm-up (first kernel, imports); a stalled one is not counted
            page.wait_for_function(drawn, timeout=ROUND_TIMEOUT * 1000)
        except PlaywrightTimeout:
            times["stalled"].append(ROUND_TIMEOUT)
        for _ in range(rounds):
            # a visitor arriving finds the service idle (its prepared kernels started); the
            # view right after it finds the replacement kernel still starting
            time.sleep(settle)
            for kind in ("dashboard", "again"):
                started = time.perf_counter()
                page.goto(url, wait_until="commit")
                try:
                    page.wait_for_function(drawn, timeout=ROUND_TIMEOUT * 1000)
                    times[kind].append(time.perf_counter() - started)
                except PlaywrightTimeout:
                    times["stalled"].append(ROUND_TIMEOUT)
            started = time.perf_counter()
            page.goto(fac.url + "hub/home", wait_until="load")
            times["home"].append(time.perf_counter() - started)
        browser.close()
    return times


def run_backend(name: str, url: str, home: Path, args) -> dict:
    now = time.time()
    fill, backfill = fill_ledger(url, args.rows, args.users, now)
    print(
        f"{name}: {args.rows} charges inserted in {fill:.1f} s, rollup backfilled in "
        f"{backfill:.1f} s",
        flush=True,
    )
    plain = [plain_aggregation(url, now) for _ in range(3)]
    store = [store_alone(url, now) for _ in range(args.rounds)]
    print(f"{name}: store alone {store}, plain {plain}", flush=True)
    if args.store_only:
        return {"store": summary(store), "plain": summary(plain)}
    fac = Facility(home, env={"AFHUB_DB_URL": url}).start()
    try:
        wait_for_dashboards(fac)
        user, password = register(fac)
        times = browser_times(fac, user, password, args.rounds, args.settle)
    finally:
        fac.stop()
    print(name, times, plain, flush=True)
    stalled = len(times.pop("stalled"))
    return {
        "fill": fill,
        "stalled": stalled,
        "plain": summary(plain),
        "store": summary(store),
        **{k: summary(v or [float("nan")]) for k, v in times.items()},
    }


def section(results: dict[str, dict], args, load: tuple[float, ...]) -> str:
    lines = [
        "## Contributions dashboard: a year of 1,000 users",
        "",
        f"`python -m benchmarks.dashboards --rows {args.rows} --users {args.users} "
        f"--rounds {args.rounds} --settle {args.settle:g}`: {args.rows:,} closed charges of "
        f"{args.users:,} users over "
        "the last 365 days on a provider's four resources (bulk inserts). A provider contact "
        "in headless Chromium opens `/services/dashboards/contributions?period=year`; time "
        f"from navigation until its {CHARTS} charts are drawn (kernel start, the facility "
        "API's SQL aggregation, rendering), after one warm-up: each round a view after "
        f"{args.settle:g} s idle (as a visitor finds the service: its prepared kernels started) "
        "and a view at once after it (a reload: the kernel replacing the one just taken is "
        "still starting on the same 2 cores). Upstream ways in the same run: "
        "the hub's own `/hub/home` in the same browser, and the same sums done the plain way "
        "(read every charge, sum in Python). Store alone: `ContributionStore.report` for the "
        "year (the dashboard's query, no kernel, no browser; median of the rounds).",
        "",
        "| database | dashboard median (s) | p95 (s) | reload at once, median (s) "
        "| /hub/home median (s) | plain read + sum (s) | dashboard / plain read "
        "| store alone (s) | page views stalled |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ratio = r["dashboard"]["median"] / r["plain"]["median"]
        lines.append(
            f"| {name} | {r['dashboard']['median']:.2f} | {r['dashboard']['p95']:.2f} | "
            f"{r['again']['median']:.2f} | {r['home']['median']:.2f} | "
            f"{r['plain']['median']:.2f} | {ratio:.2f} | "
            f"{r['store']['median']:.2f} | {r['stalled']} of {2 * args.rounds} |"
        )
    lines += [
        "",
        "Target: under 3 s. A page view not drawn within "
        f"{ROUND_TIMEOUT} s counts as stalled (Voila's page kept rendering; not timed).",
        "",
        f"Load average (1 min) before the run: {load[0]:.1f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--settle", type=float, default=5.0, help="idle seconds before each timed page view"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument(
        "--store-only", action="store_true", help="time the store alone; print, write nothing"
    )
    args = parser.parse_args()
    if chromium_path() is None and not args.store_only:
        sys.exit("Chromium is missing (apt-get install chromium)")
    load = os.getloadavg()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        home = Path(tmp) / "sqlite"
        home.mkdir()
        results["SQLite"] = run_backend("SQLite", f"sqlite:///{home / 'afhub.sqlite'}", home, args)
        server = postgres_server_url()
        if server is None:
            print("AFHUB_TEST_POSTGRES_URL not set: PostgreSQL skipped", flush=True)
        else:
            url = stack.enter_context(postgres_database(server))
            results["PostgreSQL"] = run_backend("PostgreSQL", url, Path(tmp) / "pg", args)
    if args.store_only:
        print(load, results)
        return
    body = section(results, args, load)
    print(body)
    if not args.no_write:
        write_section("dashboards", body)


if __name__ == "__main__":
    main()
