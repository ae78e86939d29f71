"""``/metrics``: usage and quota state for Prometheus (facility admins' tokens only)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from afhub.groups.tree import PermissionDenied
from afhub.quotas.limits import LimitName
from afhub.services.facility_api.base import FacilityHandler


def render_metrics(states, open_counts) -> bytes:
    """The Prometheus text exposition of every group's usage and limits."""
    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, labels=("group", "limit")) -> Gauge:
        return Gauge(name, documentation, list(labels), registry=registry)

    used = gauge(
        "afhub_group_used",
        "Usage of a group's subtree: budgets in the current period, holdings now",
    )
    limit = gauge("afhub_group_limit", "A group's own limit (absent: no limit)")
    ratio = gauge(
        "afhub_group_limit_used_ratio", "used / limit, for limits that are set and non-zero"
    )
    open_gauge = gauge("afhub_ledger_open_intervals", "Open ledger intervals", ("kind", "state"))
    for node in states:
        for name in LimitName:
            value = node.usage.get(name)
            used.labels(node.path, name.value).set(value)
            cap = node.limits.get(name)
            if cap is not None:
                limit.labels(node.path, name.value).set(cap)
                if cap > 0:
                    ratio.labels(node.path, name.value).set(value / cap)
    for (kind, state), count in sorted(open_counts.items()):
        open_gauge.labels(kind, state).set(count)
    return generate_latest(registry)


class MetricsHandler(FacilityHandler):
    async def get(self) -> None:
        if not self.actor.is_facility_admin:
            raise PermissionDenied("metrics are for facility admins' (or monitoring) tokens")
        now = datetime.now(UTC)
        states = await self.call(self.stores.ledger.all_states, now)
        counts = await self.call(self.stores.ledger.open_counts)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(render_metrics(states, counts))
