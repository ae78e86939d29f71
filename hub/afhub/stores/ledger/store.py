"""The ledger store: admission, the ledger's life cycle, checkpoints, reconciliation,
enforcement and reports.

Every charge (a server, a Dask cluster, a fit job) is one :class:`LedgerInterval`:
``admit`` decides and opens it atomically (``pending``: holds its slot), ``mark_running``
starts the clock, ``close`` stops it, ``fail`` drops a charge that never started (a failed
spawn is never charged). ``checkpoint`` folds running usage into the hourly rollup of the
charged group and every ancestor, so that a hub crash loses at most one checkpoint interval;
``reconcile`` squares open intervals with the servers the hub sees at start.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from afhub.groups import tree
from afhub.quotas.decisions import (
    Decision,
    EnforcementAction,
    NodeState,
    decide,
    exhausted_budgets,
    plan_enforcement,
)
from afhub.quotas.limits import Charge
from afhub.stores.database import Database
from afhub.stores.errors import LedgerConflict, NotFound, StoreError
from afhub.stores.groups import group_row
from afhub.stores.ledger.chains import (
    EXISTING_OPEN,
    all_group_states,
    chain_states,
    charge_target,
)
from afhub.stores.ledger.decision_read import read_decision_chain
from afhub.stores.ledger.records import (
    Admission,
    EnforcementNotice,
    IntervalInfo,
    OverBudgetInterval,
    QuotaExceeded,
    ReconcileReport,
    UsageReport,
    from_ts,
    interval_info,
    to_ts,
)
from afhub.stores.ledger.rollup import accrue, add_contributions, refund
from afhub.stores.ledger.usage import subtree_intervals
from afhub.stores.models import CLOSED, FAILED, OPEN_STATES, PENDING, RUNNING, LedgerInterval


def _decision_chain(
    connection: Connection,
    session: Session,
    user: str,
    group: str | None,
    now: datetime,
    *,
    lock: bool = False,
) -> tuple[int, str, list[NodeState]]:
    """(charged group id, path, chain states) read in one statement on PostgreSQL
    (``connection``, after the chain's row locks with ``lock``); the default group is found
    inside the statement, any other target (or a missing default) through ``session``."""
    found = read_decision_chain(connection, now, user=user, lock=lock) if group is None else None
    if found is None:
        group_id = charge_target(session, user, group)[0]  # says why when there is none
        found = read_decision_chain(connection, now, group_id=group_id, lock=lock)
    if found is None:
        raise NotFound(f"group {group or ''} of {user} no longer exists")
    return found


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
            if self.db.is_postgresql:
                # the chain's row locks, then its state in one statement
                gid, path, states = _decision_chain(
                    session.connection(), session, user, group, now, lock=True
                )
            else:
                gid, path = charge_target(session, user, group)
                states = chain_states(session, gid, now)
            key = {"user": user, "kind": charge.kind.value, "server": server_name}
            existing = session.execute(EXISTING_OPEN, key).scalar()
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
                    group_id=gid,
                    group_path=path,
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
            return Admission(interval_id, path, decision)

    def preview(
        self, *, user: str, charge: Charge, group: str | None = None, now: datetime | None = None
    ) -> Decision:
        """The decision ``admit`` would make now, without opening anything."""
        now = self._now(now)
        if not self.db.is_postgresql:
            # SQLite plans the one-statement read badly at scale (full scans: 400 ms at
            # 1,000,000 ledger rows); in-process, several statements cost nothing extra
            with self.db.read() as session:
                target = charge_target(session, user, group)
                return decide(chain_states(session, target[0], now), charge, now)
        # one statement, one snapshot: no BEGIN/ROLLBACK round trips
        connection = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        with connection, Session(bind=connection) as session:
            return decide(_decision_chain(connection, session, user, group, now)[2], charge, now)

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
                .where(LedgerInterval.is_open())
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
            return interval_info(row)

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
                accrue(session, [row], max(at_ts, row.checkpoint_ts or at_ts))
                row.state = CLOSED
                row.stop_ts = max(at_ts, row.start_ts or at_ts)
                row.note = note[:255]
                add_contributions(session, [row])
            return interval_info(row)

    def fail(self, interval_id: int, note: str = "spawn failed") -> IntervalInfo:
        """A spawn that failed: nothing is charged, even if it was marked running."""
        with self.db.write() as session:
            row = self._row(session, interval_id)
            if row.state in OPEN_STATES:
                if row.state == RUNNING and row.checkpoint_ts and row.start_ts:
                    # take back what a checkpoint already folded into the rollup
                    refund(session, row)
                row.state = FAILED
                row.stop_ts = row.start_ts
                row.note = note[:255]
            return interval_info(row)

    def find_open(self, *, kind: str, user: str, server_name: str = "") -> IntervalInfo | None:
        with self.db.read() as session:
            row = session.scalar(
                select(LedgerInterval).where(
                    LedgerInterval.user_name == user,
                    LedgerInterval.kind == kind,
                    LedgerInterval.server_name == server_name,
                    LedgerInterval.is_open(),
                )
            )
            return interval_info(row) if row else None

    def get(self, interval_id: int) -> IntervalInfo:
        with self.db.read() as session:
            return interval_info(self._row(session, interval_id))

    def open_intervals(self, kind: str | None = None) -> list[IntervalInfo]:
        with self.db.read() as session:
            query = select(LedgerInterval).where(LedgerInterval.is_open())
            if kind is not None:
                query = query.where(LedgerInterval.kind == kind)
            return [interval_info(r) for r in session.scalars(query.order_by(LedgerInterval.id))]

    # --- checkpoints and reconciliation ------------------------------------------------------

    def checkpoint(self, now: datetime | None = None) -> int:
        """Fold every running interval's usage up to ``now`` into the rollup; returns how
        many intervals were checkpointed. Call it every checkpoint interval (e.g. 60 s)."""
        now_ts = to_ts(self._now(now))
        with self.db.write() as session:
            rows = list(
                session.scalars(select(LedgerInterval).where(LedgerInterval.state == RUNNING))
            )
            accrue(session, rows, now_ts)
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
                    .where(LedgerInterval.is_open(), LedgerInterval.kind == kind)
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
                    add_contributions(session, [row])
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
                        OverBudgetInterval(
                            interval_info(row), from_ts(row.warned_ts), spent[0].message
                        )
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
            return [(interval_info(row), from_ts(row.warned_ts)) for row in rows]

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
            intervals = subtree_intervals(session, group_row(session, group).id, since, until, now)
        cpu = sum(i.cpu_cores * i.hours(since, min(until, now)) for i in intervals)
        gpu = sum(i.gpus * i.hours(since, min(until, now)) for i in intervals)
        return UsageReport(group, since, until, cpu, gpu, intervals)
