"""The decision's read: a charged group's chain, its limits and rolled-up usage, in ONE
statement (one round trip).

``chain_states`` (chains.py) reads the same thing in several statements and groups the
chain's nodes by window in Python; on PostgreSQL every statement is a round trip to the
server, and a read inside ``BEGIN`` ... ``ROLLBACK`` costs two more. Here each node's window
start is computed in SQL from its period (``month``: the start passed in; ``rolling:<n>h|d``:
``now`` minus the span), the hourly rollups and the open intervals are joined per node, and
the statement runs in autocommit on PostgreSQL (a single statement sees one snapshot), as
a prepared statement of the connection (planned once).
Usage is computed for every node of the chain, as ``chain_states(..., full=True)`` does; the
equivalence is tested in tests/stores/test_decision_read.py.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import cache

from sqlalchemy import text
from sqlalchemy.engine import Connection, Dialect, Result

from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import Holdings, Usage
from afhub.quotas.periods import DEFAULT_PERIOD, parse_period
from afhub.stores.ledger.chains import node
from afhub.stores.ledger.records import HOUR, to_ts
from afhub.stores.ledger.window_sql import TYPES, open_sums, rollup_sums, typed
from afhub.stores.models import OPEN_PREDICATE

DECISION_PARAMS = ("gid", "name", "now", "month_start", "month_after", "last_hour")
# S608: the fragments (window_sql.py) are this package's constants; every value is bound
DECISION_READ = text(
    "WITH chain AS ("  # noqa: S608
    " SELECT g.id, g.path, g.depth, q.gpu_hours, q.cpu_core_hours, q.max_servers, q.max_gpus,"
    " q.max_dask_cores, q.period,"
    # the window's span in seconds, 0 for the calendar month; periods are validated on write
    # ('month' or 'rolling:<n>h|d'), so the number sits between 'rolling:' and the unit
    " CASE WHEN q.period IS NULL OR q.period = 'month' THEN 0"
    " ELSE CAST(substr(q.period, 9, length(q.period) - 9) AS INTEGER) *"
    " CASE WHEN substr(q.period, length(q.period)) = 'd' THEN 86400 ELSE 3600 END END AS span"
    " FROM afhub_group_closure c JOIN afhub_groups g ON g.id = c.ancestor_id"
    " LEFT JOIN afhub_quotas q ON q.group_id = g.id"
    " WHERE c.descendant_id = COALESCE(:gid,"
    " (SELECT u.default_group_id FROM afhub_users u WHERE u.name = :name))"
    "), w AS ("
    " SELECT id, CASE WHEN span = 0 THEN :month_start ELSE :now - span END AS ws,"
    " CASE WHEN span = 0 THEN :month_after ELSE :last_hour - 3600 - span END AS after"
    " FROM chain"
    "), budget AS ("
    f" SELECT h.group_id AS id, {rollup_sums('w.ws')}"
    " FROM w JOIN afhub_usage_hourly h ON h.group_id = w.id"
    " AND h.hour_ts > w.after AND h.hour_ts <= :last_hour"
    " GROUP BY h.group_id"
    "), held AS ("
    f" SELECT c.ancestor_id AS id, {open_sums('w.ws')}"
    " FROM w JOIN afhub_group_closure c ON c.ancestor_id = w.id"
    " JOIN afhub_ledger l ON l.group_id = c.descendant_id"
    f" WHERE l.{OPEN_PREDICATE}"
    " GROUP BY c.ancestor_id"
    ")"
    " SELECT chain.id, chain.path, chain.gpu_hours, chain.cpu_core_hours, chain.max_servers,"
    " chain.max_gpus, chain.max_dask_cores, chain.period, budget.cpu_s, budget.gpu_s,"
    " held.servers, held.gpus, held.dask, held.cpu_s, held.gpu_s"
    " FROM chain LEFT JOIN budget ON budget.id = chain.id LEFT JOIN held ON held.id = chain.id"
    " ORDER BY chain.depth"
).bindparams(*typed(*DECISION_PARAMS))


# the chain's group rows, root first, locked for an admission; the last is the charged group
LOCK_CHAIN = text(
    "SELECT g.id, g.path FROM afhub_group_closure c JOIN afhub_groups g ON g.id = c.ancestor_id"
    " WHERE c.descendant_id = COALESCE(:gid,"
    " (SELECT u.default_group_id FROM afhub_users u WHERE u.name = :name))"
    " ORDER BY g.depth FOR UPDATE OF g"
).bindparams(*typed("gid", "name"))

# PostgreSQL plans each statement once per connection (a prepared statement): planning the
# decision's CTE costs about as much as running it
_STATEMENTS = {
    "afhub_decision_read": (DECISION_READ, DECISION_PARAMS),
    "afhub_lock_chain": (LOCK_CHAIN, ("gid", "name")),
}


@cache
def _prepare_sql(name: str, dialect: Dialect) -> str:
    clause, params = _STATEMENTS[name]
    sql = str(clause.compile(dialect=dialect))
    pg_types = [TYPES[param]().compile(dialect=dialect) for param in params]
    for number, (param, pg_type) in enumerate(zip(params, pg_types, strict=True), start=1):
        sql = sql.replace(f"%({param})s", f"${number}::{pg_type}")
    return f"PREPARE {name} ({', '.join(pg_types)}) AS {sql}"


def _execute(connection: Connection, name: str, params: dict[str, object]) -> Result:
    clause, names = _STATEMENTS[name]
    if connection.dialect.name != "postgresql":
        return connection.execute(clause, params)
    if not connection.info.get(name):
        connection.exec_driver_sql(_prepare_sql(name, connection.dialect))
        connection.info[name] = True
    values = ", ".join(f"%({param})s" for param in names)
    return connection.exec_driver_sql(f"EXECUTE {name} ({values})", params)


def _node_state(row) -> tuple[int, NodeState]:
    gid, path, limits = node(row)
    budget_cpu, budget_gpu, held_servers, held_gpus, held_dask, open_cpu, open_gpu = row[8:]
    cpu_s = float(budget_cpu or 0.0) + max(0.0, float(open_cpu or 0.0))
    gpu_s = float(budget_gpu or 0.0) + max(0.0, float(open_gpu or 0.0))
    holdings = Holdings(int(held_servers or 0), int(held_gpus or 0), float(held_dask or 0.0))
    usage = Usage(gpu_hours=gpu_s / HOUR, cpu_core_hours=cpu_s / HOUR, holdings=holdings)
    return gid, NodeState(path=path, limits=limits, usage=usage)


def read_decision_chain(
    connection: Connection,
    now: datetime,
    *,
    group_id: int | None = None,
    user: str = "",
    lock: bool = False,
) -> tuple[int, str, list[NodeState]] | None:
    """(charged group id, its path, its chain root first with full usage), for ``group_id``
    or else ``user``'s default group; ``None`` when there is no such group (the caller then
    resolves the charge target the slow way, which says why).

    With ``lock`` (an admission's write transaction on PostgreSQL; SQLite's writers run one
    at a time already) the chain's group rows are locked first, root first, so that
    admissions under a common ancestor run one at a time. The read is a statement of its
    own after the lock: under READ COMMITTED it sees what the admission before it committed,
    where a lock inside the read would keep the snapshot taken before the wait.
    """
    if lock and connection.dialect.name == "postgresql":
        locked = _execute(connection, "afhub_lock_chain", {"gid": group_id, "name": user}).all()
        if not locked:
            return None
        group_id = locked[-1][0]
    now_ts = to_ts(now)
    month_start = parse_period(DEFAULT_PERIOD).window(now).start.timestamp()
    params = {
        "gid": group_id,
        "name": user,
        "now": now_ts,
        "month_start": month_start,
        "month_after": math.floor(month_start - HOUR),
        "last_hour": math.floor(now_ts),
    }
    nodes = [_node_state(row) for row in _execute(connection, "afhub_decision_read", params)]
    if not nodes:
        return None
    gid, target = nodes[-1]
    return gid, target.path, [state for _, state in nodes]
