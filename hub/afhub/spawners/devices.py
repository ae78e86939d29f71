"""Device claims of a server: exclusive accelerator slots, held from admission to stop.

Right after the ledger admits a server, :func:`claim` takes ``count`` slots of its
resource in :class:`afhub.stores.devices.DeviceStore` (HTTP 409 at once when none is
free); :func:`release` gives them back when the server stops, dies or fails to start.
"""

from __future__ import annotations

import logging

from afhub.devices import capacity
from afhub.registry.model import Resource
from afhub.spawners.form import spawn_error
from afhub.stores.devices import DevicesBusy
from afhub.stores.facade import Stores


def claim(
    stores: Stores,
    resource: Resource | None,
    count: int,
    *,
    user: str,
    server_name: str,
    interval_id: int | None,
    log: logging.Logger | logging.LoggerAdapter,
) -> tuple[int, ...]:
    """Hold ``count`` slots of ``resource`` for the server (none: release what it held)."""
    store = stores.devices
    if resource is None or count == 0:
        store.release(user=user, server_name=server_name)
        return ()
    try:
        slots = store.allocate(
            resource,
            capacity(resource),
            count,
            user=user,
            server_name=server_name,
            interval_id=interval_id,
        )
    except DevicesBusy as exc:
        raise spawn_error(409, str(exc)) from None
    log.info(
        "Allocated %s slot(s) %s of %s to %s's server %r",
        count,
        slots,
        resource.name,
        user,
        server_name,
    )
    return tuple(slots)


def release(stores: Stores, *, user: str, server_name: str) -> None:
    """Give back every slot the server holds."""
    stores.devices.release(user=user, server_name=server_name)
