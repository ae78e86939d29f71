"""The registry and ledger of the dashboards' tests: two providers, their resources, and
closed charges on them in the last days (written straight into the facility database, and
folded into the contribution rollup as closing them would)."""

from __future__ import annotations

import time

from afhub.stores.facade import Stores
from afhub.stores.ledger.rollup import add_contributions
from afhub.stores.models import CLOSED, LedgerInterval

HOUR = 3600.0
PROVIDERS = {
    "alpha": {"name": "alpha", "institution": "Alpha <b>University</b>", "contacts": []},
    "beta": {
        "name": "beta",
        "institution": "Beta <i>Lab</i>",
        "contacts": ["ops@beta.example"],
        "public_report": "aggregate",
    },
}


def resource(name: str, provider: str, kind: str) -> dict:
    entry = {
        "name": name,
        "provider": provider,
        "site": f"{provider} site",
        "kind": kind,
        "cpu_per_node": 32,
        "memory_per_node": "128Gi",
        "node_count": 2,
        "image": "quay.io/jupyter/base-notebook:2026-01-01",
        "allowed_groups": [],
    }
    if kind == "gpu":
        entry.update(
            accelerator="NVIDIA A100",
            count_per_node=4,
            extended_resource="nvidia.com/gpu",
        )
    return entry


RESOURCES = [
    resource("alpha-gpu", "alpha", "gpu"),
    resource("alpha-cpu", "alpha", "cpu"),
    resource("beta-cpu", "beta", "cpu"),
]


def charges(now: float) -> list[dict]:
    """(user, group, resource, kind, cores, gpus, start, hours) of the seeded charges."""
    day = 24 * HOUR
    rows = [
        ("ann", "atlas", "alpha-gpu", "server", 8.0, 2, now - 3 * day, 5.0),
        ("bob", "atlas", "alpha-gpu", "server", 8.0, 1, now - 2 * day, 2.0),
        ("ann", "cms", "alpha-cpu", "server", 4.0, 0, now - 1 * day, 10.0),
        ("<script>x</script>", "cms", "alpha-cpu", "fit", 2.0, 0, now - 1 * day, 1.0),
        ("carl", "atlas", "beta-cpu", "server", 16.0, 0, now - 2 * day, 3.0),
        # long before the month: outside every period but the year
        ("dora", "atlas", "alpha-cpu", "server", 1.0, 0, now - 200 * day, 4.0),
    ]
    keys = ("user_name", "group_path", "resource", "kind", "cpu_cores", "gpus", "start", "hours")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def seed_ledger(db_url: str, now: float | None = None) -> list[dict]:
    now = now or time.time()
    rows = charges(now)
    stores = Stores.open(db_url, migrate=False)
    try:
        with stores.db.write() as session:
            charged = [
                LedgerInterval(
                    user_name=r["user_name"],
                    group_path=r["group_path"],
                    kind=r["kind"],
                    resource=r["resource"],
                    server_name="",
                    cpu_cores=r["cpu_cores"],
                    gpus=r["gpus"],
                    state=CLOSED,
                    admitted_ts=r["start"],
                    start_ts=r["start"],
                    stop_ts=r["start"] + r["hours"] * HOUR,
                    checkpoint_ts=r["start"] + r["hours"] * HOUR,
                )
                for r in rows
            ]
            session.add_all(charged)
            add_contributions(session, charged)
    finally:
        stores.close()
    return rows
