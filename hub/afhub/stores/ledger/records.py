"""The ledger's records as callers see them: intervals, admissions, reports, notices.

Timestamps are stored as UTC epoch seconds (``to_ts`` / ``from_ts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from afhub.quotas.decisions import Decision, EnforcementAction, OverBudget
from afhub.stores.errors import StoreError
from afhub.stores.models import FAILED, LedgerInterval, iso

HOUR = 3600


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


def interval_info(row: LedgerInterval) -> IntervalInfo:
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
