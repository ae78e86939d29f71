"""Quotas: one set of limits per group (any node of the tree)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select

from afhub.groups import tree
from afhub.groups.tree import Action, Actor, Role
from afhub.quotas.limits import InvalidQuota, Limits, ceiling_of, check_within, parse_limits
from afhub.stores.database import Database
from afhub.stores.groups import chain_rows, group_row
from afhub.stores.models import Group, Membership, Quota, User


def quota_limits(quota: Quota | None) -> Limits:
    if quota is None:
        return Limits()
    return Limits(
        gpu_hours=quota.gpu_hours,
        cpu_core_hours=quota.cpu_core_hours,
        max_servers=quota.max_servers,
        max_gpus=quota.max_gpus,
        max_dask_cores=quota.max_dask_cores,
        period=quota.period,
    )


class QuotaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, path: str) -> Limits:
        """``path``'s own limits (``Limits()`` when none are set)."""
        with self.db.read() as session:
            group = group_row(session, path)
            return quota_limits(session.get(Quota, group.id))

    def set(
        self,
        path: str,
        values: Mapping[str, object],
        *,
        actor: Actor | None = None,
        replace: bool = False,
    ) -> Limits:
        """Change ``path``'s limits: keys in ``values`` change (``None`` removes a limit),
        others stay, unless ``replace``. Returns the new limits.

        Validation (``InvalidQuota``): numbers >= 0, whole numbers for counts, known keys
        and periods. With a non-facility-admin ``actor``: the actor must administer an
        ancestor of ``path``, and each new limit must be within the effective limit above.
        """
        if actor is not None:
            tree.require(actor, Action.SET_QUOTA, path)
        with self.db.write() as session:
            group = group_row(session, path)
            row = session.get(Quota, group.id)
            limits = parse_limits(values, base=None if replace else quota_limits(row))
            if actor is not None and not actor.is_facility_admin:
                above = [
                    (g.path, quota_limits(session.get(Quota, g.id)))
                    for g in chain_rows(session, group.id)
                    if g.id != group.id
                ]
                check_within(limits, ceiling_of(above))
            if row is None:
                row = Quota(group_id=group.id)
                session.add(row)
            for key, value in limits.to_dict().items():
                setattr(row, key, value)
            row.updated_at = datetime.now(UTC)
            row.updated_by = actor.name if actor else None
            return limits

    def clear(self, path: str, *, actor: Actor | None = None) -> None:
        """Remove every limit of ``path``."""
        if actor is not None:
            tree.require(actor, Action.SET_QUOTA, path)
        with self.db.write() as session:
            group = group_row(session, path)
            row = session.get(Quota, group.id)
            if row is not None:
                session.delete(row)

    def admins_to_ask(self, path: str) -> list[str]:
        """Whom a person refused by group ``path``'s quota can ask: its admins, else those
        of the nearest group above it that has any; [] when none has any."""
        with self.db.read() as session:
            chain = [g.id for g in chain_rows(session, group_row(session, path).id)]
            rows = session.execute(
                select(Membership.group_id, User.name)
                .join(User, User.id == Membership.user_id)
                .where(Membership.group_id.in_(chain), Membership.role == Role.ADMIN.value)
                .order_by(User.name)
            ).all()
        for group_id in reversed(chain):  # the group itself first, then up to the root
            if admins := [name for owner, name in rows if owner == group_id]:
                return admins
        return []

    def all(self) -> dict[str, Limits]:
        """Every group that has limits, by path."""
        with self.db.read() as session:
            rows = session.execute(
                select(Group.path, Quota).join(Quota, Quota.group_id == Group.id)
            )
            return {path: quota_limits(quota) for path, quota in rows}


__all__ = ["InvalidQuota", "QuotaStore"]
