"""What contributed resources delivered: the ledger aggregated by resource, group, user and
day, in SQL (``GROUP BY``), for the contributions dashboard and its REST resource.

A charge counts for the part of its run that lies inside the period: from
``max(start_ts, since)`` to ``min(stop_ts or now, until)``. The timeline's buckets (UTC days,
or weeks from the epoch) hold a charge by that clipped start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, case, cast, func, literal, or_, select

from afhub.stores.database import Database
from afhub.stores.models import CLOSED, RUNNING, LedgerInterval, ProviderRow, User

DAY = 86400.0
#: the ledger kind of a fit job's charge
FIT_KIND = "fit"


@dataclass(frozen=True)
class Period:
    """``[since, until)`` in seconds since the epoch; ``now`` ends charges still running."""

    since: float
    until: float
    now: float


def _clipped_seconds(period: Period):
    """SQL: seconds of a charge inside the period (0 when it lies outside)."""
    ledger = LedgerInterval
    low = case((ledger.start_ts > period.since, ledger.start_ts), else_=literal(period.since))
    end = func.coalesce(ledger.stop_ts, literal(period.now))
    high = case((end < period.until, end), else_=literal(period.until))
    return low, case((high > low, high - low), else_=literal(0.0))


def _overlapping(resources: Sequence[str], period: Period) -> list:
    """SQL ``WHERE``: charges on ``resources`` that ran at some time inside the period."""
    ledger = LedgerInterval
    return [
        ledger.resource.in_(list(resources)),
        ledger.state.in_((RUNNING, CLOSED)),
        ledger.start_ts.is_not(None),
        ledger.start_ts < period.until,
        or_(ledger.stop_ts.is_(None), ledger.stop_ts > period.since),
    ]


class _Sums:
    """The SQL of one report: GPU-hours and core-hours inside the period (the last two
    columns of every row), grouped as each query asks."""

    def __init__(self, period: Period, resources: Sequence[str]) -> None:
        ledger = LedgerInterval
        self.low, seconds = _clipped_seconds(period)
        self.where = _overlapping(resources, period)
        self.gpu = func.sum(seconds * ledger.gpus) / 3600.0
        self.cores = func.sum(seconds * ledger.cpu_cores) / 3600.0
        self.weight = func.sum(seconds * (ledger.gpus + ledger.cpu_cores))
        self.users = func.count(func.distinct(ledger.user_name))
        self.fits = func.sum(case((ledger.kind == FIT_KIND, 1), else_=0))

    def rows(self, session, names, columns, *, group_by, order_by=(), limit=None):
        """``SELECT columns, gpu, cores ... GROUP BY group_by`` as dicts keyed by
        ``names`` plus ``gpu_hours`` and ``core_hours``."""
        query = select(*columns, self.gpu, self.cores).where(*self.where).group_by(*group_by)
        if order_by:
            query = query.order_by(*order_by)
        if limit is not None:
            query = query.limit(limit)
        found = []
        for *values, gpu, cores in session.execute(query).all():
            row = dict(zip(names, values, strict=True))
            row.update(gpu_hours=_num(gpu), core_hours=_num(cores))
            for key in ("distinct_users", "fits"):
                if key in row:
                    row[key] = int(row[key] or 0)
            found.append(row)
        return found


class ContributionStore:
    """Aggregates of the ledger over a provider's resources."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def providers_of(self, user_name: str) -> list[str]:
        """The providers whose registry ``contacts`` name this user, by user name or by the
        email the facility knows for them (case-insensitive)."""
        with self.db.read() as session:
            email = session.scalar(select(User.email).where(User.name == user_name))
            names = {user_name.lower(), *([email.lower()] if email else [])}
            found = []
            for row in session.scalars(select(ProviderRow).order_by(ProviderRow.position)):
                contacts = _contacts(row.entry)
                if names & contacts:
                    found.append(row.name)
            return found

    def report(
        self, resources: Sequence[str], period: Period, *, top: int = 10, bucket: float = DAY
    ) -> dict[str, Any]:
        """Delivered hours on ``resources`` in ``period``: per resource, per resource and
        group, the ``top`` users, and per resource and time bucket of ``bucket`` seconds
        (``timeline``: each bucket's ``start``, seconds since the epoch)."""
        if not resources:
            return {"resources": [], "groups": [], "top_users": [], "timeline": []}
        sums = _Sums(period, resources)
        day = self._bucket(sums.low, bucket)
        with self.db.read() as session:
            return {
                "resources": sums.rows(
                    session,
                    ("resource", "distinct_users", "fits"),
                    [LedgerInterval.resource, sums.users, sums.fits],
                    group_by=[LedgerInterval.resource],
                ),
                "groups": sums.rows(
                    session,
                    ("resource", "group", "distinct_users"),
                    [LedgerInterval.resource, LedgerInterval.group_path, sums.users],
                    group_by=[LedgerInterval.resource, LedgerInterval.group_path],
                ),
                "top_users": sums.rows(
                    session,
                    ("user",),
                    [LedgerInterval.user_name],
                    group_by=[LedgerInterval.user_name],
                    order_by=[sums.weight.desc(), LedgerInterval.user_name],
                    limit=top,
                ),
                "timeline": [
                    {**row, "start": int(row["start"]) * int(bucket)}
                    for row in sums.rows(
                        session,
                        ("resource", "start"),
                        [LedgerInterval.resource, day],
                        group_by=[LedgerInterval.resource, day],
                        order_by=[day, LedgerInterval.resource],
                    )
                ],
            }

    def totals(self, resources: Sequence[str], period: Period) -> dict[str, Any]:
        """One row over all of ``resources``: GPU-hours, core-hours, fits and the users
        counted once however many resources they used (a sum of the per-resource counts
        would count them again)."""
        if not resources:
            return {"distinct_users": 0, "fits": 0, "gpu_hours": 0.0, "core_hours": 0.0}
        sums = _Sums(period, resources)
        with self.db.read() as session:
            rows = sums.rows(
                session, ("distinct_users", "fits"), [sums.users, sums.fits], group_by=[]
            )
            return rows[0]

    def _bucket(self, low, bucket: float):
        """SQL: the number of the ``bucket``-long slice of time holding ``low`` (floor;
        CAST truncates on SQLite, rounds on PostgreSQL)."""
        if self.db.is_sqlite:
            return cast(low / bucket, Integer)
        return cast(func.floor(low / bucket), Integer)


def _contacts(entry_json: str) -> set[str]:
    contacts = json.loads(entry_json).get("contacts") or []
    return {str(c).strip().lower() for c in contacts}


def _num(value: Any) -> float:
    return round(float(value or 0.0), 3)
