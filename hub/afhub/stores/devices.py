"""Exclusive accelerator slots: which server holds which slot of which resource.

One row per held slot, unique on ``(resource, slot)``: two servers can never hold the
same slot, whatever the backend and however many hubs race (a losing insert fails on the
unique constraint and the allocation is retried with what is left). A slot is freed when
its server stops (:meth:`DeviceStore.release`), and reclaimed when the ledger interval
it was allocated under is no longer open (a spawn that failed, a server that died with
a crashed hub and was closed by the accountant's reconciliation) or when the caller says
its server is gone (:meth:`DeviceStore.reclaim`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from afhub.devices import busy_message, choose_slots
from afhub.registry.model import Resource
from afhub.stores.database import Database
from afhub.stores.errors import StoreError
from afhub.stores.models import DeviceAllocation, LedgerInterval

#: attempts before giving up when concurrent allocations keep taking the chosen slots
MAX_ATTEMPTS = 8


class DevicesBusy(StoreError):
    """Fewer free slots than requested (HTTP 409: try later, or fewer)."""

    status = 409


@dataclass(frozen=True)
class Allocation:
    resource: str
    slot: int
    user: str
    server_name: str
    interval_id: int | None


def _allocation(row: DeviceAllocation) -> Allocation:
    return Allocation(row.resource, row.slot, row.user_name, row.server_name, row.interval_id)


def _stale(session: Session, resource: str | None = None) -> list[int]:
    """Rows whose ledger interval is gone or no longer open."""
    open_ids = select(LedgerInterval.id).where(LedgerInterval.is_open())
    query = select(DeviceAllocation.id).where(
        DeviceAllocation.interval_id.is_not(None), DeviceAllocation.interval_id.not_in(open_ids)
    )
    if resource is not None:
        query = query.where(DeviceAllocation.resource == resource)
    return list(session.scalars(query))


class DeviceStore:
    """Allocation, release and reclamation of accelerator slots."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def allocate(
        self,
        resource: Resource,
        total: int,
        count: int,
        *,
        user: str,
        server_name: str = "",
        interval_id: int | None = None,
    ) -> list[int]:
        """Give ``user``'s server ``count`` free slots of ``resource`` (of ``total``).

        Stale rows of the resource are reclaimed first, and whatever the same server
        still held is released (it is being spawned anew). Raises :class:`DevicesBusy`.
        """
        if count <= 0:
            self.release(user=user, server_name=server_name)
            return []
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._try_allocate(resource, total, count, user, server_name, interval_id)
            except IntegrityError:
                # another hub (PostgreSQL) took one of the chosen slots meanwhile
                time.sleep(0.01 * (attempt + 1))
        raise DevicesBusy(
            f"resource {resource.name!r}: could not allocate {count} slot(s) after "
            f"{MAX_ATTEMPTS} attempts while other servers were starting; try again"
        )

    def _try_allocate(self, resource, total, count, user, server_name, interval_id):
        with self.db.write() as session:
            stale = _stale(session, resource.name)
            mine = select(DeviceAllocation.id).where(
                DeviceAllocation.user_name == user, DeviceAllocation.server_name == server_name
            )
            drop = stale + list(session.scalars(mine))
            if drop:
                session.execute(delete(DeviceAllocation).where(DeviceAllocation.id.in_(drop)))
            taken = list(
                session.scalars(
                    select(DeviceAllocation.slot).where(DeviceAllocation.resource == resource.name)
                )
            )
            slots = choose_slots(total, taken, count)
            if slots is None:
                raise DevicesBusy(busy_message(resource, total, len(taken), count))
            now = time.time()
            session.add_all(
                DeviceAllocation(
                    resource=resource.name,
                    slot=slot,
                    user_name=user,
                    server_name=server_name,
                    interval_id=interval_id,
                    allocated_ts=now,
                )
                for slot in slots
            )
            session.flush()
            return slots

    def release(self, *, user: str, server_name: str = "") -> int:
        """Free every slot held by ``user``'s server; returns how many."""
        with self.db.write() as session:
            result = session.execute(
                delete(DeviceAllocation).where(
                    DeviceAllocation.user_name == user, DeviceAllocation.server_name == server_name
                )
            )
            return result.rowcount or 0

    def held_by(self, *, user: str, server_name: str = "") -> list[Allocation]:
        with self.db.read() as session:
            rows = session.scalars(
                select(DeviceAllocation)
                .where(
                    DeviceAllocation.user_name == user, DeviceAllocation.server_name == server_name
                )
                .order_by(DeviceAllocation.resource, DeviceAllocation.slot)
            )
            return [_allocation(r) for r in rows]

    def allocations(self, resource: str | None = None) -> list[Allocation]:
        with self.db.read() as session:
            query = select(DeviceAllocation).order_by(
                DeviceAllocation.resource, DeviceAllocation.slot
            )
            if resource is not None:
                query = query.where(DeviceAllocation.resource == resource)
            return [_allocation(r) for r in session.scalars(query)]

    def counts(self) -> dict[str, int]:
        """Held slots per resource (stale rows included until reclaimed)."""
        with self.db.read() as session:
            rows = session.execute(
                select(DeviceAllocation.resource, func.count()).group_by(DeviceAllocation.resource)
            )
            return {name: int(n) for name, n in rows}

    def reclaim(self, alive: Iterable[tuple[str, str]] | None = None) -> int:
        """Delete stale rows: their ledger interval is not open or, when ``alive`` (the
        ``(user, server name)`` pairs the hub sees running) is given, their server is not
        among them. Returns how many rows were deleted."""
        with self.db.write() as session:
            drop = set(_stale(session))
            if alive is not None:
                keep = set(alive)
                for row_id, user, name in session.execute(
                    select(
                        DeviceAllocation.id,
                        DeviceAllocation.user_name,
                        DeviceAllocation.server_name,
                    )
                ):
                    if (user, name) not in keep:
                        drop.add(row_id)
            if drop:
                session.execute(delete(DeviceAllocation).where(DeviceAllocation.id.in_(drop)))
            return len(drop)
