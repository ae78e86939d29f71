"""Dask clusters over their life in a facility of their own (short checkpoint, grace
period and idle timeout): a spent budget warns and stops the group's cluster and refuses
new ones, an idle cluster stops by itself, and a hub crash loses no cluster: the gateway
exits with its hub, and the next one takes the running cluster and its ledger intervals
back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import psutil
import pytest
import requests

from afhub.stores.facade import Stores
from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]


def dask_intervals(fac: Facility, cluster: str) -> list:
    stores = Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)
    try:
        since = datetime(2000, 1, 1, tzinfo=UTC)
        found = {
            i.id: i
            for i in stores.ledger.open_intervals("dask")
            + stores.ledger.usage("users", since).intervals
            + stores.ledger.usage("dbudget", since).intervals
            if i.kind == "dask" and i.server_name.startswith(cluster)
        }
        return sorted(found.values(), key=lambda i: i.id)
    finally:
        stores.close()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def gateway_processes(fac: Facility) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if "afhub.services.gateway" in " ".join(proc.info["cmdline"] or []) and (
                proc.info["environ"] or {}
            ).get("AFHUB_HOME") == str(fac.home):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return found


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    facility = Facility(
        tmp_path_factory.mktemp("dask-facility"),
        env={
            "AFHUB_CHECKPOINT_INTERVAL": "1",
            "AFHUB_GRACE_PERIOD": "2",
            "AFHUB_DASK_IDLE_TIMEOUT": "20",
        },
    )
    facility.start(timeout=180)
    yield facility
    facility.stop()
    facility.cleanup_orphans()


def test_budget_idle_and_hub_crash(fac):
    from dask_gateway import Gateway, JupyterHubAuth
    from distributed import fire_and_forget

    admin = fac.login("admin", fac.admin_password)
    api = urljoin(fac.url, "services/facility/api/")
    admin_headers = {"Authorization": f"token {admin.new_token('dask')}"}
    assert requests.post(api + "groups", json={"path": "dbudget"}, headers=admin_headers).ok
    # 0.002 core-hours: the scheduler's core spends it in 7.2 s
    r = requests.put(
        api + "groups/dbudget/-/quota", json={"cpu_core_hours": 0.002}, headers=admin_headers
    )
    assert r.status_code == 200, r.text
    invitation = requests.post(
        api + "groups/dbudget/-/invitations", json={"uses": 1}, headers=admin_headers
    ).json()["token"]
    session = fac.login("dk", fac.add_user("dk"))
    token = session.new_token("dask client")
    joined = requests.post(
        api + "invitations/redeem",
        json={"token": invitation},
        headers={"Authorization": f"token {token}"},
    )
    assert joined.status_code == 200, joined.text

    def client_gateway():
        return Gateway(
            address=f"{fac.url}services/dask-gateway",
            proxy_address=f"gateway://127.0.0.1:{fac.gateway_proxy_port}",
            auth=JupyterHubAuth(api_token=token),
        )

    gateway = client_gateway()
    # a busy cluster that must survive the hub's crash (its task keeps it from idling)
    busy = gateway.new_cluster(charge_to="users", shutdown_on_close=False)
    busy.scale(1)
    busy_client = busy.get_client()
    busy_client.wait_for_workers(1, timeout=60)
    # a task that outlives its client keeps the cluster from idling while the hub is down
    fire_and_forget(busy_client.submit(time.sleep, 300, pure=False))
    # the client goes now: its connection runs through the gateway that dies with the hub,
    # and a client closed after that fails in its own reconnect
    busy_client.close(timeout=10)
    # an idle cluster, and one whose group's budget runs out (plain REST: no client objects)
    rest = urljoin(fac.url, "services/dask-gateway/api/v1/clusters/")
    auth = {"Authorization": f"jupyterhub {token}"}

    def create(group):
        body = {"cluster_options": {"charge_to": group}}
        return requests.post(rest, json=body, headers=auth, timeout=30)

    idle, spent = create("users").json()["name"], create("dbudget").json()["name"]

    def stopped(name):
        def check():
            listed = requests.get(rest, headers=auth, timeout=30).json()
            return name not in listed and all(
                i.state in ("closed", "failed") for i in dask_intervals(fac, name)
            )

        return check

    wait_for(stopped(spent), 40, "the over-budget cluster to be stopped")
    (closed,) = dask_intervals(fac, spent)
    assert closed.group == "dbudget"
    assert closed.cpu_cores == 1.0
    refused = create("dbudget")
    assert refused.status_code == 422
    assert "dbudget" in refused.json()["error"]
    assert "CPU core-hours" in refused.json()["error"]
    wait_for(stopped(idle), 40, "the idle cluster to stop")

    # the hub crashes: the gateway exits with it and leaves the cluster running
    before = {i.id for i in dask_intervals(fac, busy.name) if i.state == "running"}
    assert len(before) == 2  # scheduler and worker
    fac.kill()
    wait_for(lambda: not gateway_processes(fac), 20, "the gateway to exit with its hub")
    gateway.close()
    fac.start(timeout=180)
    gateway = client_gateway()

    def listed():
        try:
            return [c for c in gateway.list_clusters() if c.name == busy.name]
        except ValueError:  # 404 while the new gateway's proxy has no routes yet
            return []

    back = wait_for(listed, 60, "the cluster back in the new gateway")
    assert back[0].status.name == "RUNNING"
    again = gateway.connect(busy.name)
    with again.get_client() as client:
        # TLS through the new gateway's proxy to the same scheduler, its worker still busy
        assert client.run_on_scheduler(lambda: 42) == 42
        assert len(client.scheduler_info()["workers"]) == 1
    after = {i.id for i in dask_intervals(fac, busy.name) if i.state == "running"}
    assert after == before  # the same ledger intervals, still charging
    again.shutdown()
    wait_for(stopped(busy.name), 40, "the cluster to stop")
    gateway.close()
