"""The Groups page with 1,000 groups: time until drawn in headless Chromium (issue 14).

A local facility (``afhub up``, as ``make up`` starts it) on SQLite, and one on PostgreSQL
when ``AFHUB_TEST_POSTGRES_URL`` names a server, each with a random tree of 1,000 groups
(up to 4 deep, ``tests/support/scale.py``). The facility's admin (who sees every group) logs
in to the hub in headless Chromium (the flags of ``tests/browser.py``); then each round opens
a new tab and times from ``page.goto`` until the page's ``load`` event has fired and the
tree's last group is visible, for ``/services/afhub/groups`` (afhub's page: the pages
service, its OAuth, two facility API calls with the viewer's token, the tree rendered) and,
alternating with it, the hub's own ``/hub/home`` in the same browser (the plain upstream
page). Two warm-up rounds each.

Run: ``.venv/bin/python benchmarks/groups_page.py`` (``--rounds 10``; ``--no-write`` leaves
``docs/benchmarks.md`` alone).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import summary, write_section
from tests.browser import CHROMIUM_ARGS, chromium_path
from tests.facility import Facility
from tests.support.databases import postgres_database, postgres_server_url
from tests.support.scale import create_group_tree

GROUPS = 1000
TARGET_S = 3.0


def seed(db_url: str, groups: int) -> None:
    from afhub.stores.facade import Stores

    stores = Stores.open(db_url, migrate=False)
    try:
        create_group_tree(stores, random.Random(14), groups=groups, max_depth=4)
    finally:
        stores.close()


def time_page(context, url: str, ready: str) -> float:
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url, wait_until="load", timeout=60_000)
        page.wait_for_selector(ready, state="visible", timeout=60_000)
        return time.perf_counter() - start
    finally:
        page.close()


def measure(facility: Facility, browser, rounds: int) -> dict[str, list[float]]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(facility.hub_url + "login")
    page.fill("input#username_input", "admin")
    page.fill("input#password_input", facility.admin_password)
    page.click("#login_submit")
    page.wait_for_url("**/hub/**", timeout=60_000)
    pages = {
        "afhub": (facility.url + "services/afhub/groups", "#afhub-tree li:last-child"),
        "hub": (facility.hub_url + "home", "#start"),
    }
    first = page.goto(pages["afhub"][0])
    if first is None or first.status != 200:
        raise SystemExit(f"the Groups page did not load: {first and first.status}")
    drawn = page.locator("#afhub-tree li").count()
    assert drawn >= GROUPS, f"the page drew {drawn} groups"
    page.close()
    times: dict[str, list[float]] = {"afhub": [], "hub": []}
    for i in range(rounds + 2):
        for name, (url, ready) in pages.items():
            elapsed = time_page(context, url, ready)
            if i >= 2:
                times[name].append(elapsed)
    context.close()
    return times


def run_backend(label: str, db_url: str | None, rounds: int, browser) -> dict:
    with tempfile.TemporaryDirectory(prefix="afhub-bench-groups-") as home:
        env = {"AFHUB_DB_URL": db_url} if db_url else {}
        facility = Facility(Path(home), env=env)
        facility.start()
        try:
            seed(db_url or f"sqlite:///{Path(home) / 'afhub.sqlite'}", GROUPS)
            times = measure(facility, browser, rounds)
        finally:
            facility.stop()
    return {"label": label, "afhub": summary(times["afhub"]), "hub": summary(times["hub"])}


def report(results: list[dict], rounds: int) -> str:
    lines = [
        "## The Groups page",
        "",
        f"`benchmarks/groups_page.py`: `/services/afhub/groups` with {GROUPS} groups, seen by",
        "the facility's admin (every group), from `page.goto` until `load` and the tree's last",
        "group visible, in headless Chromium; beside it the hub's own `/hub/home` in the same",
        f"browser and run. {rounds} rounds each after two warm-ups. "
        f"Target: under {TARGET_S:.0f} s.",
        "",
        "| Database | Groups page median (p95) | `/hub/home` median (p95) | ratio | under target |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        a, h = r["afhub"], r["hub"]
        lines.append(
            f"| {r['label']} | {a['median']:.2f} s ({a['p95']:.2f} s) | {h['median']:.2f} s "
            f"({h['p95']:.2f} s) | {a['median'] / h['median']:.1f}x | "
            f"{'yes' if a['p95'] < TARGET_S else 'no'} |"
        )
    if not any(r["label"] == "PostgreSQL" for r in results):
        lines.append("| PostgreSQL | not run: set AFHUB_TEST_POSTGRES_URL | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    path = chromium_path()
    if path is None:
        sys.exit("Chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        results.append(run_backend("SQLite", None, args.rounds, browser))
        server = postgres_server_url()
        if server:
            with contextlib.ExitStack() as stack:
                url = stack.enter_context(postgres_database(server))
                results.append(run_backend("PostgreSQL", url, args.rounds, browser))
        browser.close()
    body = report(results, args.rounds)
    print(body)
    if not args.no_write:
        write_section("groups-page", body)


if __name__ == "__main__":
    main()
