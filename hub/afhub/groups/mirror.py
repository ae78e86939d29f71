"""Mirror afhub's memberships into JupyterHub groups: the plan, as a pure function.

afhub's database is the source of truth. At hub start (and after changes) the hub makes
JupyterHub's groups match it, so that JupyterHub RBAC, KubeSpawner and Dask Gateway see the
same memberships. Each afhub group ``atlas/higgs`` is the JupyterHub group of the same name,
holding the group's *direct* members.

Edits made in the hub (its admin page's "Manage Groups", or its REST API) are not undone:
before each mirror the accountant compares the hub's groups with what it mirrored last time
(:func:`hub_edits`) and applies the difference to afhub first, so the edit flows into afhub
and the mirror then keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MirrorPlan:
    """What to change in JupyterHub so that its groups mirror afhub's."""

    create_groups: list[str] = field(default_factory=list)
    delete_groups: list[str] = field(default_factory=list)
    add_members: dict[str, list[str]] = field(default_factory=dict)
    remove_members: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (
            self.create_groups or self.delete_groups or self.add_members or self.remove_members
        )


def plan_mirror(
    afhub_members: Mapping[str, Iterable[str]],
    hub_members: Mapping[str, Iterable[str]],
    *,
    managed: Iterable[str] = (),
) -> MirrorPlan:
    """Changes that make ``hub_members`` (JupyterHub group -> users) equal ``afhub_members``.

    JupyterHub groups that afhub does not know are deleted only if listed in ``managed``
    (groups afhub created earlier); others (made by an authenticator, say) are left alone.
    """
    wanted = {group: set(users) for group, users in afhub_members.items()}
    present = {group: set(users) for group, users in hub_members.items()}
    create = sorted(set(wanted) - set(present))
    delete = sorted((set(present) - set(wanted)) & set(managed))
    add: dict[str, list[str]] = {}
    remove: dict[str, list[str]] = {}
    for group, users in sorted(wanted.items()):
        have = present.get(group, set())
        if users - have:
            add[group] = sorted(users - have)
        if have - users:
            remove[group] = sorted(have - users)
    return MirrorPlan(create, delete, add, remove)


def hub_edits(
    last_mirrored: Mapping[str, Iterable[str]],
    hub_members: Mapping[str, Iterable[str]],
    afhub_members: Mapping[str, Iterable[str]],
) -> MirrorPlan:
    """What was edited in JupyterHub since afhub last mirrored its groups there
    (``last_mirrored``) and is not in afhub yet (``afhub_members``): groups created or
    deleted, members added or removed. A change afhub already has (the login hook sets a
    person's hub groups from afhub's memberships) is no edit: applying it again could
    change a role."""
    changed = plan_mirror(hub_members, last_mirrored, managed=last_mirrored)
    afhub = {group: set(users) for group, users in afhub_members.items()}
    return MirrorPlan(
        create_groups=[g for g in changed.create_groups if g not in afhub],
        delete_groups=[g for g in changed.delete_groups if g in afhub],
        add_members=_only(changed.add_members, lambda g, u: u not in afhub.get(g, set())),
        remove_members=_only(changed.remove_members, lambda g, u: u in afhub.get(g, set())),
    )


def _only(members: dict[str, list[str]], keep) -> dict[str, list[str]]:
    kept = {group: [u for u in users if keep(group, u)] for group, users in members.items()}
    return {group: users for group, users in kept.items() if users}
