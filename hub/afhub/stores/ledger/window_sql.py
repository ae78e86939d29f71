"""SQL fragments that count a chain node's usage in its window, shared by the
multi-statement chain read (chains.py) and the one-statement decision read
(decision_read.py), so that both count alike by construction.

Each fragment takes the SQL expression of the window's start (a bound parameter such as
``:ws``, or a column such as ``w.ws``) and gives ``SUM`` columns over hourly rollups aliased
``h`` or open ledger intervals aliased ``l``. ``typed`` gives the bound parameters their SQL
types once for every statement of the ledger.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, BindParameter, Float, Integer, String, bindparam

#: the SQL type of every bound parameter of the ledger's statements, by name
TYPES = {
    "gid": Integer,
    "name": String,
    "now": Float,
    "ws": Float,
    "month_start": Float,
    # integers, so that PostgreSQL compares bigint to bigint and uses the primary key
    "first_hour_after": BigInteger,
    "last_hour": BigInteger,
    "month_after": BigInteger,
}


def typed(*names: str) -> list[BindParameter]:
    """Bound parameters ``names`` with their SQL types; ``gids`` is a list (``IN :gids``)."""
    return [
        bindparam(name, expanding=True) if name == "gids" else bindparam(name, type_=TYPES[name])
        for name in names
    ]


def rollup_sums(window_start: str) -> str:
    """Core-seconds and GPU-seconds (columns ``cpu_s``, ``gpu_s``) of the hourly rollups
    ``h`` of a window starting at ``window_start``; the hour the window starts in counts
    pro rata (the rows are those with ``hour_ts`` after ``window_start`` minus an hour)."""

    def pro_rata(column: str) -> str:
        return (
            f"SUM(CASE WHEN h.hour_ts < {window_start} "
            f"THEN h.{column} * ((h.hour_ts + 3600 - {window_start}) / 3600.0) "
            f"ELSE h.{column} END)"
        )

    return f"{pro_rata('cpu_core_seconds')} AS cpu_s, {pro_rata('gpu_seconds')} AS gpu_s"


def open_sums(window_start: str) -> str:
    """What open ledger intervals ``l`` hold (columns ``servers``, ``gpus``, ``dask``) and
    what the running ones accrued from their last checkpoint (or ``window_start``, if later)
    up to ``:now`` (columns ``cpu_s``, ``gpu_s``): usage not yet in the hourly rollups."""

    def accrued(rate: str) -> str:
        return (
            f"SUM({rate} * (CASE WHEN l.state = 'running' AND l.checkpoint_ts < :now "
            f"THEN :now - CASE WHEN l.checkpoint_ts > {window_start} THEN l.checkpoint_ts "
            f"ELSE {window_start} END ELSE 0.0 END))"
        )

    return (
        "SUM(CASE WHEN l.kind = 'server' THEN 1 ELSE 0 END) AS servers, SUM(l.gpus) AS gpus, "
        "SUM(CASE WHEN l.kind = 'dask' THEN l.cpu_cores ELSE 0.0 END) AS dask, "
        f"{accrued('l.cpu_cores')} AS cpu_s, {accrued('l.gpus')} AS gpu_s"
    )
