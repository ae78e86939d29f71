"""``/api/groups``: the group tree."""

from __future__ import annotations

from afhub.groups import tree
from afhub.groups.tree import Action
from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError


class GroupsHandler(FacilityHandler):
    async def get(self) -> None:
        """Groups the caller may see."""
        groups = await self.call(self.stores.groups.list, actor=self.actor)
        self.send({"groups": [g.to_dict() for g in groups]})

    async def post(self) -> None:
        """Create a group; its parent must exist."""
        body = self.json_body()
        path = self.field(body, "path", str, required=True)
        info = await self.call(self.stores.groups.create, path, actor=self.actor)
        self.send(info.to_dict(), status=201)


class GroupHandler(FacilityHandler):
    async def get(self, path: str) -> None:
        tree.require(self.actor, Action.VIEW, path)
        info = await self.call(self.stores.groups.get, path)
        subtree = await self.call(self.stores.groups.list, path, actor=self.actor)
        payload = info.to_dict()
        payload["subgroups"] = [g.path for g in subtree if g.parent == path]
        self.send(payload)

    async def patch(self, path: str) -> None:
        """Move a group (and its subtree) under another parent: ``{"parent": "cms"}``, or to
        the top level with ``{"parent": null}``."""
        body = self.json_body()
        if "parent" not in body:
            raise ApiError(400, "field 'parent' is required (a group path, or null for top level)")
        parent = self.field(body, "parent", str)
        renames = await self.call(self.stores.groups.move, path, parent, actor=self.actor)
        self.send({"moved": renames})

    async def delete(self, path: str) -> None:
        """Delete a group; ``?recursive=true`` also deletes its subgroups. Refused (409) while
        servers, clusters or jobs charged to it run."""
        recursive = self.bool_argument("recursive")
        deleted = await self.call(
            self.stores.groups.delete, path, recursive=recursive, actor=self.actor
        )
        self.send({"deleted": deleted})
