"""Usage reports: the intervals of a group's subtree that overlap a window."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from afhub.stores.ledger.records import IntervalInfo, interval_info, to_ts
from afhub.stores.models import FAILED, GroupClosure, LedgerInterval


def subtree_intervals(
    session: Session, top_id: int, since: datetime, until: datetime, now: datetime
) -> list[IntervalInfo]:
    """Intervals charged to group ``top_id``'s subtree that overlap ``[since, until)``,
    by start; charges of subgroups deleted since stay with the ancestor that survived them
    (by identity: a new group given a deleted group's name never sees its charges)."""
    subtree = select(GroupClosure.descendant_id).where(GroupClosure.ancestor_id == top_id)
    in_subtree = LedgerInterval.group_id.in_(subtree)
    of_deleted_subgroup = LedgerInterval.group_id.is_(None) & LedgerInterval.orphan_of_id.in_(
        subtree
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
    return [interval_info(r) for r in rows]
