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
