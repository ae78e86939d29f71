"""``/api/groups/{path}/-/quota``: limits and their current state."""

from __future__ import annotations

from datetime import UTC, datetime

from afhub.groups import tree
from afhub.groups.tree import Action
from afhub.quotas.limits import LimitName
from afhub.quotas.periods import parse_period
from afhub.services.facility_api.base import FacilityHandler


def node_payload(node, now: datetime) -> dict[str, object]:
    window = parse_period(node.limits.period).window(now)
    limits = {}
    for name in LimitName:
        limits[name.value] = {"limit": node.limits.get(name), "used": node.usage.get(name)}
    return {
        "group": node.path,
        "period": node.limits.period,
        "period_start": window.start.isoformat(),
        "resets_at": window.resets_at.isoformat() if window.resets_at else None,
        "limits": limits,
    }


class QuotaHandler(FacilityHandler):
    async def get(self, path: str) -> None:
        """The group's limits and usage, and those of the ancestors the caller may read."""
        tree.require(self.actor, Action.READ_USAGE, path)
        now = datetime.now(UTC)
        chain = await self.call(self.stores.ledger.status, path, now)
        visible = [n for n in chain if tree.may(self.actor, Action.READ_USAGE, n.path)]
        self.send({"group": path, "chain": [node_payload(n, now) for n in visible]})

    async def put(self, path: str) -> None:
        """Change limits: keys given change (``null`` removes a limit), others stay."""
        body = self.json_body()
        limits = await self.call(self.stores.quotas.set, path, body, actor=self.actor)
        self.send({"group": path, **limits.to_dict()})
