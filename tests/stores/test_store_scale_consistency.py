from datetime import UTC, datetime

import pytest

from tests.support.scale import seed_scale

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_rollups_agree_with_the_exact_ledger(stores):
    """Hourly rollups (what decisions read) equal the ledger's exact intervals."""
    seeded = seed_scale(
        stores, groups=40, users=200, ledger_rows=3000, running=20, days=60, now=NOW, chunk=1000
    )
    month_start = datetime(2026, 11, 1, tzinfo=UTC)
    states = {n.path: n for n in stores.ledger.all_states(now=NOW)}
    for top in [p for p in seeded["paths"] if "/" not in p]:
        exact = stores.ledger.usage(top, month_start, NOW, now=NOW)
        assert states[top].usage.cpu_core_hours == pytest.approx(exact.cpu_core_hours)
        assert states[top].usage.gpu_hours == pytest.approx(exact.gpu_hours)
    assert sum(states[p].usage.holdings.servers for p in states if "/" not in p) == 20
