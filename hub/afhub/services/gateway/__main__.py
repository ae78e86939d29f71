"""``python -m afhub.services.gateway``: run dask-gateway-server for this facility.

The hub starts it as the managed service ``dask-gateway`` (see
:func:`afhub.hubconfig.configure_dask_gateway`), with ``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_SERVICE_NAME`` set by the hub and afhub's settings
in ``AFHUB_*`` variables and the afhub YAML file.

The hub starts its services one after the other and waits for each one's URL to answer
before the next (and before it serves anyone). So the gateway's proxy (a Go binary that
answers at once) is started first, before the gateway's heavy imports; it fetches its
routes from the gateway as soon as the gateway is up.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
from pathlib import Path

from afhub.services.kit.lifecycle import exit_process
from afhub.settings import SettingsError, load_config_file, load_settings


def proxy_executable() -> str:
    """The ``dask-gateway-proxy`` binary shipped in the dask-gateway-server wheel (found
    without importing the package)."""
    spec = importlib.util.find_spec("dask_gateway_server")
    if spec is None or spec.origin is None:
        sys.exit("dask-gateway: dask-gateway-server is not installed")
    return str(Path(spec.origin).parent / "proxy" / "dask-gateway-proxy")


def start_proxy(address: str, gateway_address: str, token: str) -> subprocess.Popen:
    """The gateway's proxy as a child that exits with this process (its stdin closes)."""
    command = [
        proxy_executable(),
        "-address",
        address,
        "-tcp-address",
        address,
        "-api-url",
        f"http://{gateway_address}/api/v1/routes",
        "-log-level",
        "warn",
        "-is-child-process",
    ]
    env = {**os.environ, "DASK_GATEWAY_PROXY_TOKEN": token}
    return subprocess.Popen(command, env=env, stdin=subprocess.PIPE, start_new_session=True)


def main() -> None:
    try:
        overrides = load_config_file()
        settings = load_settings(overrides)
    except SettingsError as exc:
        sys.exit(f"dask-gateway: {exc}")
    token = secrets.token_hex(32)
    proxy = start_proxy(
        f"127.0.0.1:{settings.gateway_proxy_port}", f"127.0.0.1:{settings.gateway_port}", token
    )

    from afhub.services.gateway.config import (
        KEYS_FILE,
        GatewaySettings,
        build_gateway_config,
        ensure_encrypt_keys,
    )

    gateway = GatewaySettings(config=overrides)
    settings.home_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    (settings.home_path / "dask-clusters").mkdir(exist_ok=True, mode=0o700)
    keys = ensure_encrypt_keys(settings.home_path / KEYS_FILE)
    config = build_gateway_config(settings, gateway, keys)
    config.Proxy.externally_managed = True
    config.Proxy.api_token = token
    # an operator may set any dask-gateway trait in the YAML file (e.g. Proxy.log_level)
    for section in ("DaskGateway", "Proxy", "ClusterConfig", "AfhubLocalBackend"):
        if section in overrides:
            config[section].merge(overrides[section])

    import dask_gateway_server.app as gateway_app

    from afhub.services.gateway.logs import ScrubbingAccessLogger

    # the access log names the path without credentials (a refused ?token= included)
    gateway_app.AccessLogger = ScrubbingAccessLogger
    DaskGateway = gateway_app.DaskGateway

    try:
        DaskGateway.launch_instance(argv=[], config=config)
    finally:
        proxy.terminate()
        try:
            proxy.wait(5)
        except subprocess.TimeoutExpired:
            proxy.kill()
    exit_process(0)  # the gateway stopped its clusters and its proxy: nothing left to close


if __name__ == "__main__":
    main()
