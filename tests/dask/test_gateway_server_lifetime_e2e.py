"""A Dask cluster stops with the notebook server that started it (dask-gateway #255, #393,
#687: upstream keeps it running, and here charging, until its idle timeout), unless the
user asked for one that outlives it (``outlive_server=True``). In the session facility:
a user's server starts two clusters from a kernel with ``Gateway()``; the server stops;
the tied cluster stops and its ledger intervals close, the other keeps running. A cluster
started with a token of no single server (the token page) is not tied to any server."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urljoin

import pytest
import requests

from afhub.stores.facade import Stores
from tests.facility import Facility, run_in_kernel

pytestmark = [pytest.mark.facility, pytest.mark.slow]

NOTEBOOK = """
from dask_gateway import Gateway
gateway = Gateway()
tied = gateway.new_cluster(shutdown_on_close=False)
kept = gateway.new_cluster(outlive_server=True, shutdown_on_close=False)
print("TIED", tied.name)
print("KEPT", kept.name)
"""


def dask_intervals(facility: Facility, cluster: str) -> list:
    stores = Stores.open(f"sqlite:///{facility.home / 'afhub.sqlite'}", migrate=False)
    try:
        report = stores.ledger.usage("users", datetime(2000, 1, 1, tzinfo=UTC))
        return [i for i in report.intervals if i.server_name.startswith(cluster + "/")]
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


def test_cluster_stops_with_the_server_that_started_it(facility):
    name = f"life{uuid.uuid4().hex[:6]}"
    session = facility.login(name, facility.add_user(name))
    token = session.new_token("lifetime test")  # a token-page token: tied to no server
    session.start_server()
    rest = urljoin(facility.url, "services/dask-gateway/api/v1/clusters/")
    auth = {"Authorization": f"jupyterhub {token}"}

    def listed() -> dict:
        return requests.get(rest, headers=auth, timeout=30).json()

    out = run_in_kernel(facility.url, name, token, NOTEBOOK, timeout=120)
    names = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
    tied, kept = names["TIED"], names["KEPT"]
    # one started from outside any server (the token page's token)
    r = requests.post(rest, json={"cluster_options": {}}, headers=auth, timeout=30)
    assert r.status_code == 201, r.text
    outside = r.json()["name"]
    wait_for(
        lambda: all(listed().get(c, {}).get("status") == "RUNNING" for c in (tied, kept, outside)),
        90,
        "the three clusters to run",
    )
    assert listed()[kept]["options"]["outlive_server"] is True
    assert listed()[tied]["options"]["afhub_started_by"] == ""  # the default server

    session.stop_server()
    wait_for(lambda: tied not in listed(), 30, "the tied cluster to stop with its server")
    wait_for(
        lambda: all(i.state in ("closed", "failed") for i in dask_intervals(facility, tied)),
        30,
        "the tied cluster's charges to close",
    )
    assert dask_intervals(facility, tied), "the tied cluster was charged while it ran"
    time.sleep(3)  # several liveness periods: the others are left alone
    clusters = listed()
    assert clusters[kept]["status"] == "RUNNING"
    assert clusters[outside]["status"] == "RUNNING"
    assert any(i.state == "running" for i in dask_intervals(facility, kept))
    for cluster in (kept, outside):
        requests.delete(rest + cluster, headers=auth, timeout=30)
    wait_for(lambda: not listed(), 30, "the other clusters to stop")
