"""The contributions query (``afhub.stores.contributions``) on SQLite and PostgreSQL: the
SQL aggregates equal the same sums done by hand over the seeded charges, charges are
clipped to the period, and a provider's contacts are found by name and by email."""

from __future__ import annotations

import pytest

from afhub.stores.contributions import ContributionStore, Period
from tests.dashboards.seed import HOUR, PROVIDERS, RESOURCES, seed_ledger

NOW = 1_800_000_000.0
DAY = 24 * HOUR


def _by_hand(rows, resource, since, until):
    """GPU-hours and core-hours of ``resource`` inside ``[since, until)``."""
    gpu = cores = 0.0
    for r in rows:
        if r["resource"] != resource:
            continue
        start, stop = max(r["start"], since), min(r["start"] + r["hours"] * HOUR, until)
        seconds = max(0.0, stop - start)
        gpu += r["gpus"] * seconds / HOUR
        cores += r["cpu_cores"] * seconds / HOUR
    return round(gpu, 3), round(cores, 3)


@pytest.fixture
def seeded(stores, db_url):
    for provider in PROVIDERS.values():
        stores.registry.add_provider(provider)
    for entry in RESOURCES:
        stores.registry.add_resource(entry)
    stores.groups.ensure_user("beta-person", email="OPS@beta.example")
    return seed_ledger(db_url, now=NOW)


@pytest.mark.parametrize("days", [2.5, 30, 365])
def test_sums_match_the_charges_by_hand(stores, seeded, days):
    period = Period(NOW - days * DAY, NOW, NOW)
    report = ContributionStore(stores.db).report(["alpha-gpu", "alpha-cpu"], period)
    got = {r["resource"]: (r["gpu_hours"], r["core_hours"]) for r in report["resources"]}
    for resource in ("alpha-gpu", "alpha-cpu"):
        expected = _by_hand(seeded, resource, period.since, period.until)
        assert got.get(resource, (0.0, 0.0)) == expected
    # the beta resource was not asked for
    assert {g["resource"] for g in report["groups"]} <= {"alpha-gpu", "alpha-cpu"}
    assert sum(d["core_hours"] for d in report["timeline"]) == pytest.approx(
        sum(r["core_hours"] for r in report["resources"])
    )


@pytest.mark.usefixtures("seeded")
def test_groups_users_and_fits(stores):
    report = ContributionStore(stores.db).report(
        ["alpha-gpu", "alpha-cpu"], Period(NOW - 30 * DAY, NOW, NOW), top=2
    )
    by_resource = {r["resource"]: r for r in report["resources"]}
    assert by_resource["alpha-gpu"]["distinct_users"] == 2
    assert by_resource["alpha-cpu"]["fits"] == 1
    assert [u["user"] for u in report["top_users"]] == ["ann", "bob"]
    groups = {(g["resource"], g["group"]): g for g in report["groups"]}
    assert groups[("alpha-gpu", "atlas")]["gpu_hours"] == 12.0


@pytest.mark.usefixtures("seeded")
def test_contacts_by_name_or_email(stores):
    store = ContributionStore(stores.db)
    assert store.providers_of("beta-person") == ["beta"]
    assert store.providers_of("nobody") == []


@pytest.mark.usefixtures("seeded")
def test_nothing_asked_gives_empty_report(stores):
    report = ContributionStore(stores.db).report([], Period(NOW - DAY, NOW, NOW))
    assert report == {"resources": [], "groups": [], "top_users": [], "timeline": []}


@pytest.mark.usefixtures("seeded")
def test_weekly_buckets_sum_like_daily_ones(stores):
    store, period = ContributionStore(stores.db), Period(NOW - 365 * DAY, NOW, NOW)
    daily = store.report(["alpha-cpu"], period)["timeline"]
    weekly = store.report(["alpha-cpu"], period, bucket=7 * DAY)["timeline"]
    assert len(weekly) <= len(daily)
    assert all(row["start"] % (7 * DAY) == 0 for row in weekly)
    assert sum(r["core_hours"] for r in weekly) == pytest.approx(
        sum(r["core_hours"] for r in daily)
    )


def test_public_report_choice_is_checked():
    from afhub.registry.model import RegistryError, parse_provider

    entry = {"name": "p", "institution": "P", "public_report": "yes"}
    with pytest.raises(RegistryError, match="public_report' must be one of off, aggregate"):
        parse_provider(entry, 0)
    assert parse_provider({**entry, "public_report": "with_users"}, 0).public_report == "with_users"
    assert parse_provider({"name": "p", "institution": "P"}, 0).public_report == "off"


@pytest.mark.usefixtures("seeded")
def test_totals_count_each_user_once(stores):
    store, period = ContributionStore(stores.db), Period(NOW - 30 * DAY, NOW, NOW)
    resources = ["alpha-gpu", "alpha-cpu"]
    totals = store.totals(resources, period)
    # ann used both resources: per resource 2 + 2 users, in all ann, bob, <script>x</script>
    assert totals["distinct_users"] == 3
    assert totals["fits"] == 1
    rows = store.report(resources, period)["resources"]
    assert totals["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in rows))
    assert totals["core_hours"] == pytest.approx(sum(r["core_hours"] for r in rows))
    assert store.totals([], period) == {
        "distinct_users": 0,
        "fits": 0,
        "gpu_hours": 0.0,
        "core_hours": 0.0,
    }


def _random_ledger(stores, rng):
    """Charges of random length (none, minutes, days) through the ledger's own life cycle:
    closed, closed by reconcile at their last checkpoint, failed, and still running."""
    from datetime import UTC, datetime

    from afhub.quotas.limits import Charge

    def at(ts):
        return datetime.fromtimestamp(ts, UTC)

    for group in ("atlas", "cms"):
        stores.groups.create(group)
        for user in ("ann", "bob", "cy", "dee"):
            stores.groups.add_member(group, user)
    ids = []
    for i in range(60):
        kind = rng.choice(["server", "server", "fit", "dask"])
        charge = Charge(
            kind,
            cpu_cores=rng.choice([1.0, 2.5, 8.0]),
            gpus=rng.choice([0, 0, 1, 4]),
            resource=rng.choice(["r1", "r2", "r3"]),
        )
        start = NOW - rng.choice([300, 40, 3, 1]) * DAY * rng.random()
        stop = start + rng.choice([0.0, 600.0, 5 * HOUR, 3 * DAY]) * rng.random()
        user, group = rng.choice(["ann", "bob", "cy", "dee"]), rng.choice(["atlas", "cms"])
        admitted = stores.ledger.admit(
            user=user, charge=charge, group=group, server_name=f"s{i}", now=at(start)
        )
        ids.append(admitted.interval_id)
        if i % 10 == 9:
            continue  # failed: never started
        stores.ledger.mark_running(admitted.interval_id, at=at(start))
        if kind == "dask":  # closed by the reconcile below, at its last checkpoint
            stores.ledger.checkpoint(now=at(min(stop, NOW - HOUR)))
        elif stop < NOW - HOUR and i % 7:
            stores.ledger.close(admitted.interval_id, at=at(stop))
    stores.ledger.reconcile([], now=at(NOW), kind="dask")
    for interval_id in ids[9::10]:
        stores.ledger.fail(interval_id)
    return [stores.ledger.get(i) for i in ids]


def _direct_sums(infos, period, bucket):
    """The report summed in Python straight from the ledger's intervals."""
    from collections import defaultdict

    from afhub.stores.ledger.rollup import split_at

    sums = defaultdict(lambda: [0.0, 0.0, set(), 0])
    timeline = defaultdict(lambda: [0.0, 0.0])
    for info in infos:
        if info.state not in ("running", "closed"):
            continue
        start = info.start.timestamp()
        stop = info.stop.timestamp() if info.stop else period.now
        if not (start < period.until and (info.stop is None or stop > period.since)):
            continue
        lo, hi = max(start, period.since), min(stop, period.until)
        for key in (("resource", info.resource), ("group", info.resource, info.group)):
            sums[key][2].add(info.user)
            sums[key][3] += info.kind == "fit"
        for slot, seconds in split_at(lo, hi, DAY):
            for key in (
                ("resource", info.resource),
                ("group", info.resource, info.group),
                ("user", info.user),
            ):
                sums[key][0] += info.gpus * seconds / HOUR
                sums[key][1] += info.cpu_cores * seconds / HOUR
            cell = timeline[(info.resource, int(slot // bucket * bucket))]
            cell[0] += info.gpus * seconds / HOUR
            cell[1] += info.cpu_cores * seconds / HOUR
    return sums, timeline


@pytest.mark.parametrize("seed", [1, 2])
def test_rollup_report_equals_a_direct_sum_over_the_ledger(stores, seed):
    import random

    rng = random.Random(seed)
    infos = _random_ledger(stores, rng)
    store = ContributionStore(stores.db)
    periods = [
        (NOW - 365 * DAY, NOW, 7 * DAY),  # whole weeks, days and both partial days
        (NOW - 30 * DAY, NOW + 2 * DAY, DAY),  # until after now: running charges end now
        (NOW // DAY * DAY - 3 * DAY, NOW // DAY * DAY, DAY),  # midnight to midnight
        (NOW - 1.5 * DAY, NOW - 1.2 * DAY, DAY),  # inside one day
        (NOW - 2.6 * DAY - rng.random() * DAY, NOW - 0.3 * DAY, DAY),  # over one midnight
    ]
    approx = pytest.approx
    for since, until, bucket in periods:
        period = Period(since, until, NOW)
        report = store.report(["r1", "r2", "r3"], period, top=100, bucket=bucket)
        sums, timeline = _direct_sums(infos, period, bucket)
        got = {("resource", r["resource"]): r for r in report["resources"]}
        got |= {("group", g["resource"], g["group"]): g for g in report["groups"]}
        got |= {("user", u["user"]): u for u in report["top_users"]}
        assert set(got) == set(sums), (since, until)
        for key, (gpu, cores, users, fits) in sums.items():
            row = got[key]
            assert (row["gpu_hours"], row["core_hours"]) == approx((gpu, cores), abs=2e-3), key
            if key[0] != "user":
                assert row["distinct_users"] == len(users), key
            if key[0] == "resource":
                assert row["fits"] == fits, key
        got_timeline = {
            (t["resource"], t["start"]): (t["gpu_hours"], t["core_hours"])
            for t in report["timeline"]
            if t["gpu_hours"] or t["core_hours"]
        }
        expected = {k: v for k, v in timeline.items() if round(v[0], 3) or round(v[1], 3)}
        assert set(got_timeline) == set(expected), (since, until)
        for key, value in expected.items():
            assert got_timeline[key] == approx(value, abs=2e-3), key
        totals = store.totals(["r1", "r2", "r3"], period)
        assert totals["distinct_users"] == len(
            set().union(*(v[2] for k, v in sums.items() if k[0] == "resource"))
        )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_report_settings_hold_for_the_report_only(stores):
    """PostgreSQL: the report's work_mem and JIT settings are its transaction's (SET LOCAL),
    never left on the pooled connection for the next query, even by a transaction that
    commits (a plain SET would be)."""
    from sqlalchemy import text

    from afhub.stores.contributions import REPORT_SETTINGS

    store = ContributionStore(stores.db)
    with stores.db.read() as session:
        pid = session.scalar(text("SELECT pg_backend_pid()"))
        before = {name: session.scalar(text(f"SHOW {name}")) for name in REPORT_SETTINGS}
    assert before != REPORT_SETTINGS
    with stores.db.write() as session:
        assert session.scalar(text("SELECT pg_backend_pid()")) == pid
        store._settings(session)
        inside = {name: session.scalar(text(f"SHOW {name}")) for name in REPORT_SETTINGS}
    assert inside == REPORT_SETTINGS
    with stores.db.read() as session:
        assert session.scalar(text("SELECT pg_backend_pid()")) == pid
        after = {name: session.scalar(text(f"SHOW {name}")) for name in REPORT_SETTINGS}
    assert after == before
