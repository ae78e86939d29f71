"""Invitations: create, list, read and revoke (group admins, facility admins), each with
who joined by it; redeem (anyone logged in)."""

from __future__ import annotations

import os
from datetime import timedelta

from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError

MAX_EXPIRES_HOURS = 365 * 24


def join_pages() -> str:
    """Where the join page is: the facility's pages (``$AFHUB_PAGES_PREFIX``, set by the
    hub's configuration), ``/services/afhub/`` by default."""
    return os.environ.get("AFHUB_PAGES_PREFIX", "/services/afhub/")


class GroupInvitationsHandler(FacilityHandler):
    async def get(self, path: str) -> None:
        """The invitations of the group and its subgroups, each with who joined by it."""
        invitations = await self.call(
            self.stores.invitations.list, path, actor=self.actor, include_subgroups=True
        )
        self.send({"invitations": [i.to_dict() for i in invitations]})

    async def post(self, path: str) -> None:
        """Create an invitation. The token appears in this answer only."""
        body = self.json_body()
        email = self.field(body, "email", str)
        uses = self.field(body, "uses", int, default=1)
        hours = self.field(body, "expires_in_hours", (int, float), default=7 * 24)
        if not 0 < hours <= MAX_EXPIRES_HOURS:
            raise ApiError(400, "expires_in_hours must be between 0 and 8760 (365 days)")
        role = self.role_field(body)
        created = await self.call(
            self.stores.invitations.create,
            path,
            actor=self.actor,
            email=email,
            uses=uses,
            expires_in=timedelta(hours=hours),
            role=role,
        )
        payload = created.info.to_dict()
        payload["token"] = created.token
        payload["join_url"] = f"{join_pages()}join/{created.token}"
        self.send(payload, status=201)


class InvitationHandler(FacilityHandler):
    async def get(self, invitation_id: str) -> None:
        """One invitation and who joined by it (404 also for one the caller may not manage)."""
        info = await self.call(self.stores.invitations.get, invitation_id, actor=self.actor)
        self.send(info.to_dict())

    async def delete(self, invitation_id: str) -> None:
        """Revoke an invitation."""
        info = await self.call(self.stores.invitations.revoke, invitation_id, actor=self.actor)
        self.send(info.to_dict())


class RedeemHandler(FacilityHandler):
    async def post(self) -> None:
        """Join the invitation's group: ``{"token": "..."}``."""
        body = self.json_body()
        token = self.field(body, "token", str, required=True)
        member = await self.call(self.stores.invitations.redeem, token, user=self.actor.name)
        self.send(member.to_dict())
