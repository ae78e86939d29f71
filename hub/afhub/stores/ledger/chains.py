"""Chain queries: a group chain's (or every group's) limits and rolled-up usage.

Quota decisions read the chain (closure table), the chain's limits, hourly rollups in each
node's window (at most ~750 index rows per node for a month), and open intervals in the
chain's subtrees (few). Cost does not grow with the ledger's length.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import Holdings, Limits, Usage
from afhub.quotas.periods import DEFAULT_PERIOD, parse_period
from afhub.stores.errors import NotFound
from afhub.stores.groups import resolve_charge_group_in
from afhub.stores.ledger.records import HOUR, to_ts
from afhub.stores.ledger.window_sql import open_sums, rollup_sums, typed
from afhub.stores.models import OPEN_PREDICATE

# The decision's queries, as plain SQL that SQLite and PostgreSQL both run: they are on the
# hot path of every spawn, and building them with the expression language cost more than
# running them.
_CHAIN = text(
    "SELECT g.id, g.path, q.gpu_hours, q.cpu_core_hours, q.max_servers, q.max_gpus, "
    "q.max_dask_cores, q.period "
    "FROM afhub_group_closure c JOIN afhub_groups g ON g.id = c.ancestor_id "
    "LEFT JOIN afhub_quotas q ON q.group_id = g.id "
    "WHERE c.descendant_id = :gid ORDER BY g.depth"
)
# budgets: hourly rollups in the window (S608: the fragments are this package's constants;
# every value is a bound parameter)
_BUDGETS = text(
    f"SELECT h.group_id, {rollup_sums(':ws')} FROM afhub_usage_hourly h "  # noqa: S608
    "WHERE h.group_id IN :gids AND h.hour_ts > :first_hour_after AND h.hour_ts <= :last_hour "
    "GROUP BY h.group_id"
).bindparams(*typed("gids", "ws", "first_hour_after", "last_hour"))


def _budget_params(gids: list[int], ws: float, now_ts: float) -> dict[str, object]:
    """Buckets overlapping ``[ws, now]``: hour_ts > ws - 1 h and hour_ts <= now."""
    return {
        "gids": gids,
        "ws": ws,
        "first_hour_after": math.floor(ws - HOUR),
        "last_hour": math.floor(now_ts),
    }


# holdings of open intervals, and what running ones accrued since their last checkpoint
_OPEN = text(
    f"SELECT c.ancestor_id, {open_sums(':ws')} "  # noqa: S608 (as above)
    "FROM afhub_ledger l JOIN afhub_group_closure c ON c.descendant_id = l.group_id "
    f"WHERE l.{OPEN_PREDICATE} AND c.ancestor_id IN :gids "
    "GROUP BY c.ancestor_id"
).bindparams(*typed("gids", "ws", "now"))

#: a node of a chain: (group id, path, limits)
Node = tuple[int, str, Limits]


def node(row) -> Node:
    """(id, path, limits) from a row that starts with (id, path, the quota's six columns)."""
    gid, path, gpu_h, cpu_h, servers, gpus, dask, period = row[:8]
    limits = Limits(
        gpu_hours=gpu_h,
        cpu_core_hours=cpu_h,
        max_servers=servers,
        max_gpus=gpus,
        max_dask_cores=dask,
        period=period or DEFAULT_PERIOD,
    )
    return gid, path, limits


def _nodes(rows) -> list[Node]:
    return [node(row) for row in rows]


class _Rollups:
    """Budgets (core- and GPU-seconds) and holdings gathered per group."""

    def __init__(self) -> None:
        self.budget: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.holdings: dict[int, Holdings] = defaultdict(Holdings)

    def gather(
        self, session: Session, gids: list[int], budget_gids: set[int], ws: float, now_ts: float
    ) -> None:
        """Add the usage of ``gids`` (all with the window starting at ``ws``): hourly
        rollups for those in ``budget_gids``, holdings and unfolded running usage."""
        wanted = [g for g in gids if g in budget_gids]
        if wanted:
            for gid, cpu_s, gpu_s in session.execute(_BUDGETS, _budget_params(wanted, ws, now_ts)):
                self.budget[gid][0] += float(cpu_s or 0.0)
                self.budget[gid][1] += float(gpu_s or 0.0)
        params = {"gids": gids, "ws": ws, "now": now_ts}
        for anc, servers, gpus, dask, cpu_s, gpu_s in session.execute(_OPEN, params):
            self.holdings[anc] = Holdings(int(servers or 0), int(gpus or 0), float(dask or 0.0))
            if anc in budget_gids:
                self.budget[anc][0] += max(0.0, float(cpu_s or 0.0))
                self.budget[anc][1] += max(0.0, float(gpu_s or 0.0))

    def states(self, nodes: list[Node]) -> list[NodeState]:
        return [
            NodeState(
                path=path,
                limits=limits,
                usage=Usage(
                    gpu_hours=self.budget[gid][1] / HOUR,
                    cpu_core_hours=self.budget[gid][0] / HOUR,
                    holdings=self.holdings[gid],
                ),
            )
            for gid, path, limits in nodes
        ]


def _states(
    session: Session,
    nodes: list[Node],
    now: datetime,
    need_budget: set[int],
    need_holdings: set[int],
) -> list[NodeState]:
    """The aggregation every chain query shares: nodes grouped by their window's start,
    two set-wise queries per window."""
    now_ts = to_ts(now)
    by_start: dict[float, list[int]] = defaultdict(list)
    for gid, _, limits in nodes:
        if gid in need_budget or gid in need_holdings:
            by_start[parse_period(limits.period).window(now).start.timestamp()].append(gid)
    rollups = _Rollups()
    for ws, gids in by_start.items():
        rollups.gather(session, gids, need_budget, ws, now_ts)
    return rollups.states(nodes)


def chain_states(
    session: Session, group_id: int, now: datetime, *, full: bool = False
) -> list[NodeState]:
    """The charged group's chain, root first, with limits and rolled-up usage.

    Usage is computed only where a limit needs it, unless ``full``. (An admission on
    PostgreSQL locks the chain and reads it in one statement: decision_read.py.)
    """
    nodes = _nodes(session.execute(_CHAIN, {"gid": group_id}).all())
    if not nodes:
        raise NotFound(f"group id {group_id} does not exist")
    need_budget = {
        gid
        for gid, _, lim in nodes
        if full or lim.gpu_hours is not None or lim.cpu_core_hours is not None
    }
    need_holdings = {gid for gid, _, lim in nodes if full or not lim.is_unlimited()}
    return _states(session, nodes, now, need_budget, need_holdings)


_ALL_GROUPS = text(
    "SELECT g.id, g.path, q.gpu_hours, q.cpu_core_hours, q.max_servers, q.max_gpus, "
    "q.max_dask_cores, q.period "
    "FROM afhub_groups g LEFT JOIN afhub_quotas q ON q.group_id = g.id ORDER BY g.path"
)


def all_group_states(session: Session, now: datetime) -> list[NodeState]:
    """Every group with its limits and rolled-up usage (budgets in its own period), in a
    few set-wise queries: for metrics and overviews."""
    nodes = _nodes(session.execute(_ALL_GROUPS))
    every = {gid for gid, _, _ in nodes}
    return _states(session, nodes, now, every, every)


EXISTING_OPEN = text(
    "SELECT id FROM afhub_ledger WHERE user_name = :user AND kind = :kind "  # noqa: S608 (a constant)
    f"AND server_name = :server AND {OPEN_PREDICATE}"
)
DEFAULT_TARGET = text(
    "SELECT g.id, g.path FROM afhub_users u JOIN afhub_groups g ON g.id = u.default_group_id "
    "WHERE u.name = :name"
)


def charge_target(session: Session, user: str, group: str | None) -> tuple[int, str]:
    """(id, path) of the group to charge; the common case (the default group) in one query."""
    if group is None:
        found = session.execute(DEFAULT_TARGET, {"name": user}).first()
        if found is not None:
            return found[0], found[1]
    target = resolve_charge_group_in(session, user, group)
    return target.id, target.path
