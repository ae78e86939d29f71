"""``/api/users``: the caller's identity, default group and facility-admin grants."""

from __future__ import annotations

import os
from datetime import timedelta

from afhub.groups import tree
from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError
from afhub.stores.errors import NotFound

#: the accountant's grace period between the warning and the stop (same environment)
GRACE = timedelta(seconds=float(os.environ.get("AFHUB_GRACE_PERIOD", "600")))


class MeHandler(FacilityHandler):
    async def get(self) -> None:
        groups = self.stores.groups
        try:
            user = await self.call(groups.user, self.actor.name)
            payload = user.to_dict()
        except NotFound:
            payload = {
                "name": self.actor.name,
                "email": None,
                "default_group": None,
                "groups": {},
                "is_facility_admin": False,
            }
        payload["is_facility_admin"] = self.actor.is_facility_admin
        payload["warnings"] = [
            {
                "kind": interval.kind,
                "server_name": interval.server_name,
                "group": interval.group,
                "message": (
                    f"group {interval.group!r} (or a group above it) has spent a budget; this "
                    f"{interval.kind} will be stopped at {(warned + GRACE).isoformat()}"
                ),
                "warned_at": warned.isoformat(),
                "stops_at": (warned + GRACE).isoformat(),
            }
            for interval, warned in await self.call(
                self.stores.ledger.warnings_for, self.actor.name
            )
        ]
        self.send(payload)


class UserHandler(FacilityHandler):
    async def patch(self, name: str) -> None:
        """``{"is_facility_admin": bool}`` (facility admins only) and/or
        ``{"default_group": path}`` (the user themself, or a facility admin)."""
        body = self.json_body()
        unknown = set(body) - {"is_facility_admin", "default_group"}
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        if "is_facility_admin" in body:
            flag = self.field(body, "is_facility_admin", bool, required=True)
            tree.require_may_grant_facility_admin(self.actor)
            await self.call(self.stores.groups.set_facility_admin, name, flag)
        if "default_group" in body:
            if name != self.actor.name and not self.actor.is_facility_admin:
                raise tree.PermissionDenied(
                    f"{self.actor.name} may not change the default group of {name}"
                )
            path = self.field(body, "default_group", str)
            await self.call(self.stores.groups.set_default_group, name, path)
        user = await self.call(self.stores.groups.user, name)
        self.send(user.to_dict())
