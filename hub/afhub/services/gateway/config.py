"""The gateway's own settings and the dask-gateway-server configuration built from them.

:func:`build_gateway_config` only sets values on a traitlets ``Config`` (tests check it
directly); :func:`ensure_encrypt_keys` is the one function here that touches the disk.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

from traitlets import Bool, Float, Integer
from traitlets.config import Config, Configurable

from afhub.dask.policy import POLICY_SETTINGS, DaskPolicy
from afhub.services.gateway import SERVICE_NAME
from afhub.settings import FacilitySettings, flag, from_env, integer, number

#: file in ``$AFHUB_HOME`` holding the gateway database's encryption key (mode 0600)
KEYS_FILE = "dask-gateway-keys"
#: the gateway's database in ``$AFHUB_HOME`` (clusters survive a gateway restart)
DB_FILE = "dask-gateway.sqlite"


class GatewaySettings(Configurable):
    """Dask options' bounds and the gateway's timings. Set in the afhub YAML file
    (section ``GatewaySettings``) or with the ``AFHUB_DASK_*`` environment variables."""

    max_worker_cores = Integer(
        help="Most cores one worker may ask for. Env: ``AFHUB_DASK_MAX_WORKER_CORES``."
    ).tag(config=True)
    default_worker_cores = Integer(
        help="Cores of a worker when the user does not choose. Env: "
        "``AFHUB_DASK_DEFAULT_WORKER_CORES``."
    ).tag(config=True)
    max_worker_memory_gib = Float(
        help="Most memory (GiB) one worker may ask for. Env: ``AFHUB_DASK_MAX_WORKER_MEMORY_GIB``."
    ).tag(config=True)
    default_worker_memory_gib = Float(
        help="Memory (GiB) of a worker when the user does not choose. Env: "
        "``AFHUB_DASK_DEFAULT_WORKER_MEMORY_GIB``."
    ).tag(config=True)
    max_workers = Integer(
        help="Most workers one cluster may have (the group's ``max_dask_cores`` caps the "
        "total across clusters). Env: ``AFHUB_DASK_MAX_WORKERS``."
    ).tag(config=True)
    scheduler_cores = Integer(
        help="Cores a scheduler holds and is charged for. Env: ``AFHUB_DASK_SCHEDULER_CORES``."
    ).tag(config=True)
    heartbeat_period = Integer(
        help="Seconds between a cluster's heartbeats to the gateway. Env: "
        "``AFHUB_DASK_HEARTBEAT_PERIOD``."
    ).tag(config=True)
    liveness_period = Float(
        help="Seconds between checks that each running cluster's scheduler process is "
        "alive (a dead one is cleaned up and its charges closed). Env: "
        "``AFHUB_DASK_LIVENESS_PERIOD``."
    ).tag(config=True)
    stop_clusters_on_shutdown = Bool(
        help="""Stop every cluster when the gateway is stopped (Ctrl-C of the facility, like
        the hub's servers). The gateway's database is persistent either way: a gateway that
        crashed or whose hub died (it then exits without stopping anything) takes its
        running clusters back when it starts again; with ``false`` a graceful restart keeps
        them too. Env: ``AFHUB_DASK_STOP_CLUSTERS_ON_SHUTDOWN`` (``1``/``true``)."""
    ).tag(config=True)

    _default_max_worker_cores = from_env(
        "max_worker_cores", "AFHUB_DASK_MAX_WORKER_CORES", 4, integer
    )

    _default_default_worker_cores = from_env(
        "default_worker_cores", "AFHUB_DASK_DEFAULT_WORKER_CORES", 1, integer
    )

    _default_max_worker_memory_gib = from_env(
        "max_worker_memory_gib", "AFHUB_DASK_MAX_WORKER_MEMORY_GIB", 16, number
    )

    _default_default_worker_memory_gib = from_env(
        "default_worker_memory_gib", "AFHUB_DASK_DEFAULT_WORKER_MEMORY_GIB", 2, number
    )

    _default_max_workers = from_env("max_workers", "AFHUB_DASK_MAX_WORKERS", 100, integer)

    _default_scheduler_cores = from_env("scheduler_cores", "AFHUB_DASK_SCHEDULER_CORES", 1, integer)

    _default_heartbeat_period = from_env(
        "heartbeat_period", "AFHUB_DASK_HEARTBEAT_PERIOD", 5, integer
    )

    _default_liveness_period = from_env("liveness_period", "AFHUB_DASK_LIVENESS_PERIOD", 2, number)

    _default_stop_clusters_on_shutdown = from_env(
        "stop_clusters_on_shutdown", "AFHUB_DASK_STOP_CLUSTERS_ON_SHUTDOWN", "true", flag
    )

    def policy(self) -> DaskPolicy:
        return DaskPolicy.of(self)


def ensure_encrypt_keys(path: Path) -> list[str]:
    """The gateway database's encryption keys, one per line in ``path``; a new random key
    is generated on first use and kept (mode 0600), so a restarted gateway can read the
    clusters' TLS credentials and tokens it stored."""
    if not path.exists():
        key = base64.b64encode(os.urandom(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
    os.chmod(path, 0o600)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def gateway_prefix(settings: FacilitySettings) -> str:
    """Where the hub's proxy forwards the gateway: ``{base_url}services/dask-gateway``."""
    return f"{settings.base_url}services/{SERVICE_NAME}"


def build_gateway_config(
    settings: FacilitySettings,
    gateway: GatewaySettings,
    keys: list[str],
    *,
    grace_period: float | None = None,
    checkpoint_interval: float | None = None,
) -> Config:
    """dask-gateway-server's configuration for this facility (local backend)."""
    home = settings.home_path
    bindir = Path(sys.executable).parent
    c = Config()
    c.DaskGateway.address = f"127.0.0.1:{settings.gateway_port}"
    c.DaskGateway.backend_class = "afhub.services.gateway.backend.AfhubLocalBackend"
    c.DaskGateway.authenticator_class = "afhub.services.gateway.auth.AfhubHubAuthenticator"
    c.Proxy.address = f"127.0.0.1:{settings.gateway_proxy_port}"
    c.Proxy.prefix = gateway_prefix(settings)
    c.JupyterHubAuthenticator.jupyterhub_service_name = SERVICE_NAME
    backend = c.AfhubLocalBackend
    backend.db_url = f"sqlite:///{home / DB_FILE}"
    backend.db_encrypt_keys = keys
    backend.stop_clusters_on_shutdown = gateway.stop_clusters_on_shutdown
    backend.clusters_directory = str(home / "dask-clusters")
    backend.cluster_heartbeat_period = gateway.heartbeat_period
    backend.cluster_status_period = 5.0
    backend.worker_status_period = 5.0
    backend.facility_db_url = settings.db_url
    for name in POLICY_SETTINGS:
        backend[name] = getattr(gateway, name)
    c.ClusterConfig.scheduler_cores = gateway.scheduler_cores
    backend.liveness_period = gateway.liveness_period
    backend.enforcement_period = float(
        checkpoint_interval if checkpoint_interval is not None else settings.checkpoint_interval
    )
    backend.grace_period = float(
        grace_period if grace_period is not None else settings.grace_period
    )
    c.ClusterConfig.scheduler_cmd = [str(bindir / "dask"), "scheduler"]
    c.ClusterConfig.worker_cmd = [str(bindir / "dask"), "worker"]
    c.ClusterConfig.idle_timeout = float(settings.dask_idle_timeout)
    return c


def client_environment(settings: FacilitySettings) -> dict[str, str]:
    """What a user's server needs so that ``Gateway()`` works with no arguments (local
    mode: the proxy's TLS port on this machine)."""
    address = f"{settings.public_url}services/{SERVICE_NAME}"
    return {
        "DASK_GATEWAY__ADDRESS": address,
        "DASK_GATEWAY__PUBLIC_ADDRESS": address,
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://127.0.0.1:{settings.gateway_proxy_port}",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
