"""The gateway's configuration: built from the facility's settings, wired into the hub
(service, token scope, user environment), with a persistent database whose key is made
once and kept private."""

from __future__ import annotations

import stat

from afhub.hubconfig import build_config
from afhub.services.gateway.config import (
    GatewaySettings,
    build_gateway_config,
    client_environment,
    ensure_encrypt_keys,
)
from afhub.settings import FacilitySettings


def settings(tmp_path, **kw) -> FacilitySettings:
    return FacilitySettings(home=str(tmp_path), **kw)


def test_encryption_key_is_generated_once_and_private(tmp_path):
    path = tmp_path / "keys"
    first = ensure_encrypt_keys(path)
    assert len(first) == 1
    assert len(first[0]) == 44
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_encrypt_keys(path) == first


def test_gateway_config_persistent_local_backend_behind_the_hub(tmp_path):
    s = settings(tmp_path, gateway_port=9100, gateway_proxy_port=9101, base_url="/af/")
    c = build_gateway_config(s, GatewaySettings(), ["k"], grace_period=5, checkpoint_interval=2)
    assert c.DaskGateway.address == "127.0.0.1:9100"
    assert c.Proxy.address == "127.0.0.1:9101"
    assert c.Proxy.prefix == "/af/services/dask-gateway"
    backend = c.AfhubLocalBackend
    assert backend.db_url == f"sqlite:///{tmp_path / 'dask-gateway.sqlite'}"
    assert backend.db_encrypt_keys == ["k"]
    assert backend.grace_period == 5
    assert backend.enforcement_period == 2
    assert c.ClusterConfig.scheduler_cmd[-1] == "scheduler"
    assert c.ClusterConfig.worker_cmd[-1] == "worker"
    assert c.ClusterConfig.idle_timeout == 1800.0
    assert c.JupyterHubAuthenticator.jupyterhub_service_name == "dask-gateway"


def test_gateway_settings_from_environment(monkeypatch):
    monkeypatch.setenv("AFHUB_DASK_MAX_WORKER_CORES", "8")
    monkeypatch.setenv("AFHUB_DASK_STOP_CLUSTERS_ON_SHUTDOWN", "false")
    gateway = GatewaySettings()
    assert gateway.max_worker_cores == 8
    assert gateway.stop_clusters_on_shutdown is False
    assert gateway.policy().max_worker_cores == 8


def test_idle_timeout_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("AFHUB_DASK_IDLE_TIMEOUT", "120")
    c = build_gateway_config(settings(tmp_path), GatewaySettings(), ["k"])
    assert c.ClusterConfig.idle_timeout == 120.0


def test_hub_runs_the_gateway_and_user_servers_can_use_it(tmp_path):
    s = settings(tmp_path, gateway_proxy_port=9101)
    c = build_config(s)
    services = {svc["name"]: svc for svc in c.JupyterHub.services}
    gateway = services["dask-gateway"]
    assert gateway["url"] == "http://127.0.0.1:9101"
    assert gateway["command"][-2:] == ["-m", "afhub.services.gateway"]
    scopes = c.Spawner.server_token_scopes
    assert "access:services!service=dask-gateway" in scopes
    # others' scopes and environment entries are kept
    assert "access:services!service=fitting" in scopes
    assert "AFHUB_FITTING_URL" in c.Spawner.environment
    env = c.Spawner.environment
    assert env["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    assert env["DASK_GATEWAY__ADDRESS"].endswith("/services/dask-gateway")
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://127.0.0.1:9101"
    assert client_environment(s) == {k: env[k] for k in client_environment(s)}
