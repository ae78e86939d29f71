"""``/api/groups/{path}/-/members``: memberships and roles."""

from __future__ import annotations

from afhub.groups import tree
from afhub.groups.tree import Action
from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError
from afhub.stores.known_users import UnknownUser, add_known_member


class MembersHandler(FacilityHandler):
    async def get(self, path: str) -> None:
        tree.require(self.actor, Action.VIEW, path)
        members = await self.call(self.stores.groups.members, path)
        self.send({"members": [m.to_dict() for m in members]})


class MemberHandler(FacilityHandler):
    async def put(self, path: str, user: str) -> None:
        """Add ``user`` to the group, or change their role: ``{"role": "admin"}``. Only a
        person who logged in once (or has a local account); others get an invitation."""
        body = self.json_body()
        role = self.role_field(body)
        try:
            member = await self.call(
                add_known_member,
                self.stores.groups,
                path,
                user,
                role=role,
                actor=self.actor,
                has_account=self.settings.get("afhub_has_account"),
            )
        except UnknownUser as exc:
            invitations = f"{self.settings['afhub_prefix']}api/groups/{path}/-/invitations"
            raise ApiError(
                404,
                f"{exc}; check the name, ask them to log in once and add them again, or send "
                f"them an invitation (POST {invitations})",
            ) from None
        self.send(member.to_dict())

    async def delete(self, path: str, user: str) -> None:
        await self.call(self.stores.groups.remove_member, path, user, actor=self.actor)
        self.set_status(204)
        self.finish()
