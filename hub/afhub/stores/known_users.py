"""Adding a person to a group by name: only a person of the facility (issue 13).

A person of the facility logged in once (afhub recorded them) or has a local account that
has not logged in yet (the caller says so through ``has_account``). Anyone else gets
:class:`UnknownUser`: an invitation is the way to add someone who has not come yet. The CLI's
``afhub groups add-member`` and the facility API's ``PUT .../-/members/USER`` both add
members through :func:`add_known_member`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from afhub.groups import tree
from afhub.groups.tree import Action, Actor, Role
from afhub.stores.errors import NotFound
from afhub.stores.groups import GroupStore, MemberInfo, group_row, validate_user_name
from afhub.stores.models import User


class UnknownUser(NotFound):
    """The person to add never logged in and has no local account."""


def add_known_member(
    groups: GroupStore,
    path: str,
    user: str,
    *,
    role: Role | str = Role.MEMBER,
    actor: Actor | None = None,
    has_account: Callable[[str], bool] | None = None,
) -> MemberInfo:
    """:meth:`GroupStore.add_member` for a person of the facility; :class:`UnknownUser` for
    anyone else, raised after the permission and group checks so that only who may manage
    the group's members learns whether a name exists."""
    role = Role.parse(role)
    if actor is not None:
        tree.require(actor, Action.MANAGE_MEMBERS, path)
    with groups.db.read() as session:
        group_row(session, path)
        known = session.scalar(select(User.id).where(User.name == validate_user_name(user)))
    if known is None and not (has_account is not None and has_account(user)):
        raise UnknownUser(f"no user {user!r} on this facility: they have never logged in")
    return groups.add_member(path, user, role=role)
