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

from sqlalchemy import BigInteger, Float, Integer, String, bindparam, text
from sqlalchemy.engine import Connection, Dialect

from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import Holdings, Limits, Usage
from afhub.quotas.periods import DEFAULT_PERIOD, parse_period
from afhub.stores.ledger.records import HOUR, to_ts

DECISION_READ = text(
    "WITH chain AS ("
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
    " CASE WHEN span = 0 THEN :month_after ELSE :now_floor - 3600 - span END AS after"
    " FROM chain"
    "), budget AS ("
    # the first hour of a rolling window counts pro rata
    " SELECT h.group_id AS id,"
    " SUM(CASE WHEN h.hour_ts < w.ws"
    " THEN h.cpu_core_seconds * ((h.hour_ts + 3600 - w.ws) / 3600.0)"
    " ELSE h.cpu_core_seconds END) AS cpu_s,"
    " SUM(CASE WHEN h.hour_ts < w.ws"
    " THEN h.gpu_seconds * ((h.hour_ts + 3600 - w.ws) / 3600.0) ELSE h.gpu_seconds END) AS gpu_s"
    " FROM w JOIN afhub_usage_hourly h ON h.group_id = w.id"
    " AND h.hour_ts > w.after AND h.hour_ts <= :now_floor"
    " GROUP BY h.group_id"
    "), held AS ("
    " SELECT c.ancestor_id AS id,"
    " SUM(CASE WHEN l.kind = 'server' THEN 1 ELSE 0 END) AS servers, SUM(l.gpus) AS gpus,"
    " SUM(CASE WHEN l.kind = 'dask' THEN l.cpu_cores ELSE 0.0 END) AS dask,"
    # what running intervals accrued since their last checkpoint, inside the node's window
    " SUM(l.cpu_cores * (CASE WHEN l.state = 'running' AND l.checkpoint_ts < :now THEN :now - "
    "CASE WHEN l.checkpoint_ts > w.ws THEN l.checkpoint_ts ELSE w.ws END ELSE 0.0 END)) AS cpu_s,"
    " SUM(l.gpus * (CASE WHEN l.state = 'running' AND l.checkpoint_ts < :now THEN :now - "
    "CASE WHEN l.checkpoint_ts > w.ws THEN l.checkpoint_ts ELSE w.ws END ELSE 0.0 END)) AS gpu_s"
    " FROM w JOIN afhub_group_closure c ON c.ancestor_id = w.id"
    " JOIN afhub_ledger l ON l.group_id = c.descendant_id"
    " WHERE l.state IN ('pending', 'running')"
    " GROUP BY c.ancestor_id"
    ")"
    " SELECT chain.id, chain.path, chain.gpu_hours, chain.cpu_core_hours, chain.max_servers,"
    " chain.max_gpus, chain.max_dask_cores, chain.period, budget.cpu_s, budget.gpu_s,"
    " held.servers, held.gpus, held.dask, held.cpu_s, held.gpu_s"
    " FROM chain LEFT JOIN budget ON budget.id = chain.id LEFT JOIN held ON held.id = chain.id"
    " ORDER BY chain.depth"
).bindparams(
    bindparam("gid", type_=Integer),
    bindparam("name", type_=String),
    bindparam("now", type_=Float),
    bindparam("month_start", type_=Float),
    # integers, so that PostgreSQL compares bigint to bigint and uses the primary key
    bindparam("month_after", type_=BigInteger),
    bindparam("now_floor", type_=BigInteger),
)


# PostgreSQL plans the statement once per connection (a prepared statement): planning this
# CTE costs about as much as running it
_PREPARED = "afhub_decision_read"
_PG_TYPES = {
    "gid": "integer",
    "name": "text",
    "now": "float8",
    "month_start": "float8",
    "month_after": "bigint",
    "now_floor": "bigint",
}


@cache
def _prepare_sql(dialect: Dialect) -> str:
    sql = str(DECISION_READ.compile(dialect=dialect))
    for number, (name, pg_type) in enumerate(_PG_TYPES.items(), start=1):
        sql = sql.replace(f"%({name})s", f"${number}::{pg_type}")
    return f"PREPARE {_PREPARED} ({', '.join(_PG_TYPES.values())}) AS {sql}"


def _execute(connection: Connection, params: dict[str, object]):
    if connection.dialect.name != "postgresql":
        return connection.execute(DECISION_READ, params)
    if not connection.info.get(_PREPARED):
        connection.exec_driver_sql(_prepare_sql(connection.dialect))
        connection.info[_PREPARED] = True
    names = ", ".join(f"%({name})s" for name in _PG_TYPES)
    return connection.exec_driver_sql(f"EXECUTE {_PREPARED} ({names})", params)


def _node_state(row) -> tuple[int, NodeState]:
    (gid, path, gpu_h, cpu_h, servers, gpus, dask, period) = row[:8]
    budget_cpu, budget_gpu, held_servers, held_gpus, held_dask, open_cpu, open_gpu = row[8:]
    limits = Limits(
        gpu_hours=gpu_h,
        cpu_core_hours=cpu_h,
        max_servers=servers,
        max_gpus=gpus,
        max_dask_cores=dask,
        period=period or DEFAULT_PERIOD,
    )
    cpu_s = float(budget_cpu or 0.0) + max(0.0, float(open_cpu or 0.0))
    gpu_s = float(budget_gpu or 0.0) + max(0.0, float(open_gpu or 0.0))
    holdings = Holdings(int(held_servers or 0), int(held_gpus or 0), float(held_dask or 0.0))
    usage = Usage(gpu_hours=gpu_s / HOUR, cpu_core_hours=cpu_s / HOUR, holdings=holdings)
    return gid, NodeState(path=path, limits=limits, usage=usage)


def read_decision_chain(
    connection: Connection, now: datetime, *, group_id: int | None = None, user: str = ""
) -> tuple[int, str, list[NodeState]] | None:
    """(charged group id, its path, its chain root first with full usage), for ``group_id``
    or else ``user``'s default group; ``None`` when there is no such group (the caller then
    resolves the charge target the slow way, which says why)."""
    now_ts = to_ts(now)
    month_start = parse_period(DEFAULT_PERIOD).window(now).start.timestamp()
    params = {
        "gid": group_id,
        "name": user,
        "now": now_ts,
        "month_start": month_start,
        "month_after": math.floor(month_start - HOUR),
        "now_floor": math.floor(now_ts),
    }
    nodes = [_node_state(row) for row in _execute(connection, params)]
    if not nodes:
        return None
    gid, target = nodes[-1]
    return gid, target.path, [state for _, state in nodes]
