"""The Groups pages: the tree a person can see (``groups``) and one group (``groups/<path>``)
with its members, subgroups and invitations. Every fact and every change goes through the
facility API with the viewer's token; a control is shown only where the API would allow it
(:func:`afhub.groups.tree.may`, the rule the API itself applies), and a refusal shows the
API's own message."""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import web

from afhub.groups.tree import Action, Actor, Role, may
from afhub.web.base import PageHandler
from afhub.web.facility import ServiceClient, ServiceRefused, group_url

#: what a person may do on a group's page, by the action of the group tree it needs
CONTROLS = {
    "manage_members": Action.MANAGE_MEMBERS,
    "create_subgroup": Action.CREATE_SUBGROUP,
    "manage_invitations": Action.MANAGE_INVITATIONS,
    "delete": Action.DELETE,
    "move": Action.MOVE,
}


def actor_of(me: dict[str, Any]) -> Actor:
    """The viewer as the group tree sees them, from the API's ``users/me``."""
    roles = {path: Role(role) for path, role in (me.get("groups") or {}).items()}
    return Actor(me["name"], bool(me.get("is_facility_admin")), roles)


def tree_rows(groups: list[dict[str, Any]], actor: Actor) -> list[dict[str, Any]]:
    """The visible groups in tree order (a parent before its subgroups), with depth and the
    viewer's role."""
    ordered = sorted(groups, key=lambda g: g["path"].split("/"))
    depth: dict[str, int] = {}
    rows = []
    for group in ordered:
        path, parent = group["path"], group.get("parent")
        # a group whose parent the viewer cannot see starts a tree of its own, full path
        shown = parent in depth
        depth[path] = depth[parent] + 1 if shown else 0
        rows.append(
            {
                "path": path,
                "name": path.rsplit("/", 1)[-1] if shown else path,
                "depth": depth[path],
                "role": actor.roles.get(path, ""),
            }
        )
    return rows


class GroupsPage(PageHandler):
    """``groups``: the tree; facility admins may create a top-level group."""

    async def get(self, error: ServiceRefused | None = None) -> None:
        api = self.facility()
        me, listing = await asyncio.gather(api.get("users/me"), api.get("groups"))
        actor = actor_of(me)
        self.render_page(
            "afhub/groups.html",
            error.status if error else 200,
            rows=tree_rows(listing["groups"], actor),
            may_create_top=may(actor, Action.CREATE_SUBGROUP, None),
            error=error.message if error else None,
        )

    async def post(self) -> None:
        name = self.get_body_argument("name", "").strip()
        try:
            await self.facility().call("POST", "groups", {"path": name})
        except ServiceRefused as exc:
            await self.get(error=exc)
            return
        self.redirect(self.page_url(group_url(name)), status=303)


class GroupPage(PageHandler):
    """``groups/<path>``: one group; a form's ``action`` says which change it asks for."""

    async def get(
        self, path: str, *, error: ServiceRefused | None = None, created: Any = None
    ) -> None:
        api = self.facility()
        me, group, members = await asyncio.gather(
            api.get("users/me"), api.get(group_url(path)), api.get(group_url(path, "members"))
        )
        actor = actor_of(me)
        allowed = {name: may(actor, action, path) for name, action in CONTROLS.items()}
        invitations = []
        if allowed["manage_invitations"]:
            invitations = (await api.get(group_url(path, "invitations")))["invitations"]
        parents = []
        if allowed["move"]:
            listing = await api.get("groups")
            parents = [
                g["path"]
                for g in listing["groups"]
                if g["path"] != path and not g["path"].startswith(path + "/")
            ]
        self.render_page(
            "afhub/group.html",
            error.status if error else 200,
            group=group,
            members=members["members"],
            invitations=invitations,
            allowed=allowed,
            parents=parents,
            may_top=may(actor, Action.CREATE_SUBGROUP, None),
            error=error.message if error else None,
            created=created,
            join_base=self.request.protocol + "://" + self.request.host,
        )

    async def post(self, path: str) -> None:
        action = self.get_body_argument("action", "")
        change = getattr(self, "_" + action.replace("-", "_"), None)
        if action not in ACTIONS or change is None:
            raise web.HTTPError(400, f"unknown action {action!r}")
        api = self.facility()
        try:
            landing = await change(api, path)
        except ServiceRefused as exc:
            await self.get(path, error=exc)
            return
        if isinstance(landing, dict):  # a new invitation: its link is shown once
            await self.get(path, created=landing)
            return
        self.redirect(landing, status=303)

    def _arg(self, name: str) -> str:
        return self.get_body_argument(name, "").strip()

    async def _create_subgroup(self, api: ServiceClient, path: str) -> str:
        new = f"{path}/{self._arg('name')}"
        await api.call("POST", "groups", {"path": new})
        return self.page_url(group_url(new))

    async def _delete(self, api: ServiceClient, path: str) -> str:
        recursive = "true" if self._arg("recursive") else "false"
        await api.call("DELETE", group_url(path), query={"recursive": recursive})
        return self.page_url("groups")

    async def _move(self, api: ServiceClient, path: str) -> str:
        parent = self._arg("parent") or None
        moved = await api.call("PATCH", group_url(path), {"parent": parent})
        return self.page_url(group_url(moved["moved"].get(path, path)))

    async def _add_member(self, api: ServiceClient, path: str) -> str:
        user = self._arg("user")
        if not user:
            raise ServiceRefused(400, "give the user name of the person to add")
        await api.call("PUT", group_url(path, "members", user), {"role": self._arg("role")})
        return self.page_url(group_url(path))

    async def _remove_member(self, api: ServiceClient, path: str) -> str:
        await api.call("DELETE", group_url(path, "members", self._arg("user")))
        return self.page_url(group_url(path))

    async def _invite(self, api: ServiceClient, path: str) -> dict[str, Any]:
        body: dict[str, Any] = {"role": self._arg("role") or "member"}
        for field, kind in (("uses", int), ("expires_in_hours", float)):
            raw = self._arg(field)
            try:
                body[field] = kind(raw)
            except ValueError:
                raise ServiceRefused(400, f"{field.replace('_', ' ')} must be a number") from None
        if self._arg("email"):
            body["email"] = self._arg("email")
        return await api.call("POST", group_url(path, "invitations"), body)

    async def _revoke(self, api: ServiceClient, path: str) -> str:
        invitation = self._arg("invitation")
        if not invitation.isalnum():
            raise ServiceRefused(400, "no such invitation")
        await api.call("DELETE", f"invitations/{invitation}")
        return self.page_url(group_url(path))


#: the forms of a group's page
ACTIONS = frozenset(
    {"create-subgroup", "delete", "move", "add-member", "remove-member", "invite", "revoke"}
)
