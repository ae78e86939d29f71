"""Pure decisions about the group tree: ancestry, moves and who may do what.

Everything here works on group paths (``atlas/higgs``) and plain values; the stores
(:mod:`afhub.stores`) load the facts from the database and call these functions, so the
rules live in one place and are tested without a database.

Permission model (issue 3):

* A facility admin may do everything.
* A group admin (role ``admin`` in group G) manages G's subtree: members of G and of every
  descendant, subgroups under G, invitations to G and its descendants, and quotas on G's
  *strict* descendants (never on G itself or above, so no admin can raise their own limit).
  Deleting or moving a group needs admin rights on its parent's subtree.
* A member (role ``member``) may see the group and read its usage; nothing else.
* Nobody but a facility admin may grant facility admin or create top-level groups.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from afhub.groups.names import MAX_DEPTH, SEPARATOR, leaf_name, parent_path, validate_path


class Role(enum.StrEnum):
    """A person's role in one group."""

    MEMBER = "member"
    ADMIN = "admin"

    @classmethod
    def parse(cls, value: object) -> Role:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return cls(value)
        raise ValueError(f"unknown role {value!r}: use one of {', '.join(r.value for r in cls)}")


class TreeError(ValueError):
    """A change that would break the tree (a cycle, a duplicate, too deep)."""


class PermissionDenied(Exception):
    """The actor may not do this; ``str()`` says why, in words a person can act on."""


def ancestors(path: str) -> list[str]:
    """Strict ancestors of ``path``, root first: ``a/b/c`` -> ``['a', 'a/b']``."""
    segments = validate_path(path).split(SEPARATOR)
    return [SEPARATOR.join(segments[:i]) for i in range(1, len(segments))]


def chain(path: str) -> list[str]:
    """``path`` and its ancestors, root first: ``a/b`` -> ``['a', 'a/b']``."""
    return [*ancestors(path), path]


def is_ancestor_or_self(candidate: str, path: str) -> bool:
    """True when ``candidate`` is ``path`` or one of its ancestors."""
    return path == candidate or path.startswith(candidate + SEPARATOR)


def is_strict_ancestor(candidate: str, path: str) -> bool:
    return path != candidate and is_ancestor_or_self(candidate, path)


def descendants(path: str, all_paths: Iterable[str]) -> list[str]:
    """Strict descendants of ``path`` among ``all_paths``, sorted (parents before children)."""
    prefix = path + SEPARATOR
    return sorted(p for p in all_paths if p.startswith(prefix))


def plan_move(path: str, new_parent: str | None, existing: Iterable[str]) -> dict[str, str]:
    """Plan moving ``path`` (with its subtree) under ``new_parent`` (``None``: top level).

    Returns the renames ``{old_path: new_path}`` for the group and every descendant.
    Raises :class:`TreeError` for a move under itself or its own descendant, a name that
    already exists at the destination, or a result deeper than the limit.
    """
    validate_path(path)
    existing = set(existing)
    if path not in existing:
        raise TreeError(f"group {path!r} does not exist")
    if new_parent is not None:
        validate_path(new_parent)
        if new_parent not in existing:
            raise TreeError(f"destination group {new_parent!r} does not exist")
        if is_ancestor_or_self(path, new_parent):
            raise TreeError(
                f"cannot move {path!r} under {new_parent!r}: a group cannot be moved under "
                "itself or one of its own descendants (that would make a cycle)"
            )
    if parent_path(path) == new_parent:
        return {}
    new_root = leaf_name(path) if new_parent is None else new_parent + SEPARATOR + leaf_name(path)
    if new_root in existing:
        raise TreeError(f"cannot move {path!r}: a group named {new_root!r} already exists")
    subtree = [path, *descendants(path, existing)]
    renames = {old: new_root + old[len(path) :] for old in subtree}
    deepest = max(len(new.split(SEPARATOR)) for new in renames.values())
    if deepest > MAX_DEPTH:
        raise TreeError(
            f"cannot move {path!r} under {new_parent!r}: its subtree would be {deepest} levels "
            f"deep; the limit is {MAX_DEPTH}"
        )
    for new in renames.values():
        try:
            validate_path(new)
        except ValueError as exc:
            raise TreeError(f"cannot move {path!r}: {exc}") from None
    return renames


class Action(enum.StrEnum):
    """What an actor wants to do to a group."""

    VIEW = "view"
    READ_USAGE = "read usage of"
    MANAGE_MEMBERS = "manage members of"
    CREATE_SUBGROUP = "create subgroups of"
    DELETE = "delete"
    MOVE = "move"
    SET_QUOTA = "set quotas of"
    MANAGE_INVITATIONS = "manage invitations to"


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user name, the facility-admin flag and their roles by group path."""

    name: str
    is_facility_admin: bool = False
    roles: Mapping[str, Role] = field(default_factory=dict)

    def role_in(self, path: str) -> Role | None:
        return self.roles.get(path)

    def admin_over(self, path: str) -> str | None:
        """The highest group on ``path``'s chain where the actor is admin, or ``None``."""
        for node in chain(path):
            if self.roles.get(node) == Role.ADMIN:
                return node
        return None


def may(actor: Actor, action: Action, path: str | None) -> bool:
    """Whether ``actor`` may do ``action`` on group ``path``.

    ``path=None`` stands for the top of the tree: only :attr:`Action.CREATE_SUBGROUP`
    (creating a top-level group) is meaningful there, and only facility admins may.
    """
    if actor.is_facility_admin:
        return True
    if path is None:
        return False
    if action in (Action.VIEW, Action.READ_USAGE):
        return actor.role_in(path) is not None or actor.admin_over(path) is not None
    if action in (Action.MANAGE_MEMBERS, Action.CREATE_SUBGROUP, Action.MANAGE_INVITATIONS):
        return actor.admin_over(path) is not None
    if action in (Action.SET_QUOTA, Action.DELETE, Action.MOVE):
        # only on strict descendants of a group the actor administers
        return any(actor.roles.get(node) == Role.ADMIN for node in ancestors(path))
    raise ValueError(f"unknown action {action!r}")


def require(actor: Actor, action: Action, path: str | None) -> None:
    """Raise :class:`PermissionDenied` with an explanation unless :func:`may` allows it."""
    if may(actor, action, path):
        return
    if path is None:
        raise PermissionDenied(
            f"only facility admins may create top-level groups ({actor.name} is not one)"
        )
    if action in (Action.SET_QUOTA, Action.DELETE, Action.MOVE):
        raise PermissionDenied(
            f"{actor.name} may not {action.value} group {path!r}: that needs the admin role "
            "in one of its ancestor groups (a group admin manages what is below the group, "
            "not the group's own quota or existence) or facility admin"
        )
    if action in (Action.VIEW, Action.READ_USAGE):
        raise PermissionDenied(
            f"{actor.name} may not {action.value} group {path!r}: only its members, admins "
            "of it or of an ancestor group, and facility admins may"
        )
    raise PermissionDenied(
        f"{actor.name} may not {action.value} group {path!r}: that needs the admin role in "
        "this group or one of its ancestors, or facility admin"
    )


def require_may_grant_facility_admin(actor: Actor) -> None:
    """Only facility admins may grant (or revoke) facility admin, to anyone, themselves too."""
    if not actor.is_facility_admin:
        raise PermissionDenied(
            f"{actor.name} may not grant or revoke facility admin: only facility admins may"
        )


def visible_groups(actor: Actor, all_paths: Iterable[str]) -> list[str]:
    """The groups ``actor`` may see, sorted."""
    return sorted(p for p in all_paths if may(actor, Action.VIEW, p))
