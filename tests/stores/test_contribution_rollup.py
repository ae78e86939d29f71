"""The contribution rollup: migration 0006 backfills it from the closed charges already in
the ledger, in SQL, exactly as closing those charges one by one folds them in (SQLite, and
PostgreSQL when AFHUB_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, insert, select

from afhub.stores.database import Database
from afhub.stores.ledger.rollup import add_contributions
from afhub.stores.migrate import downgrade, upgrade
from afhub.stores.models import ContributionRollup, LedgerInterval
from tests.support.databases import POSTGRES_SKIP_REASON, postgres_database, postgres_server_url

DAY = 86400.0
T0 = 1_767_225_600.0 + 9 * 3600  # 2026-01-01 09:00 UTC (a Thursday: weeks start then)


def _charge(user, resource, kind, start, hours, state="closed", cores=2.0, gpus=1):
    stop = None if state == "running" else start + hours * 3600
    return {
        "user_name": user,
        "group_path": "atlas/higgs",
        "kind": kind,
        "resource": resource,
        "server_name": "",
        "cpu_cores": cores,
        "gpus": gpus,
        "state": state,
        "admitted_ts": start,
        "start_ts": start,
        "stop_ts": stop,
        "checkpoint_ts": stop or start,
        "note": "",
    }


CHARGES = [
    _charge("ann", "gpu", "server", T0, 2.0),
    _charge("ann", "gpu", "fit", T0 + 3600, 0.5),
    _charge("ann", "gpu", "server", T0 + 10 * 3600, 30.0),  # over two midnights
    _charge("bob", "gpu", "server", T0 - 3 * DAY, 24 * 9.5, cores=8.0, gpus=4),  # 2 weeks
    _charge("bob", "cpu", "fit", T0 + DAY, 0.0, gpus=0),  # no length: counted, no seconds
    _charge("cy", "cpu", "server", T0, 5.0, state="running"),  # not in the rollup yet
    _charge("cy", "cpu", "server", T0, 5.0, state="failed"),
]


def _rollup(db: Database) -> dict[tuple, tuple]:
    r = ContributionRollup
    with db.read() as session:
        rows = session.execute(select(r)).scalars()
        return {
            (x.span_days, x.resource, x.start_ts, x.group_path, x.user_name): (
                pytest.approx(x.core_seconds),
                pytest.approx(x.gpu_seconds),
                x.charges,
                x.fits,
                x.first_start_ts,
            )
            for x in rows
        }


def _backfilled_as_closing_folds(url: str) -> None:
    upgrade(url)
    downgrade(url, "0005_identities")
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(insert(LedgerInterval.__table__), CHARGES)
    upgrade(url)
    backfilled = _rollup(db)
    with db.write() as session:
        session.execute(delete(ContributionRollup))
        add_contributions(session, list(session.scalars(select(LedgerInterval))))
    folded = _rollup(db)
    db.dispose()
    assert backfilled == folded
    days = {key[2] for key in folded if key[0] == 1 and key[4] == "bob" and key[1] == "gpu"}
    assert len(days) == 10  # 9.5 days from 09:00: ten calendar days
    assert sum(v[2] for k, v in folded.items() if k[0] == 7) == 5  # each closed charge once
    assert "cy" not in {k[4] for k in folded}  # running and failed: not (yet) delivered
    assert len(folded) > 15


def test_migration_backfills_the_rollup_on_sqlite(tmp_path):
    _backfilled_as_closing_folds(f"sqlite:///{tmp_path / 'old.sqlite'}")


def test_migration_backfills_the_rollup_on_postgresql():
    server = postgres_server_url()
    if server is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    with postgres_database(server) as url:
        _backfilled_as_closing_folds(url)
