"""The hub's part of the server extension ``afhub_server`` (docs/extension.md).

Every user's server may call the facility API with its own token (the fitting service is
already reached through :func:`afhub.hubconfig.configure_fitting`), knows the API's URL
(``AFHUB_FACILITY_URL``) and the group the hub charged it to (``AFHUB_CHARGED_GROUP``,
read from the server's ledger interval when the spawner builds the environment, after
admission). The extension itself is enabled by the package's
``etc/jupyter/jupyter_server_config.d/afhub_server.json``.
"""

from __future__ import annotations

from traitlets.config import Config

from afhub.hubconfig import FACILITY_SERVICE, _servers_reach
from afhub.settings import FacilitySettings
from afhub.stores.errors import StoreError


def charged_group(spawner) -> str:
    """The group the server's ledger interval is charged to ('' when not charged)."""
    interval_id = getattr(spawner, "interval_id", None)
    if interval_id is None:
        return ""
    try:
        return spawner.stores.ledger.get(interval_id).group
    except StoreError:  # the extension falls back to the default group; the spawn goes on
        spawner.log.warning("no ledger interval %s for %s", interval_id, spawner._log_name)
        return ""


def configure(c: Config, settings: FacilitySettings) -> None:
    """Users' servers reach the facility API with their own token."""
    _servers_reach(
        c,
        FACILITY_SERVICE,
        {
            "AFHUB_FACILITY_URL": f"{settings.public_url}services/{FACILITY_SERVICE}/",
            "AFHUB_CHARGED_GROUP": charged_group,
        },
    )
