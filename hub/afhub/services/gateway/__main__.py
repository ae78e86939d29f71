"""``python -m afhub.services.gateway``: run dask-gateway-server for this facility.

The hub starts it as the managed service ``dask-gateway`` (see
:func:`afhub.hubconfig.configure_dask_gateway`), with ``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_SERVICE_NAME`` set by the hub and afhub's settings
in ``AFHUB_*`` variables and the afhub YAML file.
"""

from __future__ import annotations

import sys

from afhub.services.gateway.config import (
    KEYS_FILE,
    GatewaySettings,
    build_gateway_config,
    ensure_encrypt_keys,
)
from afhub.settings import SettingsError, load_config_file, load_settings


def main() -> None:
    try:
        overrides = load_config_file()
        settings = load_settings(overrides)
    except SettingsError as exc:
        sys.exit(f"dask-gateway: {exc}")
    gateway = GatewaySettings(config=overrides)
    settings.home_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    (settings.home_path / "dask-clusters").mkdir(exist_ok=True, mode=0o700)
    keys = ensure_encrypt_keys(settings.home_path / KEYS_FILE)
    config = build_gateway_config(settings, gateway, keys)
    # an operator may set any dask-gateway trait in the YAML file (e.g. Proxy.address)
    for section in ("DaskGateway", "Proxy", "ClusterConfig", "AfhubLocalBackend"):
        if section in overrides:
            config[section].merge(overrides[section])

    from dask_gateway_server.app import DaskGateway

    DaskGateway.launch_instance(argv=[], config=config)


if __name__ == "__main__":
    main()
