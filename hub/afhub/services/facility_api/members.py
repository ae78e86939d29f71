"""``/api/groups/{path}/-/members``: memberships and roles."""

from __future__ import annotations

from afhub.groups import tree
from afhub.groups.tree import Action, Role
from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError


class MembersHandler(FacilityHandler):
    async def get(self, path: str) -> None:
        tree.require(self.actor, Action.VIEW, path)
        members = await self.call(self.stores.groups.members, path)
        self.send({"members": [m.to_dict() for m in members]})


class MemberHandler(FacilityHandler):
    async def put(self, path: str, user: str) -> None:
        """Add ``user`` to the group, or change their role: ``{"role": "admin"}``."""
        body = self.json_body()
        role = self.field(body, "role", str, default="member")
        try:
            role = Role.parse(role)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        member = await self.call(
            self.stores.groups.add_member, path, user, role=role, actor=self.actor
        )
        self.send(member.to_dict())

    async def delete(self, path: str, user: str) -> None:
        await self.call(self.stores.groups.remove_member, path, user, actor=self.actor)
        self.set_status(204)
        self.finish()
