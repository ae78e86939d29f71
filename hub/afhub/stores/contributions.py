"""What contributed resources delivered: the ledger aggregated by resource, group, user and
day, in SQL (``GROUP BY``), for the contributions dashboard and its REST resource.

A charge counts for the part of its run that lies inside the period: from
``max(start_ts, since)`` to ``min(stop_ts or now, until)``. The timeline's buckets (UTC days,
or weeks from the epoch) hold the seconds delivered inside them: a charge that runs past
midnight counts in both days. A charge (and a fit) is counted once, in the period's first
span it ran in.

Where the sums come from (one ``UNION ALL`` of pieces, summed in SQL):

- whole days inside the period, and whole weeks when the buckets are weeks: the
  contribution rollup (:class:`ContributionRollup`), written when a charge closes;
- the partial days at the period's edges: the closed charges of those days, read from the
  ledger by ``(resource, start_ts)`` from the earliest start the rollup keeps for that day;
- running charges: the ledger, cut at UTC midnights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    text,
    union_all,
)

from afhub.stores.database import Database
from afhub.stores.models import (
    CLOSED,
    RUNNING,
    ContributionRollup,
    LedgerInterval,
    ProviderRow,
    User,
)

DAY = 86400.0
WEEK = 7 * DAY
#: the ledger kind of a fit job's charge
FIT_KIND = "fit"
#: PostgreSQL settings of a report's transaction (``SET LOCAL``): a year of 1,000 users'
#: weekly rollup rows (about 220,000) are grouped by user in memory within 32 MB, where the
#: default 4 MB sorts them on disk (0.39 s of the query, 0.11 s in memory); compiling the
#: query (JIT, about 65 ms) costs more than it saves on a query this short
REPORT_SETTINGS = {"work_mem": "64MB", "jit": "off"}


@dataclass(frozen=True)
class Period:
    """``[since, until)`` in seconds since the epoch; ``now`` ends charges still running."""

    since: float
    until: float
    now: float


@dataclass(frozen=True)
class Cuts:
    """How a period is read: ``[since, day_lo)`` and ``[day_hi, until)`` are partial days
    (the ledger); ``[week_lo, week_hi)`` whole weeks and the rest of ``[day_lo, day_hi)``
    whole days (the rollup)."""

    day_lo: float
    week_lo: float
    week_hi: float
    day_hi: float

    @classmethod
    def of(cls, period: Period, weeks: bool) -> Cuts:
        """The cuts of ``period``; whole weeks only when ``weeks`` (weekly buckets)."""
        day_lo, day_hi = -(-period.since // DAY) * DAY, period.until // DAY * DAY
        if day_lo > day_hi:  # inside one day: all of it from the ledger
            day_lo = day_hi = period.until
        week_lo, week_hi = -(-day_lo // WEEK) * WEEK, day_hi // WEEK * WEEK
        if not weeks or week_lo >= week_hi:
            week_lo = week_hi = day_hi
        return cls(day_lo, week_lo, week_hi, day_hi)


def _greatest(a, b):
    return case((a > b, a), else_=b)


def _least(a, b):
    return case((a < b, a), else_=b)


def _piece(ledger, low, high, *, fits=None):
    """The columns of one piece of a ledger charge: ``[low, high)`` of it, its fit counted
    where ``fits`` (always when ``None``)."""
    seconds = case((high > low, high - low), else_=literal(0.0))
    counted = ledger.kind == FIT_KIND if fits is None else and_(ledger.kind == FIT_KIND, fits)
    return (
        ledger.resource.label("resource"),
        ledger.group_path.label("group_path"),
        ledger.user_name.label("user_name"),
        low.label("ts"),
        (seconds * ledger.gpus).label("gpu_seconds"),
        (seconds * ledger.cpu_cores).label("core_seconds"),
        case((counted, 1), else_=0).label("fits"),
    )


def _closed(ledger):
    """``state = 'closed'``, written so that no planner picks the ledger's state index for
    it: the ``(resource, start_ts)`` index is the narrow one here, and SQLite (no
    statistics) would otherwise read every closed charge."""
    return func.coalesce(ledger.state, "") == CLOSED


class _Pieces:
    """The SQL of the pieces a period's sums are made of (see the module's docstring)."""

    def __init__(self, db: Database, session, resources: Sequence[str], period: Period):
        self.db, self.session = db, session
        self.resources, self.period = list(resources), period

    def select(self, bucket: float):
        cuts = Cuts.of(self.period, weeks=bucket % WEEK == 0)
        parts = [
            self._rollup(7, cuts.week_lo, cuts.week_hi),
            self._rollup(1, cuts.day_lo, cuts.week_lo),
            self._rollup(1, cuts.week_hi, cuts.day_hi),
            self._running(),
        ]
        parts += self._edges(cuts)
        return union_all(*parts).subquery("pieces")

    def _rollup(self, days: int, lo: float, hi: float):
        """Rollup rows of ``days`` whose span starts in ``[lo, hi)`` (whole numbers: a
        float bound would make PostgreSQL compare as numeric, past the index)."""
        r, lo, hi = ContributionRollup, math.ceil(lo), math.ceil(hi)
        columns = (r.resource, r.group_path, r.user_name, r.start_ts.label("ts"))
        return select(*columns, r.gpu_seconds, r.core_seconds, r.fits).where(
            r.span_days == days, r.resource.in_(self.resources), r.start_ts >= lo, r.start_ts < hi
        )

    def _first_start(self, day: float) -> float | None:
        """The earliest start of the closed charges that ran on ``day`` (their rollup)."""
        r = ContributionRollup
        return self.session.scalar(
            select(func.min(r.first_start_ts)).where(
                r.span_days == 1, r.resource.in_(self.resources), r.start_ts == int(day)
            )
        )

    def _edges(self, cuts: Cuts) -> list:
        """Closed charges in the partial days: from ``since`` to the first midnight (those
        that began before it are counted here), and from the last midnight to ``until``
        (counted when they began after it)."""
        ledger, period, parts = LedgerInterval, self.period, []
        edges = [(period.since, cuts.day_lo, False), (cuts.day_hi, period.until, True)]
        for lo, hi, after in edges:
            # the first edge is read even when empty: it counts the charges running at since
            first = None if after and lo >= hi else self._first_start(lo // DAY * DAY)
            if first is None:
                continue
            start = ledger.start_ts
            parts.append(
                select(
                    *_piece(
                        ledger,
                        _greatest(start, literal(lo)),
                        _least(ledger.stop_ts, literal(hi)),
                        fits=start >= lo if after else None,
                    )
                ).where(
                    _closed(ledger),
                    ledger.resource.in_(self.resources),
                    start >= first,
                    start < hi,
                    ledger.stop_ts > lo,
                )
            )
        return parts

    def _running(self):
        """Running charges from ``max(start, since)`` to ``min(now, until)``, cut at UTC
        midnights (a recursive query over the few running rows)."""
        ledger, period = LedgerInterval, self.period
        low = _greatest(ledger.start_ts, literal(period.since))
        high = literal(min(period.now, period.until))
        runs = (
            select(ledger.id.label("id"), low.label("t"), high.label("t1"))
            .where(
                ledger.state == RUNNING,
                ledger.resource.in_(self.resources),
                ledger.start_ts.is_not(None),
                ledger.start_ts < period.until,
            )
            .cte("runs", recursive=True)
        )
        midnight = cast((self.floor(runs.c.t / DAY) + 1) * int(DAY), Float)
        runs = runs.union_all(select(runs.c.id, midnight, runs.c.t1).where(midnight < runs.c.t1))
        midnight = cast((self.floor(runs.c.t / DAY) + 1) * int(DAY), Float)
        return select(
            *_piece(
                ledger,
                runs.c.t,
                _least(runs.c.t1, midnight),
                fits=runs.c.t == low,
            )
        ).join_from(runs, ledger, ledger.id == runs.c.id)

    def floor(self, value):
        """SQL: ``floor(value)`` as an integer (CAST truncates on SQLite, where the times
        are after the epoch, and rounds on PostgreSQL)."""
        if self.db.is_sqlite:
            return cast(value, BigInteger)
        return cast(func.floor(value), BigInteger)


class _Sums:
    """GPU-hours and core-hours (the last two columns of every row) of the pieces, grouped
    as each query asks."""

    def __init__(self, pieces) -> None:
        self.pieces = p = pieces
        self.gpu = func.sum(p.c.gpu_seconds) / 3600.0
        self.cores = func.sum(p.c.core_seconds) / 3600.0
        self.users = func.count(func.distinct(p.c.user_name))
        self.fits = func.sum(p.c.fits)

    def rows(self, session, names, columns, *, group_by, order_by=(), limit=None):
        """``SELECT columns, gpu, cores ... GROUP BY group_by`` as dicts keyed by
        ``names`` plus ``gpu_hours`` and ``core_hours``."""
        query = select(*columns, self.gpu, self.cores).group_by(*group_by)
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

    def _settings(self, session) -> None:
        """:data:`REPORT_SETTINGS` for the rest of ``session``'s transaction (PostgreSQL)."""
        if self.db.is_postgresql:
            for name, value in REPORT_SETTINGS.items():
                session.execute(text(f"SET LOCAL {name} = '{value}'"))

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
        group, the ``top`` users, and per resource and time bucket of ``bucket`` seconds, a
        whole number of days (``timeline``: each bucket's ``start``, seconds since the
        epoch)."""
        if bucket <= 0 or bucket % DAY:
            raise ValueError("a timeline bucket is a whole number of days")
        if not resources:
            return {"resources": [], "groups": [], "top_users": [], "timeline": []}
        with self.db.read() as session:
            self._settings(session)
            pieces = _Pieces(self.db, session, resources, period)
            by_bucket = _Sums(pieces.select(bucket))
            b = by_bucket.pieces.c
            slot = pieces.floor(b.ts / bucket)
            return {
                # whole weeks wherever they fit, except for a timeline of days
                **_per_user_parts(session, pieces.select(WEEK), top),
                "timeline": [
                    {**row, "start": int(row["start"]) * int(bucket)}
                    for row in by_bucket.rows(
                        session,
                        ("resource", "start"),
                        [b.resource, slot],
                        group_by=[b.resource, slot],
                        order_by=[slot, b.resource],
                    )
                ],
            }

    def totals(self, resources: Sequence[str], period: Period) -> dict[str, Any]:
        """One row over all of ``resources``: GPU-hours, core-hours, fits and the users
        counted once however many resources they used (a sum of the per-resource counts
        would count them again)."""
        if not resources:
            return {"distinct_users": 0, "fits": 0, "gpu_hours": 0.0, "core_hours": 0.0}
        with self.db.read() as session:
            self._settings(session)
            sums = _Sums(_Pieces(self.db, session, resources, period).select(WEEK))
            rows = sums.rows(
                session, ("distinct_users", "fits"), [sums.users, sums.fits], group_by=[]
            )
            return rows[0]


#: the parts of a report made from the per-user sums, in the order of their rows
PARTS = ("resources", "groups", "top_users")
#: each part's keys (before its hours), and the statement's column of a key named otherwise
SHOWN = {
    "resources": ("resource", "distinct_users", "fits"),
    "groups": ("resource", "group", "distinct_users"),
    "top_users": ("user",),
}
COLUMN = {"group": "group_path", "user": "user_name"}


def _per_user_parts(session, pieces, top: int) -> dict[str, list[dict[str, Any]]]:
    """The report's ``resources``, ``groups`` and ``top_users`` in one statement: the pieces
    are summed once per resource, group and user (a few thousand rows where the pieces are
    hundreds of thousands), and the three parts are sums of those sums."""
    p = pieces.c
    per_user = (
        select(
            p.resource,
            p.group_path,
            p.user_name,
            func.sum(p.gpu_seconds).label("gpu_seconds"),
            func.sum(p.core_seconds).label("core_seconds"),
            func.sum(p.fits).label("fits"),
        )
        .group_by(p.resource, p.group_path, p.user_name)
        .cte("per_user")
    )
    u = per_user.c
    # typed NULLs: PostgreSQL types a bare NULL in a subquery as text
    none, no_count = cast(null(), String), cast(null(), BigInteger)
    users, fits = func.count(func.distinct(u.user_name)), func.sum(u.fits)
    gpu, cores = func.sum(u.gpu_seconds), func.sum(u.core_seconds)

    def part(index: int, resource, group, user, *, n_users=no_count, n_fits=no_count):
        return (
            literal(index).label("part"),
            resource.label("resource"),
            group.label("group_path"),
            user.label("user_name"),
            n_users.label("distinct_users"),
            n_fits.label("fits"),
            gpu.label("gpu_seconds"),
            cores.label("core_seconds"),
        )

    top_users = (
        select(*part(2, none, none, u.user_name))
        .group_by(u.user_name)
        .order_by((gpu + cores).desc(), u.user_name)
        .limit(top)
        .subquery("top")
    )
    statement = union_all(
        select(*part(0, u.resource, none, none, n_users=users, n_fits=fits)).group_by(u.resource),
        select(*part(1, u.resource, u.group_path, none, n_users=users)).group_by(
            u.resource, u.group_path
        ),
        select(top_users),
    )
    return _read_parts(session, statement)


def _read_parts(session, statement) -> dict[str, list[dict[str, Any]]]:
    """The rows of :func:`_per_user_parts`'s statement, each as its part shows it."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in PARTS}
    for row in session.execute(statement).mappings():
        name = PARTS[row["part"]]
        shown = {key: row[COLUMN.get(key, key)] for key in SHOWN[name]}
        for key in ("distinct_users", "fits"):
            if key in shown:
                shown[key] = int(shown[key] or 0)
        shown.update(
            gpu_hours=_num(float(row["gpu_seconds"] or 0.0) / 3600.0),
            core_hours=_num(float(row["core_seconds"] or 0.0) / 3600.0),
        )
        found[name].append(shown)
    found["resources"].sort(key=lambda r: r["resource"])
    found["groups"].sort(key=lambda r: (r["resource"], r["group"]))
    return found


def _contacts(entry_json: str) -> set[str]:
    contacts = json.loads(entry_json).get("contacts") or []
    return {str(c).strip().lower() for c in contacts}


def _num(value: Any) -> float:
    return round(float(value or 0.0), 3)
