"""The usage ledger and quota admission.

Every charge (a server, a Dask cluster, a fit job) is one :class:`LedgerInterval`:
``admit`` decides and opens it atomically (``pending``: holds its slot), ``mark_running``
starts the clock, ``close`` stops it, ``fail`` drops a charge that never started (a failed
spawn is never charged). ``checkpoint`` folds running usage into the hourly rollup
(:class:`UsageHourly`) of the charged group and every ancestor, so that a hub crash loses at
most one checkpoint interval; ``reconcile`` squares open intervals with the servers the hub
sees at start.

Quota decisions read: the chain (closure table), the chain's limits, hourly rollups in each
node's window (at most ~750 index rows per node for a month), and open intervals in the
chain's subtrees (few). Cost does not grow with the ledger's length.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Float, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from afhub.groups import tree
from afhub.quotas.decisions import (
    Decision,
    EnforcementAction,
    NodeState,
    OverBudget,
    decide,
    exhausted_budgets,
    plan_enforcement,
)
from afhub.quotas.limits import Charge, Holdings, Limits, Usage
from afhub.quotas.periods import DEFAULT_PERIOD, parse_period
from afhub.stores.database import Database
from afhub.stores.errors import LedgerConflict, NotFound, StoreError
from afhub.stores.groups import group_row, resolve_charge_group_in
from afhub.stores.models import GroupClosure, LedgerInterval, Quota, UsageHourly

HOUR = 3600
PENDING, RUNNING, CLOSED, FAILED = "pending", "running", "closed", "failed"
OPEN_STATES = (PENDING, RUNNING)


def to_ts(at: datetime) -> float:
    if at.tzinfo is None:
        raise ValueError("instants must be timezone-aware (use datetime.now(UTC))")
    return at.timestamp()


def from_ts(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class QuotaExceeded(StoreError):
    """The admission was refused; ``decision`` has every refusal, ``str()`` the first."""

    status = 403

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision


@dataclass(frozen=True)
class IntervalInfo:
    id: int
    user: str
    group: str
    kind: str
    resource: str
    server_name: str
    cpu_cores: float
    gpus: int
    state: str
    admitted_at: datetime
    start: datetime | None
    stop: datetime | None
    checkpoint: datetime | None
    note: str

    def hours(self, since: datetime | None = None, until: datetime | None = None) -> float:
        """Hours this interval ran within ``[since, until)`` (``until``: now when running)."""
        if self.start is None or self.state == FAILED:
            return 0.0
        stop = self.stop or until or datetime.now(UTC)
        lo = max(self.start, since) if since else self.start
        hi = min(stop, until) if until else stop
        return max(0.0, (hi - lo).total_seconds() / HOUR)

    def to_dict(self) -> dict[str, object]:
        def iso(at):
            return at.isoformat() if at else None

        return {
            "id": self.id,
            "user": self.user,
            "group": self.group,
            "kind": self.kind,
            "resource": self.resource,
            "server_name": self.server_name,
            "cpu_cores": self.cpu_cores,
            "gpus": self.gpus,
            "state": self.state,
            "admitted_at": iso(self.admitted_at),
            "start": iso(self.start),
            "stop": iso(self.stop),
            "note": self.note,
        }


def _interval(row: LedgerInterval) -> IntervalInfo:
    return IntervalInfo(
        id=row.id,
        user=row.user_name,
        group=row.group_path,
        kind=row.kind,
        resource=row.resource,
        server_name=row.server_name,
        cpu_cores=row.cpu_cores,
        gpus=row.gpus,
        state=row.state,
        admitted_at=from_ts(row.admitted_ts),
        start=from_ts(row.start_ts),
        stop=from_ts(row.stop_ts),
        checkpoint=from_ts(row.checkpoint_ts),
        note=row.note,
    )


@dataclass(frozen=True)
class Admission:
    """An admitted charge: the ledger interval that holds its slot, and the group charged."""

    interval_id: int
    group: str
    decision: Decision


@dataclass
class ReconcileReport:
    #: running intervals whose server is gone: closed at their last checkpoint
    closed: list[int] = field(default_factory=list)
    #: pending intervals whose server never came up: failed, charged nothing
    failed: list[int] = field(default_factory=list)
    #: pending intervals whose server the hub sees running: started at admission time
    started: list[int] = field(default_factory=list)
    #: running intervals whose server still runs: kept, the next checkpoint charges the gap
    kept: list[int] = field(default_factory=list)
    #: (user, server name) the hub sees running with no open interval
    unknown: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OverBudgetInterval:
    interval: IntervalInfo
    warned_at: datetime | None
    reason: str

    def pure(self) -> OverBudget:
        return OverBudget(self.interval.id, self.warned_at, self.reason)


@dataclass(frozen=True)
class EnforcementNotice:
    """Warn or stop this running charge, because of ``reason`` (a spent budget)."""

    action: EnforcementAction
    interval: IntervalInfo
    reason: str


@dataclass(frozen=True)
class UsageReport:
    group: str
    since: datetime
    until: datetime
    cpu_core_hours: float
    gpu_hours: float
    intervals: list[IntervalInfo]

    def rows(self, now: datetime) -> list[dict[str, object]]:
        """One dict per interval (keys :data:`USAGE_COLUMNS`), with the core-hours and
        GPU-hours it charged within the report's window, up to ``now``."""
        end = min(self.until, now)
        rows = []
        for interval in self.intervals:
            hours = interval.hours(self.since, end)
            rows.append(
                {
                    **interval.to_dict(),
                    "cpu_core_hours": interval.cpu_cores * hours,
                    "gpu_hours": interval.gpus * hours,
                }
            )
        return rows


#: the columns of a usage report, in order (CSV from the API and the CLI)
USAGE_COLUMNS = (
    "id",
    "user",
    "group",
    "kind",
    "resource",
    "server_name",
    "cpu_cores",
    "gpus",
    "start",
    "stop",
    "state",
    "cpu_core_hours",
    "gpu_hours",
)


def split_by_hour(t0: float, t1: float) -> list[tuple[int, float]]:
    """``[t0, t1)`` cut at UTC hour boundaries: ``(hour_start, seconds)`` pairs."""
    pieces: list[tuple[int, float]] = []
    t = t0
    while t < t1:
        hour = int(math.floor(t / HOUR) * HOUR)
        end = min(t1, hour + HOUR)
        pieces.append((hour, end - t))
        t = end
    return pieces


def _upsert_usage(session: Session, amounts: dict[tuple[int, int], list[float]]) -> None:
    if not amounts:
        return
    values = [
        {"group_id": g, "hour_ts": h, "cpu_core_seconds": cpu, "gpu_seconds": gpu}
        for (g, h), (cpu, gpu) in sorted(amounts.items())
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(UsageHourly)
    stmt = stmt.on_conflict_do_update(
        index_elements=["group_id", "hour_ts"],
        set_={
            "cpu_core_seconds": UsageHourly.cpu_core_seconds + stmt.excluded.cpu_core_seconds,
            "gpu_seconds": UsageHourly.gpu_seconds + stmt.excluded.gpu_seconds,
        },
    )
    session.execute(stmt, values)


def _accrue(session: Session, rows: Sequence[LedgerInterval], until: float) -> None:
    """Fold each running row's usage from its checkpoint to ``until`` into the rollup of its
    group and every ancestor, and move the checkpoint."""
    group_ids = {r.group_id for r in rows if r.group_id is not None}
    ancestors: dict[int, list[int]] = defaultdict(list)
    if group_ids:
        for anc, desc in session.execute(
            select(GroupClosure.ancestor_id, GroupClosure.descendant_id).where(
                GroupClosure.descendant_id.in_(group_ids)
            )
        ):
            ancestors[desc].append(anc)
    amounts: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        t0 = row.checkpoint_ts if row.checkpoint_ts is not None else row.start_ts
        if t0 is None or until <= t0:
            continue
        if row.group_id is not None:
            for hour, seconds in split_by_hour(t0, until):
                for anc in ancestors[row.group_id]:
                    amount = amounts[(anc, hour)]
                    amount[0] += row.cpu_cores * seconds
                    amount[1] += row.gpus * seconds
        row.checkpoint_ts = until
    _upsert_usage(session, amounts)


def _limits(quota: Quota | None) -> Limits:
    if quota is None:
        return Limits()
    return Limits(
        gpu_hours=quota.gpu_hours,
        cpu_core_hours=quota.cpu_core_hours,
        max_servers=quota.max_servers,
        max_gpus=quota.max_gpus,
        max_dask_cores=quota.max_dask_cores,
        period=quota.period,
    )


# The decision's queries, as plain SQL that SQLite and PostgreSQL both run: they are on the
# hot path of every spawn, and building them with the expression language cost more than
# running them.
_LOCK_CHAIN = text(
    "SELECT g.id FROM afhub_groups g JOIN afhub_group_closure c ON c.ancestor_id = g.id "
    "WHERE c.descendant_id = :gid ORDER BY g.depth FOR UPDATE OF g"
)
_CHAIN = text(
    "SELECT g.id, g.path, q.gpu_hours, q.cpu_core_hours, q.max_servers, q.max_gpus, "
    "q.max_dask_cores, q.period "
    "FROM afhub_group_closure c JOIN afhub_groups g ON g.id = c.ancestor_id "
    "LEFT JOIN afhub_quotas q ON q.group_id = g.id "
    "WHERE c.descendant_id = :gid ORDER BY g.depth"
)
# budgets: hourly rollups in the window; the first hour of a rolling window counts pro rata
_BUDGETS = text(
    "SELECT group_id, "
    "SUM(CASE WHEN hour_ts < :ws THEN cpu_core_seconds * ((hour_ts + 3600 - :ws) / 3600.0) "
    "ELSE cpu_core_seconds END), "
    "SUM(CASE WHEN hour_ts < :ws THEN gpu_seconds * ((hour_ts + 3600 - :ws) / 3600.0) "
    "ELSE gpu_seconds END) "
    "FROM afhub_usage_hourly "
    "WHERE group_id IN :gids AND hour_ts > :first_hour_after AND hour_ts <= :last_hour "
    "GROUP BY group_id"
).bindparams(
    bindparam("gids", expanding=True),
    bindparam("ws", type_=Float),
    # integers, so that PostgreSQL compares bigint to bigint and uses the primary key
    bindparam("first_hour_after", type_=BigInteger),
    bindparam("last_hour", type_=BigInteger),
)


def _budget_params(gids: list[int], ws: float, now_ts: float) -> dict[str, object]:
    """Buckets overlapping ``[ws, now]``: hour_ts > ws - 1 h and hour_ts <= now."""
    return {
        "gids": gids,
        "ws": ws,
        "first_hour_after": math.floor(ws - HOUR),
        "last_hour": math.floor(now_ts),
    }


# holdings of open intervals, and what running ones accrued since their last checkpoint
# (inside the window)
_OPEN = text(
    "SELECT c.ancestor_id, "
    "SUM(CASE WHEN l.kind = 'server' THEN 1 ELSE 0 END), SUM(l.gpus), "
    "SUM(CASE WHEN l.kind = 'dask' THEN l.cpu_cores ELSE 0.0 END), "
    "SUM(l.cpu_cores * (CASE WHEN l.state = 'running' AND l.checkpoint_ts < :now THEN "
    ":now - CASE WHEN l.checkpoint_ts > :ws THEN l.checkpoint_ts ELSE :ws END ELSE 0.0 END)), "
    "SUM(l.gpus * (CASE WHEN l.state = 'running' AND l.checkpoint_ts < :now THEN "
    ":now - CASE WHEN l.checkpoint_ts > :ws THEN l.checkpoint_ts ELSE :ws END ELSE 0.0 END)) "
    "FROM afhub_ledger l JOIN afhub_group_closure c ON c.descendant_id = l.group_id "
    "WHERE l.state IN ('pending', 'running') AND c.ancestor_id IN :gids "
    "GROUP BY c.ancestor_id"
).bindparams(
    bindparam("gids", expanding=True),
    bindparam("ws", type_=Float),
    bindparam("now", type_=Float),
)


def chain_states(
    session: Session, group_id: int, now: datetime, *, lock: bool = False, full: bool = False
) -> list[NodeState]:
    """The charged group's chain, root first, with limits and rolled-up usage.

    With ``lock`` on PostgreSQL the chain's group rows are locked root first (``FOR
    UPDATE``) so that concurrent admissions under a common ancestor run one at a time.
    Usage is computed only where a limit needs it, unless ``full``.
    """
    now_ts = to_ts(now)
    if lock and session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK_CHAIN, {"gid": group_id}).all()
    rows = session.execute(_CHAIN, {"gid": group_id}).all()
    if not rows:
        raise NotFound(f"group id {group_id} does not exist")
    nodes = [
        (
            gid,
            path,
            Limits(
                gpu_hours=gpu_h,
                cpu_core_hours=cpu_h,
                max_servers=servers,
                max_gpus=gpus,
                max_dask_cores=dask,
                period=period or DEFAULT_PERIOD,
            ),
        )
        for gid, path, gpu_h, cpu_h, servers, gpus, dask, period in rows
    ]
    windows = {gid: parse_period(limits.period).window(now) for gid, _, limits in nodes}
    need_budget = {
        gid
        for gid, _, lim in nodes
        if full or lim.gpu_hours is not None or lim.cpu_core_hours is not None
    }
    need_holdings = {gid for gid, _, lim in nodes if full or not lim.is_unlimited()}

    by_start: dict[float, list[int]] = defaultdict(list)
    for gid in need_budget | need_holdings:
        by_start[windows[gid].start.timestamp()].append(gid)
    budget: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    holdings: dict[int, Holdings] = defaultdict(Holdings)
    for ws, gids in by_start.items():
        budget_gids = [g for g in gids if g in need_budget]
        if budget_gids:
            params = _budget_params(budget_gids, ws, now_ts)
            for gid, cpu_s, gpu_s in session.execute(_BUDGETS, params):
                budget[gid][0] += float(cpu_s or 0.0)
                budget[gid][1] += float(gpu_s or 0.0)
        params = {"gids": gids, "ws": ws, "now": now_ts}
        for anc, servers, gpus, dask, cpu_s, gpu_s in session.execute(_OPEN, params):
            holdings[anc] = Holdings(int(servers or 0), int(gpus or 0), float(dask or 0.0))
            if anc in need_budget:
                budget[anc][0] += max(0.0, float(cpu_s or 0.0))
                budget[anc][1] += max(0.0, float(gpu_s or 0.0))

    return [
        NodeState(
            path=path,
            limits=limits,
            usage=Usage(
                gpu_hours=budget[gid][1] / HOUR,
                cpu_core_hours=budget[gid][0] / HOUR,
                holdings=holdings[gid],
            ),
        )
        for gid, path, limits in nodes
    ]


_EXISTING = text(
    "SELECT id FROM afhub_ledger WHERE user_name = :user AND kind = :kind "
    "AND server_name = :server AND state IN ('pending', 'running')"
)
_DEFAULT_TARGET = text(
    "SELECT g.id, g.path FROM afhub_users u JOIN afhub_groups g ON g.id = u.default_group_id "
    "WHERE u.name = :name"
)


def _charge_target(session: Session, user: str, group: str | None) -> tuple[int, str]:
    """(id, path) of the group to charge; the common case (the default group) in one query."""
    if group is None:
        found = session.execute(_DEFAULT_TARGET, {"name": user}).first()
        if found is not None:
            return found[0], found[1]
    target = resolve_charge_group_in(session, user, group)
    return target.id, target.path


_ALL_GROUPS = text(
    "SELECT g.id, g.path, q.gpu_hours, q.cpu_core_hours, q.max_servers, q.max_gpus, "
    "q.max_dask_cores, q.period "
    "FROM afhub_groups g LEFT JOIN afhub_quotas q ON q.group_id = g.id ORDER BY g.path"
)


def all_group_states(session: Session, now: datetime) -> list[NodeState]:
    """Every group with its limits and rolled-up usage (budgets in its own period), in a
    few set-wise queries: for metrics and overviews."""
    now_ts = to_ts(now)
    nodes = [
        (
            gid,
            path,
            Limits(gpu_h, cpu_h, servers, gpus, dask, period or DEFAULT_PERIOD),
        )
        for gid, path, gpu_h, cpu_h, servers, gpus, dask, period in session.execute(_ALL_GROUPS)
    ]
    by_start: dict[float, list[int]] = defaultdict(list)
    for gid, _, limits in nodes:
        by_start[parse_period(limits.period).window(now).start.timestamp()].append(gid)
    budget: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    holdings: dict[int, Holdings] = defaultdict(Holdings)
    for ws, gids in by_start.items():
        params = _budget_params(gids, ws, now_ts)
        for gid, cpu_s, gpu_s in session.execute(_BUDGETS, params):
            budget[gid][0] += float(cpu_s or 0.0)
            budget[gid][1] += float(gpu_s or 0.0)
        params = {"gids": gids, "ws": ws, "now": now_ts}
        for anc, servers, gpus, dask, cpu_s, gpu_s in session.execute(_OPEN, params):
            holdings[anc] = Holdings(int(servers or 0), int(gpus or 0), float(dask or 0.0))
            budget[anc][0] += max(0.0, float(cpu_s or 0.0))
            budget[anc][1] += max(0.0, float(gpu_s or 0.0))
    return [
        NodeState(
            path,
            limits,
            Usage(budget[gid][1] / HOUR, budget[gid][0] / HOUR, holdings[gid]),
        )
        for gid, path, limits in nodes
    ]


class LedgerStore:
    """Admission, the ledger's life cycle, checkpoints, reconciliation and reports."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _now(now: datetime | None) -> datetime:
        return now or datetime.now(UTC)

    # --- admission --------------------------------------------------------------------------

    def admit(
        self,
        *,
        user: str,
        charge: Charge,
        group: str | None = None,
        server_name: str = "",
        now: datetime | None = None,
        enforce: bool = True,
    ) -> Admission:
        """Decide whether ``user`` may start ``charge`` charged to ``group`` (default: their
        default group) and, if so, open a ``pending`` ledger interval, atomically.

        Raises :class:`QuotaExceeded` (with the decision) when refused, ``NotAMember`` when
        the user may not charge the group, :class:`LedgerConflict` when an interval is
        already open for the same (kind, user, server name). ``enforce=False`` records
        without deciding (adopting servers that already run).
        """
        now = self._now(now)
        with self.db.write() as session:
            target = _charge_target(session, user, group)
            states = chain_states(session, target[0], now, lock=True)
            key = {"user": user, "kind": charge.kind.value, "server": server_name}
            existing = session.execute(_EXISTING, key).scalar()
            if existing is not None:
                raise LedgerConflict(
                    f"{charge.kind.value} {server_name or '(default)'!s} of {user} is already "
                    f"admitted (ledger interval {existing}); stop it first"
                )
            decision = decide(states, charge, now) if enforce else Decision()
            if not decision.allowed:
                raise QuotaExceeded(decision)
            interval_id = session.execute(
                insert(LedgerInterval)
                .values(
                    user_name=user,
                    group_id=target[0],
                    group_path=target[1],
                    kind=charge.kind.value,
                    resource=charge.resource,
                    server_name=server_name,
                    cpu_cores=float(charge.cpu_cores),
                    gpus=int(charge.gpus),
                    state=PENDING,
                    admitted_ts=to_ts(now),
                    note="",
                )
                .returning(LedgerInterval.id)
            ).scalar_one()
            return Admission(interval_id, target[1], decision)

    def preview(
        self, *, user: str, charge: Charge, group: str | None = None, now: datetime | None = None
    ) -> Decision:
        """The decision ``admit`` would make now, without opening anything."""
        now = self._now(now)
        with self.db.read() as session:
            target = _charge_target(session, user, group)
            return decide(chain_states(session, target[0], now), charge, now)

    def all_states(self, now: datetime | None = None) -> list[NodeState]:
        """Every group's limits and rolled-up usage, sorted by path."""
        now = self._now(now)
        with self.db.read() as session:
            return all_group_states(session, now)

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Open intervals by (kind, state)."""
        with self.db.read() as session:
            rows = session.execute(
                select(LedgerInterval.kind, LedgerInterval.state, func.count())
                .where(LedgerInterval.state.in_(OPEN_STATES))
                .group_by(LedgerInterval.kind, LedgerInterval.state)
            )
            return {(kind, state): int(n) for kind, state, n in rows}

    def status(self, group: str, now: datetime | None = None) -> list[NodeState]:
        """``group``'s chain (root first) with limits and rolled-up usage, for display."""
        now = self._now(now)
        with self.db.read() as session:
            return chain_states(session, group_row(session, group).id, now, full=True)

    # --- life cycle -------------------------------------------------------------------------

    def _row(self, session: Session, interval_id: int) -> LedgerInterval:
        row = session.get(LedgerInterval, interval_id)
        if row is None:
            raise NotFound(f"ledger interval {interval_id} does not exist")
        return row

    def mark_running(self, interval_id: int, at: datetime | None = None) -> IntervalInfo:
        """The server (cluster, job) is up: usage accrues from ``at``."""
        at_ts = to_ts(self._now(at))
        with self.db.write() as session:
            row = self._row(session, interval_id)
            if row.state == PENDING:
                row.state = RUNNING
                row.start_ts = row.checkpoint_ts = at_ts
            elif row.state != RUNNING:
                raise LedgerConflict(f"ledger interval {interval_id} is already {row.state}")
            return _interval(row)

    def close(self, interval_id: int, at: datetime | None = None, note: str = "") -> IntervalInfo:
        """Stop charging: a running interval is charged up to ``at``; a pending one (never
        started) becomes ``failed`` and is charged nothing. Closing twice is harmless."""
        at_ts = to_ts(self._now(at))
        with self.db.write() as session:
            row = self._row(session, interval_id)
            if row.state == PENDING:
                row.state = FAILED
                row.note = (note or "never started")[:255]
            elif row.state == RUNNING:
                _accrue(session, [row], max(at_ts, row.checkpoint_ts or at_ts))
                row.state = CLOSED
                row.stop_ts = max(at_ts, row.start_ts or at_ts)
                row.note = note[:255]
            return _interval(row)

    def fail(self, interval_id: int, note: str = "spawn failed") -> IntervalInfo:
        """A spawn that failed: nothing is charged, even if it was marked running."""
        with self.db.write() as session:
            row = self._row(session, interval_id)
            if row.state in OPEN_STATES:
                if row.state == RUNNING and row.checkpoint_ts and row.start_ts:
                    # take back what a checkpoint already folded into the rollup
                    self._refund(session, row)
                row.state = FAILED
                row.stop_ts = row.start_ts
                row.note = note[:255]
            return _interval(row)

    def _refund(self, session: Session, row: LedgerInterval) -> None:
        if row.group_id is None or row.checkpoint_ts <= row.start_ts:
            return
        ancestors = session.scalars(
            select(GroupClosure.ancestor_id).where(GroupClosure.descendant_id == row.group_id)
        ).all()
        amounts: dict[tuple[int, int], list[float]] = {}
        for hour, seconds in split_by_hour(row.start_ts, row.checkpoint_ts):
            for anc in ancestors:
                amounts[(anc, hour)] = [-row.cpu_cores * seconds, -row.gpus * seconds]
        _upsert_usage(session, amounts)

    def find_open(self, *, kind: str, user: str, server_name: str = "") -> IntervalInfo | None:
        with self.db.read() as session:
            row = session.scalar(
                select(LedgerInterval).where(
                    LedgerInterval.user_name == user,
                    LedgerInterval.kind == kind,
                    LedgerInterval.server_name == server_name,
                    LedgerInterval.state.in_(OPEN_STATES),
                )
            )
            return _interval(row) if row else None

    def get(self, interval_id: int) -> IntervalInfo:
        with self.db.read() as session:
            return _interval(self._row(session, interval_id))

    def open_intervals(self, kind: str | None = None) -> list[IntervalInfo]:
        with self.db.read() as session:
            query = select(LedgerInterval).where(LedgerInterval.state.in_(OPEN_STATES))
            if kind is not None:
                query = query.where(LedgerInterval.kind == kind)
            return [_interval(r) for r in session.scalars(query.order_by(LedgerInterval.id))]

    # --- checkpoints and reconciliation ------------------------------------------------------

    def checkpoint(self, now: datetime | None = None) -> int:
        """Fold every running interval's usage up to ``now`` into the rollup; returns how
        many intervals were checkpointed. Call it every checkpoint interval (e.g. 60 s)."""
        now_ts = to_ts(self._now(now))
        with self.db.write() as session:
            rows = list(
                session.scalars(select(LedgerInterval).where(LedgerInterval.state == RUNNING))
            )
            _accrue(session, rows, now_ts)
            return len(rows)

    def reconcile(
        self,
        running: Iterable[tuple[str, str]],
        now: datetime | None = None,
        *,
        kind: str = "server",
    ) -> ReconcileReport:
        """Square the ledger with what actually runs, at hub start.

        ``running`` holds ``(user, server_name)`` for every ``kind`` the hub sees running.
        Running intervals whose server is gone are closed at their last checkpoint (the crash
        lost at most one checkpoint interval); pending ones are failed (charged nothing);
        pending ones whose server runs are started at their admission time.
        """
        now_ts = to_ts(self._now(now))
        alive = set(running)
        report = ReconcileReport()
        with self.db.write() as session:
            rows = list(
                session.scalars(
                    select(LedgerInterval)
                    .where(LedgerInterval.state.in_(OPEN_STATES), LedgerInterval.kind == kind)
                    .order_by(LedgerInterval.id)
                )
            )
            seen = set()
            for row in rows:
                key = (row.user_name, row.server_name)
                seen.add(key)
                if key in alive:
                    if row.state == PENDING:
                        row.state = RUNNING
                        row.start_ts = row.checkpoint_ts = row.admitted_ts
                        report.started.append(row.id)
                    else:
                        report.kept.append(row.id)
                elif row.state == PENDING:
                    row.state = FAILED
                    row.note = "not running at reconcile"
                    report.failed.append(row.id)
                else:
                    row.state = CLOSED
                    row.stop_ts = row.checkpoint_ts if row.checkpoint_ts is not None else now_ts
                    row.note = "gone at reconcile; closed at last checkpoint"
                    report.closed.append(row.id)
            report.unknown = sorted(alive - seen)
        return report

    # --- enforcement ------------------------------------------------------------------------

    def over_budget(self, now: datetime | None = None) -> list[OverBudgetInterval]:
        """Running intervals that consume a budget that is now spent somewhere on their chain."""
        now = self._now(now)
        result: list[OverBudgetInterval] = []
        with self.db.read() as session:
            rows = list(
                session.scalars(select(LedgerInterval).where(LedgerInterval.state == RUNNING))
            )
            if not rows:
                return result
            # every group's state in a few set-wise queries, then each interval's chain
            by_path = {node.path: node for node in all_group_states(session, now)}
            for row in rows:
                if row.group_id is None or row.group_path not in by_path:
                    continue
                chain = [by_path[p] for p in tree.chain(row.group_path) if p in by_path]
                spent = exhausted_budgets(chain, Charge(row.kind, row.cpu_cores, row.gpus), now)
                if spent:
                    result.append(
                        OverBudgetInterval(_interval(row), from_ts(row.warned_ts), spent[0].message)
                    )
        return result

    def enforcement_round(
        self, grace: timedelta, now: datetime | None = None, *, kind: str | None = None
    ) -> list[EnforcementNotice]:
        """One pass of the running-budget enforcement: what to warn now and what to stop.

        Charges over budget and not yet warned are marked warned (the grace period starts
        and survives hub restarts); charges warned at least ``grace`` ago are to be stopped.
        The hub sends the warnings, stops the servers (then calls :meth:`close`). Run it
        after each :meth:`checkpoint`. ``kind`` limits the round to charges of that kind.
        """
        now = self._now(now)
        over = {
            o.interval.id: o
            for o in self.over_budget(now)
            if kind is None or o.interval.kind == kind
        }
        steps = plan_enforcement([o.pure() for o in over.values()], now, grace)
        self.mark_warned([s.interval_id for s in steps if s.action == EnforcementAction.WARN], now)
        return [EnforcementNotice(s.action, over[s.interval_id].interval, s.reason) for s in steps]

    def warnings_for(self, user: str) -> list[tuple[IntervalInfo, datetime]]:
        """``user``'s running charges that were warned over budget, with when."""
        with self.db.read() as session:
            rows = session.scalars(
                select(LedgerInterval).where(
                    LedgerInterval.user_name == user,
                    LedgerInterval.state == RUNNING,
                    LedgerInterval.warned_ts.is_not(None),
                )
            )
            return [(_interval(row), from_ts(row.warned_ts)) for row in rows]

    def mark_warned(self, interval_ids: Iterable[int], at: datetime | None = None) -> None:
        ids = list(interval_ids)
        if not ids:
            return
        with self.db.write() as session:
            session.execute(
                update(LedgerInterval)
                .where(LedgerInterval.id.in_(ids), LedgerInterval.warned_ts.is_(None))
                .values(warned_ts=to_ts(self._now(at)))
            )

    # --- reports ----------------------------------------------------------------------------

    def usage(
        self,
        group: str,
        since: datetime,
        until: datetime | None = None,
        *,
        now: datetime | None = None,
    ) -> UsageReport:
        """Exact usage of ``group``'s subtree in ``[since, until)``, interval by interval
        (including charges of subgroups deleted since, by their recorded name)."""
        now = self._now(now)
        until = until or now
        if until <= since:
            raise StoreError("'since' must be before 'until'")
        with self.db.read() as session:
            top = group_row(session, group)
            in_subtree = LedgerInterval.group_id.in_(
                select(GroupClosure.descendant_id).where(GroupClosure.ancestor_id == top.id)
            )
            # charges of subgroups deleted since stay with the ancestor that survived them
            # (by identity: a new group given a deleted group's name never sees its charges)
            of_deleted_subgroup = LedgerInterval.group_id.is_(
                None
            ) & LedgerInterval.orphan_of_id.in_(
                select(GroupClosure.descendant_id).where(GroupClosure.ancestor_id == top.id)
            )
            in_window = (
                LedgerInterval.start_ts.is_not(None),
                LedgerInterval.state != FAILED,
                LedgerInterval.start_ts < to_ts(until),
                func.coalesce(LedgerInterval.stop_ts, to_ts(now)) > to_ts(since),
            )
            # two indexed queries rather than one OR that would scan the ledger
            rows = [
                *session.scalars(select(LedgerInterval).where(in_subtree, *in_window)),
                *session.scalars(select(LedgerInterval).where(of_deleted_subgroup, *in_window)),
            ]
            rows.sort(key=lambda r: (r.start_ts, r.id))
            intervals = [_interval(r) for r in rows]
        cpu = sum(i.cpu_cores * i.hours(since, min(until, now)) for i in intervals)
        gpu = sum(i.gpus * i.hours(since, min(until, now)) for i in intervals)
        return UsageReport(group, since, until, cpu, gpu, intervals)
