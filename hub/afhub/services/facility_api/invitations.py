"""Invitations: create, list and revoke (group admins); redeem (anyone logged in)."""

from __future__ import annotations

import html
from datetime import timedelta

from tornado import web

from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError
from afhub.stores.errors import StoreError

MAX_EXPIRES_HOURS = 365 * 24


class GroupInvitationsHandler(FacilityHandler):
    async def get(self, path: str) -> None:
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
        prefix = self.settings.get("afhub_prefix", "/")
        payload = created.info.to_dict()
        payload["token"] = created.token
        payload["join_url"] = f"{prefix}join/{created.token}"
        self.send(payload, status=201)


class InvitationHandler(FacilityHandler):
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


class JoinPageHandler(FacilityHandler):
    """The invitation link a person opens in a browser: log in (OAuth), then join."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'")

    def unauthenticated(self) -> None:
        self.redirect(self.get_login_url())
        raise web.Finish()

    async def get(self, token: str) -> None:
        try:
            member = await self.call(self.stores.invitations.redeem, token, user=self.actor.name)
        except StoreError as exc:
            self.set_status(exc.status)
            self.finish(_page("Invitation not accepted", str(exc)))
            return
        self.finish(
            _page(
                "Welcome",
                f"{member.user} joined {member.group} as {member.role.value}. "
                "Servers you start can now be charged to this group.",
            )
        )

    def write_error(self, status_code: int, **kwargs) -> None:  # noqa: ARG002 (tornado's signature; the page names the error, the status is already set)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "message", None) or "the invitation could not be handled"
        self.finish(_page("Invitation not accepted", message))


def _page(title: str, message: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p><p><a href='/hub/home'>Back to the hub</a></p>"
        "</body></html>"
    )
