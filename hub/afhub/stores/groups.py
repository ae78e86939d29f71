"""Groups, users and memberships.

The afhub database is the source of truth for groups and memberships. JupyterHub groups
are a mirror (see :meth:`GroupStore.membership_map`), rebuilt from here at hub start so
that JupyterHub RBAC, KubeSpawner and Dask Gateway see the same memberships.

Mutating methods take an optional ``actor``: when given, the permission rules of
:mod:`afhub.groups.tree` are applied (``PermissionDenied``); ``None`` means a trusted
caller (the hub itself, or the ``afhub`` CLI run by an operator with database access).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from afhub.groups import tree
from afhub.groups.names import MAX_DEPTH, leaf_name, parent_path, validate_path
from afhub.groups.tree import Action, Actor, Role
from afhub.stores.database import Database
from afhub.stores.errors import AlreadyExists, Busy, NotAMember, NotFound, StoreError
from afhub.stores.fitting import ACTIVE_STATES as FIT_ACTIVE_STATES
from afhub.stores.models import FitJob, Group, GroupClosure, LedgerInterval, Membership, User


@dataclass(frozen=True)
class GroupInfo:
    id: int
    path: str
    parent: str | None
    depth: int
    created_at: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "parent": self.parent,
            "depth": self.depth,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class MemberInfo:
    group: str
    user: str
    role: Role
    source: str

    def to_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "user": self.user,
            "role": self.role.value,
            "source": self.source,
        }


@dataclass(frozen=True)
class UserInfo:
    name: str
    email: str | None
    is_facility_admin: bool
    default_group: str | None
    roles: dict[str, Role]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "email": self.email,
            "is_facility_admin": self.is_facility_admin,
            "default_group": self.default_group,
            "groups": {path: role.value for path, role in sorted(self.roles.items())},
        }


def validate_user_name(name: object) -> str:
    """A JupyterHub user name as afhub stores it: 1-255 printable characters."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise StoreError("a user name must be a non-empty string of at most 255 characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in name):
        raise StoreError("a user name must not contain control characters")
    return name


# --- session-level helpers shared by the stores ---------------------------------------------


def group_row(session: Session, path: str, *, what: str = "group") -> Group:
    validate_path(path)
    row = session.scalar(select(Group).where(Group.path == path))
    if row is None:
        raise NotFound(f"{what} {path!r} does not exist")
    return row


def user_row(
    session: Session, name: str, *, create: bool = False, email: str | None = None
) -> User:
    validate_user_name(name)
    row = session.scalar(select(User).where(User.name == name))
    if row is None:
        if not create:
            raise NotFound(f"user {name!r} is not known to afhub")
        row = User(name=name, email=email, is_facility_admin=False)
        session.add(row)
        session.flush()
    elif email and row.email != email:
        row.email = email
    return row


def chain_rows(session: Session, group_id: int) -> list[Group]:
    """The group and its ancestors, root first."""
    return list(
        session.scalars(
            select(Group)
            .join(GroupClosure, GroupClosure.ancestor_id == Group.id)
            .where(GroupClosure.descendant_id == group_id)
            .order_by(Group.depth)
        )
    )


def subtree_ids(session: Session, group_id: int) -> list[int]:
    return list(
        session.scalars(
            select(GroupClosure.descendant_id).where(GroupClosure.ancestor_id == group_id)
        )
    )


def roles_of(session: Session, user_name: str) -> dict[str, Role]:
    rows = session.execute(
        select(Group.path, Membership.role)
        .join(Membership, Membership.group_id == Group.id)
        .join(User, User.id == Membership.user_id)
        .where(User.name == user_name)
    )
    return {path: Role(role) for path, role in rows}


def _info(row: Group) -> GroupInfo:
    return GroupInfo(row.id, row.path, parent_path(row.path), row.depth, row.created_at)


class GroupStore:
    """The group tree, users and memberships."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- groups ---------------------------------------------------------------------------

    def get(self, path: str) -> GroupInfo:
        with self.db.read() as session:
            return _info(group_row(session, path))

    def list(self, under: str | None = None, *, actor: Actor | None = None) -> list[GroupInfo]:
        """All groups (or ``under``'s subtree, itself included), parents before children;
        only those ``actor`` may see, when given."""
        with self.db.read() as session:
            query = select(Group).order_by(Group.path)
            if under is not None:
                top = group_row(session, under)
                query = query.join(GroupClosure, GroupClosure.descendant_id == Group.id).where(
                    GroupClosure.ancestor_id == top.id
                )
            groups = [_info(row) for row in session.scalars(query)]
        if actor is not None:
            groups = [g for g in groups if tree.may(actor, Action.VIEW, g.path)]
        return groups

    def create(self, path: str, *, actor: Actor | None = None) -> GroupInfo:
        """Create ``path``; its parent must exist. Raises ``AlreadyExists`` for a duplicate."""
        validate_path(path)
        parent = parent_path(path)
        if actor is not None:
            tree.require(actor, Action.CREATE_SUBGROUP, parent)
        try:
            with self.db.write() as session:
                if session.scalar(select(Group.id).where(Group.path == path)) is not None:
                    raise AlreadyExists(f"group {path!r} already exists")
                parent_row = group_row(session, parent, what="parent group") if parent else None
                row = Group(
                    path=path,
                    name=leaf_name(path),
                    parent_id=parent_row.id if parent_row else None,
                    depth=parent_row.depth + 1 if parent_row else 1,
                )
                session.add(row)
                session.flush()
                session.add(GroupClosure(ancestor_id=row.id, descendant_id=row.id, distance=0))
                if parent_row is not None:
                    session.execute(
                        insert(GroupClosure).from_select(
                            ["ancestor_id", "descendant_id", "distance"],
                            select(
                                GroupClosure.ancestor_id,
                                literal(row.id, Integer),
                                GroupClosure.distance + 1,
                            ).where(GroupClosure.descendant_id == parent_row.id),
                        )
                    )
                return _info(row)
        except IntegrityError:
            raise AlreadyExists(f"group {path!r} already exists") from None

    def delete(
        self, path: str, *, recursive: bool = False, actor: Actor | None = None
    ) -> list[str]:
        """Delete ``path`` (with its subgroups when ``recursive``); returns deleted paths.

        Refused (``Busy``) while any server, cluster or job charged to the subtree is
        running or starting: stop them first. Ledger history is kept with the group's name.
        """
        if actor is not None:
            tree.require(actor, Action.DELETE, path)
        with self.db.write() as session:
            row = group_row(session, path)
            ids = subtree_ids(session, row.id)
            if len(ids) > 1 and not recursive:
                raise Busy(
                    f"group {path!r} has {len(ids) - 1} subgroup(s); delete them first or "
                    "ask for a recursive delete"
                )
            paths = list(session.scalars(select(Group.path).where(Group.id.in_(ids))))
            _refuse_busy_subtree(session, path, ids, paths)
            _detach_charges(session, ids, paths, survivor_id=row.parent_id)
            rows = list(
                session.scalars(select(Group).where(Group.id.in_(ids)).order_by(Group.depth.desc()))
            )
            for victim in rows:
                session.execute(delete(Group).where(Group.id == victim.id))
            return [victim.path for victim in reversed(rows)]

    def move(
        self, path: str, new_parent: str | None, *, actor: Actor | None = None
    ) -> dict[str, str]:
        """Move ``path`` and its subtree under ``new_parent`` (``None``: top level).

        Usage already accrued stays with the ancestors that were charged at the time.
        """
        if actor is not None:
            tree.require(actor, Action.MOVE, path)
            tree.require(actor, Action.CREATE_SUBGROUP, new_parent)
        with self.db.write() as session:
            row = group_row(session, path)
            new_parent_row = (
                group_row(session, new_parent, what="destination group") if new_parent else None
            )
            existing = set(session.scalars(select(Group.path)))
            try:
                renames = tree.plan_move(path, new_parent, existing)
            except tree.TreeError as exc:
                raise StoreError(str(exc)) from None
            if not renames:
                return {}
            sub_ids = subtree_ids(session, row.id)
            _reattach_closure(session, row.id, sub_ids, new_parent_row)
            row.parent_id = new_parent_row.id if new_parent_row else None
            _rename_subtree(session, sub_ids, renames)
            _follow_renames(session, renames)
            return renames

    # --- users ------------------------------------------------------------------------------

    def ensure_user(self, name: str, *, email: str | None = None) -> UserInfo:
        """Record a user (called at login); updates the email when one is given."""
        with self.db.write() as session:
            user_row(session, name, create=True, email=email)
        return self.user(name)

    def user(self, name: str) -> UserInfo:
        with self.db.read() as session:
            row = user_row(session, name)
            default = session.get(Group, row.default_group_id) if row.default_group_id else None
            return UserInfo(
                name=row.name,
                email=row.email,
                is_facility_admin=row.is_facility_admin,
                default_group=default.path if default else None,
                roles=roles_of(session, name),
            )

    def set_facility_admin(self, name: str, flag: bool, *, actor: Actor | None = None) -> None:
        if actor is not None:
            tree.require_may_grant_facility_admin(actor)
        with self.db.write() as session:
            user_row(session, name, create=True).is_facility_admin = bool(flag)

    def set_default_group(self, name: str, path: str | None) -> None:
        """Set the group a user's servers are charged to when they choose none."""
        with self.db.write() as session:
            user = user_row(session, name)
            if path is None:
                user.default_group_id = None
                return
            validate_path(path)
            # a group that does not exist reads like one the user is not in
            group = session.scalar(select(Group).where(Group.path == path))
            if group is None or session.get(Membership, (group.id, user.id)) is None:
                raise NotAMember(f"{name} is not a member of group {path!r}")
            user.default_group_id = group.id

    def actor(self, name: str, *, hub_admin: bool = False) -> Actor:
        """The :class:`~afhub.groups.tree.Actor` for a user; JupyterHub admins are facility
        admins."""
        with self.db.read() as session:
            row = session.scalar(select(User).where(User.name == name))
            is_admin = hub_admin or bool(row and row.is_facility_admin)
            return Actor(name=name, is_facility_admin=is_admin, roles=roles_of(session, name))

    # --- memberships ------------------------------------------------------------------------

    def add_member(
        self,
        path: str,
        user: str,
        *,
        role: Role | str = Role.MEMBER,
        source: str = "manual",
        actor: Actor | None = None,
    ) -> MemberInfo:
        """Add ``user`` to ``path`` with ``role`` (or change their role)."""
        role = Role.parse(role)
        if actor is not None:
            tree.require(actor, Action.MANAGE_MEMBERS, path)
        with self.db.write() as session:
            return add_member_in(session, path, user, role=role, source=source)

    def remove_member(self, path: str, user: str, *, actor: Actor | None = None) -> None:
        if actor is not None:
            tree.require(actor, Action.MANAGE_MEMBERS, path)
        with self.db.write() as session:
            group = group_row(session, path)
            row = user_row(session, user)
            membership = session.get(Membership, (group.id, row.id))
            if membership is None:
                raise NotFound(f"{user} is not a member of group {path!r}")
            session.delete(membership)
            if row.default_group_id == group.id:
                row.default_group_id = None

    def members(self, path: str) -> list[MemberInfo]:
        with self.db.read() as session:
            group = group_row(session, path)
            rows = session.execute(
                select(User.name, Membership.role, Membership.source)
                .join(Membership, Membership.user_id == User.id)
                .where(Membership.group_id == group.id)
                .order_by(User.name)
            )
            return [MemberInfo(path, name, Role(role), source) for name, role, source in rows]

    def roles_of(self, user: str) -> dict[str, Role]:
        with self.db.read() as session:
            return roles_of(session, user)

    def membership_map(self) -> dict[str, dict[str, Role]]:
        """Every group's direct members and roles: what the JupyterHub mirror should hold.

        The hub reconciles JupyterHub groups to this at start (afhub is the source of truth).
        """
        with self.db.read() as session:
            result: dict[str, dict[str, Role]] = {
                path: {} for path in session.scalars(select(Group.path))
            }
            rows = session.execute(
                select(Group.path, User.name, Membership.role)
                .join(Membership, Membership.group_id == Group.id)
                .join(User, User.id == Membership.user_id)
            )
            for path, name, role in rows:
                result[path][name] = Role(role)
            return result

    def sync_claims(
        self, user: str, paths: Iterable[str], *, email: str | None = None
    ) -> dict[str, list[str]]:
        """Make ``user``'s claim-sourced memberships equal ``paths`` (from CILogon group
        claims). Unknown groups are skipped (reported), manual and invitation memberships are
        never touched. Returns ``{"added": [...], "removed": [...], "unknown": [...]}``."""
        wanted = set(paths)
        report: dict[str, list[str]] = {"added": [], "removed": [], "unknown": []}
        with self.db.write() as session:
            row = user_row(session, user, create=True, email=email)
            current = {
                path: (role, source)
                for path, role, source in session.execute(
                    select(Group.path, Membership.role, Membership.source)
                    .join(Membership, Membership.group_id == Group.id)
                    .where(Membership.user_id == row.id)
                )
            }
            for path in sorted(wanted):
                try:
                    validate_path(path)
                except ValueError:
                    report["unknown"].append(path)
                    continue
                group_id = session.scalar(select(Group.id).where(Group.path == path))
                if group_id is None:
                    report["unknown"].append(path)
                elif path not in current:
                    session.add(
                        Membership(
                            group_id=group_id, user_id=row.id, role="member", source="claims"
                        )
                    )
                    report["added"].append(path)
            for path, (_role, source) in sorted(current.items()):
                if source == "claims" and path not in wanted:
                    group = group_row(session, path)
                    session.execute(
                        delete(Membership).where(
                            Membership.group_id == group.id, Membership.user_id == row.id
                        )
                    )
                    if row.default_group_id == group.id:
                        row.default_group_id = None
                    report["removed"].append(path)
        return report

    def resolve_charge_group(self, user: str, requested: str | None = None) -> str:
        """The group to charge: ``requested`` if given (the user must be a member), else the
        user's default group, else their only group. Raises with a message saying what to
        choose otherwise."""
        with self.db.read() as session:
            return resolve_charge_group_in(session, user, requested).path


def add_member_in(session: Session, path: str, user: str, *, role: Role, source: str) -> MemberInfo:
    group = group_row(session, path)
    row = user_row(session, user, create=True)
    membership = session.get(Membership, (group.id, row.id))
    if membership is None:
        session.add(Membership(group_id=group.id, user_id=row.id, role=role.value, source=source))
    else:
        membership.role = role.value
        membership.source = source
    if row.default_group_id is None:
        row.default_group_id = group.id
    session.flush()
    return MemberInfo(path, user, role, source)


def resolve_charge_group_in(session: Session, user: str, requested: str | None) -> Group:
    row = session.scalar(select(User).where(User.name == user))
    if row is None:
        raise NotAMember(
            f"{user} is not a member of any group; ask a group admin for an invitation"
        )
    if requested:
        # a group that does not exist and one the user is not in read alike (no existence
        # oracle for other people's groups)
        group = session.scalar(select(Group).where(Group.path == requested))
        if group is None or session.get(Membership, (group.id, row.id)) is None:
            raise NotAMember(
                f"{user} cannot charge group {requested!r}: not a member of it "
                f"(member of: {', '.join(sorted(roles_of(session, user))) or 'no group'})"
            )
        return group
    if row.default_group_id is not None:
        return session.get(Group, row.default_group_id)
    groups = sorted(roles_of(session, user))
    if len(groups) == 1:
        return group_row(session, groups[0])
    if not groups:
        raise NotAMember(
            f"{user} is not a member of any group; ask a group admin for an invitation"
        )
    raise NotAMember(
        f"{user} belongs to several groups ({', '.join(groups)}) and has no default: "
        "choose the group to charge"
    )


def _count(session: Session, table, *where) -> int:
    return session.scalar(select(func.count()).select_from(table).where(*where))


def _refuse_busy_subtree(session: Session, path: str, ids: list[int], paths: list[str]) -> None:
    """``Busy`` while charges of the subtree are open or its fit jobs queued or running."""
    running = _count(
        session,
        LedgerInterval,
        LedgerInterval.is_open(),
        LedgerInterval.group_id.in_(ids),
    )
    if running:
        raise Busy(
            f"group {path!r} has {running} running or starting server(s)/job(s) "
            "charged to it or its subgroups; stop them before deleting the group"
        )
    fits = _count(
        session, FitJob, FitJob.group_path.in_(paths), FitJob.state.in_(FIT_ACTIVE_STATES)
    )
    if fits:
        raise Busy(
            f"group {path!r} has {fits} queued or running fit job(s) charged to it or "
            "its subgroups; cancel them or let them finish before deleting the group"
        )


def _detach_charges(
    session: Session, ids: list[int], paths: list[str], *, survivor_id: int | None
) -> None:
    """Before a subtree is deleted: its fit jobs and ledger charges leave it."""
    # fit jobs name their group by path: the finished ones of a deleted group keep
    # no group, so a group made later under the name sees none of them (their list,
    # their results in a group-scoped cache, their count against its job limit)
    session.execute(
        update(FitJob)
        .where(FitJob.group_path.in_(paths))
        .values(group_path=None)
        .execution_options(synchronize_session=False)
    )
    # the subtree's charges (and charges of groups deleted under it before) stay with
    # the ancestor that survives, by id: a group created later under a deleted
    # group's name is another identity and sees none of them
    session.execute(
        update(LedgerInterval)
        .where(LedgerInterval.group_id.in_(ids) | LedgerInterval.orphan_of_id.in_(ids))
        .values(orphan_of_id=survivor_id)
        .execution_options(synchronize_session=False)
    )


def _reattach_closure(
    session: Session, top_id: int, sub_ids: list[int], new_parent: Group | None
) -> None:
    """Detach the subtree under ``top_id`` from its old ancestors, attach it to the new
    parent's chain (none: top level)."""
    old_ancestors = select(GroupClosure.ancestor_id).where(
        GroupClosure.descendant_id == top_id, GroupClosure.ancestor_id != top_id
    )
    session.execute(
        delete(GroupClosure).where(
            GroupClosure.descendant_id.in_(sub_ids),
            GroupClosure.ancestor_id.in_(old_ancestors.scalar_subquery()),
        )
    )
    if new_parent is None:
        return
    above = session.execute(
        select(GroupClosure.ancestor_id, GroupClosure.distance).where(
            GroupClosure.descendant_id == new_parent.id
        )
    ).all()
    below = session.execute(
        select(GroupClosure.descendant_id, GroupClosure.distance).where(
            GroupClosure.ancestor_id == top_id
        )
    ).all()
    session.execute(
        insert(GroupClosure),
        [
            {"ancestor_id": a, "descendant_id": d, "distance": da + db + 1}
            for a, da in above
            for d, db in below
        ],
    )


def _rename_subtree(session: Session, sub_ids: list[int], renames: dict[str, str]) -> None:
    for sub in session.scalars(select(Group).where(Group.id.in_(sub_ids))):
        sub.path = renames[sub.path]
        sub.depth = sub.path.count("/") + 1
        if sub.depth > MAX_DEPTH:  # plan_move checked; keep the invariant explicit
            raise StoreError(f"group {sub.path!r} would be too deep")


def _follow_renames(session: Session, renames: dict[str, str]) -> None:
    """Open charges and fit jobs follow a moved group's new path."""
    # the ledger keeps the name at charge time for reports; open charges follow
    for old, new in renames.items():
        session.execute(
            update(LedgerInterval)
            .where(LedgerInterval.group_path == old, LedgerInterval.is_open())
            .values(group_path=new)
        )
        # fit jobs name their group by path: they follow it, so that a group made
        # later at the old path is not taken for it
        session.execute(
            update(FitJob)
            .where(FitJob.group_path == old)
            .values(group_path=new)
            .execution_options(synchronize_session=False)
        )
