"""``/api/groups/{path}/-/members``: memberships and roles."""

from __future__ import annotations

from afhub.groups import tree
from afhub.groups.tree import Action
from afhub.services.facility_api.base import FacilityHandler


class MembersHandler(FacilityHandler):
    async def get(self, path: str) -> None:
        tree.require(self.actor, Action.VIEW, path)
        members = await self.call(self.stores.groups.members, path)
        self.send({"members": [m.to_dict() for m in members]})


class MemberHandler(FacilityHandler):
    async def put(self, path: str, user: str) -> None:
        """Add ``user`` to the group, or change their role: ``{"role": "admin"}``."""
        body = self.json_body()
        role = self.role_field(body)
        member = await self.call(
            self.stores.groups.add_member, path, user, role=role, actor=self.actor
        )
        self.send(member.to_dict())

    async def delete(self, path: str, user: str) -> None:
        await self.call(self.stores.groups.remove_member, path, user, actor=self.actor)
        self.set_status(204)
        self.finish()
