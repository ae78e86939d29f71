"""The rollups of the ledger.

The hourly rollup: a charge's core- and GPU-seconds are cut at hour boundaries and added to
the :class:`UsageHourly` row of its group and each ancestor, so that a budget is a sum over
at most one period's hours whatever the ledger's length.

The contribution rollup: a closed charge's seconds cut at UTC midnights and at weeks from
the epoch, added to the :class:`ContributionRollup` row of its (resource, group, user) in
the transaction that closes it (what the contributions report reads).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from afhub.quotas.limits import ChargeKind
from afhub.stores.ledger.records import HOUR
from afhub.stores.models import (
    CLOSED,
    ContributionRollup,
    GroupClosure,
    LedgerInterval,
    UsageHourly,
)

DAY = 24 * HOUR
#: the spans of the contribution rollup, in days
CONTRIBUTION_SPANS = (1, 7)


def split_at(t0: float, t1: float, step: float) -> list[tuple[int, float]]:
    """``[t0, t1)`` cut at multiples of ``step`` seconds from the epoch:
    ``(slice_start, seconds)`` pairs."""
    pieces: list[tuple[int, float]] = []
    t = t0
    while t < t1:
        begin = int(math.floor(t / step) * step)
        end = min(t1, begin + step)
        pieces.append((begin, end - t))
        t = end
    return pieces


def split_by_hour(t0: float, t1: float) -> list[tuple[int, float]]:
    """``[t0, t1)`` cut at UTC hour boundaries: ``(hour_start, seconds)`` pairs."""
    return split_at(t0, t1, HOUR)


def _upsert(session: Session, model, keys: list[str], values: list[dict], set_) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET set_(excluded)`` on either database."""
    if not values:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=set_(stmt.excluded))
    session.execute(stmt, values)


def upsert_usage(session: Session, amounts: dict[tuple[int, int], list[float]]) -> None:
    values = [
        {"group_id": g, "hour_ts": h, "cpu_core_seconds": cpu, "gpu_seconds": gpu}
        for (g, h), (cpu, gpu) in sorted(amounts.items())
    ]
    _upsert(
        session,
        UsageHourly,
        ["group_id", "hour_ts"],
        values,
        lambda new: {
            "cpu_core_seconds": UsageHourly.cpu_core_seconds + new.cpu_core_seconds,
            "gpu_seconds": UsageHourly.gpu_seconds + new.gpu_seconds,
        },
    )


def accrue(session: Session, rows: Sequence[LedgerInterval], until: float) -> None:
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
    upsert_usage(session, amounts)


def refund(session: Session, row: LedgerInterval) -> None:
    """Take back from the rollup what checkpoints folded in for ``row`` (a failed spawn)."""
    if row.group_id is None or row.checkpoint_ts <= row.start_ts:
        return
    ancestors = session.scalars(
        select(GroupClosure.ancestor_id).where(GroupClosure.descendant_id == row.group_id)
    ).all()
    amounts: dict[tuple[int, int], list[float]] = {}
    for hour, seconds in split_by_hour(row.start_ts, row.checkpoint_ts):
        for anc in ancestors:
            amounts[(anc, hour)] = [-row.cpu_cores * seconds, -row.gpus * seconds]
    upsert_usage(session, amounts)


_CONTRIBUTION_KEYS = ["span_days", "resource", "start_ts", "group_path", "user_name"]


def add_contributions(session: Session, rows: Sequence[LedgerInterval]) -> None:
    """Fold closed charges into the contribution rollup (call once per charge, in the
    transaction that closes it): their seconds per day and per week, the charge (and fit)
    counted in the span it started in; a charge of no length counts with no seconds."""
    amounts: dict[tuple, dict] = {}
    for row in rows:
        if row.state != CLOSED or row.start_ts is None or row.stop_ts is None:
            continue
        for days in CONTRIBUTION_SPANS:
            span = days * DAY
            pieces = split_at(row.start_ts, row.stop_ts, span)
            for begin, seconds in pieces or [(int(math.floor(row.start_ts / span) * span), 0.0)]:
                key = (days, row.resource, begin, row.group_path, row.user_name)
                first = row.start_ts >= begin
                amount = amounts.setdefault(
                    key,
                    dict(zip(_CONTRIBUTION_KEYS, key, strict=True))
                    | {"core_seconds": 0.0, "gpu_seconds": 0.0, "charges": 0, "fits": 0}
                    | {"first_start_ts": row.start_ts},
                )
                amount["core_seconds"] += row.cpu_cores * seconds
                amount["gpu_seconds"] += row.gpus * seconds
                amount["charges"] += int(first)
                amount["fits"] += int(first and row.kind == ChargeKind.FIT)
                amount["first_start_ts"] = min(amount["first_start_ts"], row.start_ts)
    rollup = ContributionRollup
    _upsert(
        session,
        rollup,
        _CONTRIBUTION_KEYS,
        [amounts[key] for key in sorted(amounts)],
        lambda new: {
            "core_seconds": rollup.core_seconds + new.core_seconds,
            "gpu_seconds": rollup.gpu_seconds + new.gpu_seconds,
            "charges": rollup.charges + new.charges,
            "fits": rollup.fits + new.fits,
            "first_start_ts": case(
                (new.first_start_ts < rollup.first_start_ts, new.first_start_ts),
                else_=rollup.first_start_ts,
            ),
        },
    )
