"""The usage ledger and quota admission.

``records`` (what callers get back), ``rollup`` (usage per group and hour), ``chains``
(limits and usage of a chain or of every group: what a decision reads), ``decision_read``
(the same for one chain in one statement: PostgreSQL's previews and admissions),
``window_sql`` (the SQL that both count usage with), ``usage`` (usage reports) and
``store`` (:class:`LedgerStore`, the operations).
"""

from afhub.stores.ledger.chains import all_group_states, chain_states
from afhub.stores.ledger.records import (
    HOUR,
    USAGE_COLUMNS,
    Admission,
    EnforcementNotice,
    IntervalInfo,
    OverBudgetInterval,
    QuotaExceeded,
    ReconcileReport,
    UsageReport,
    from_ts,
    to_ts,
)
from afhub.stores.ledger.rollup import split_by_hour
from afhub.stores.ledger.store import LedgerStore
from afhub.stores.models import CLOSED, FAILED, OPEN_STATES, PENDING, RUNNING

__all__ = [
    "CLOSED",
    "FAILED",
    "HOUR",
    "OPEN_STATES",
    "PENDING",
    "RUNNING",
    "USAGE_COLUMNS",
    "Admission",
    "EnforcementNotice",
    "IntervalInfo",
    "LedgerStore",
    "OverBudgetInterval",
    "QuotaExceeded",
    "ReconcileReport",
    "UsageReport",
    "all_group_states",
    "chain_states",
    "from_ts",
    "split_by_hour",
    "to_ts",
]
