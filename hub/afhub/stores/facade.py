"""All stores on one database: what the hub, the facility API and the CLI hold."""

from __future__ import annotations

from dataclasses import dataclass

from afhub.stores.database import Database, default_url
from afhub.stores.devices import DeviceStore
from afhub.stores.fitting import FitStore
from afhub.stores.groups import GroupStore
from afhub.stores.invitations import InvitationStore
from afhub.stores.ledger import LedgerStore
from afhub.stores.migrate import upgrade
from afhub.stores.quotas import QuotaStore
from afhub.stores.registry import RegistryStore


@dataclass
class Stores:
    db: Database
    groups: GroupStore
    quotas: QuotaStore
    invitations: InvitationStore
    ledger: LedgerStore
    registry: RegistryStore
    fits: FitStore
    devices: DeviceStore

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True) -> Stores:
        """Open the database at ``url`` (default: :func:`default_url`), bringing its schema
        up to date first unless ``migrate`` is false."""
        url = url or default_url()
        if migrate:
            upgrade(url)
        db = Database(url)
        return cls(
            db,
            GroupStore(db),
            QuotaStore(db),
            InvitationStore(db),
            LedgerStore(db),
            RegistryStore(db),
            FitStore(db),
            DeviceStore(db),
        )

    def close(self) -> None:
        self.registry.close()
        self.db.dispose()
