"""The hourly rollup: usage per group and UTC hour, folded into every ancestor.

A charge's core- and GPU-seconds are cut at hour boundaries and added to the
:class:`UsageHourly` row of its group and each ancestor, so that a budget is a sum over at
most one period's hours whatever the ledger's length.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from afhub.stores.ledger.records import HOUR
from afhub.stores.models import GroupClosure, LedgerInterval, UsageHourly


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


def upsert_usage(session: Session, amounts: dict[tuple[int, int], list[float]]) -> None:
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
