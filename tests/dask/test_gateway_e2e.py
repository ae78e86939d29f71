"""Dask Gateway as a service of a real facility (the session ``facility``): a student in
``atlas/higgs/students`` starts a cluster from a notebook kernel with no arguments,
computes, hits the group's Dask core limit with a clear message, and the core-hours are in
the ledger and in ``afhub usage``; isolation between users, bad tokens, options beyond the
limits, and a cluster whose scheduler dies."""

from __future__ import annotations

import csv
import io
import os
import signal
import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import psutil
import pytest
import requests

from afhub.stores.facade import Stores
from tests.facility import Facility, run_in_kernel

pytestmark = [pytest.mark.facility, pytest.mark.slow]

STUDENTS = "atlas/higgs/students"


def gateway_url(facility: Facility) -> str:
    return urljoin(facility.url, "services/dask-gateway/")


def gw(facility: Facility, method: str, path: str, token: str | None, **kwargs):
    headers = {"Authorization": f"jupyterhub {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    return requests.request(
        method, gateway_url(facility) + path, headers=headers, timeout=30, **kwargs
    )


def dask_intervals(facility: Facility, group: str) -> list:
    stores = Stores.open(f"sqlite:///{facility.home / 'afhub.sqlite'}", migrate=False)
    try:
        report = stores.ledger.usage(group, datetime(2000, 1, 1, tzinfo=UTC))
        return [i for i in report.intervals if i.kind == "dask"]
    finally:
        stores.close()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def student(facility):
    """A student of atlas/higgs/students (Dask limit: 3 cores) with a running server."""
    admin = facility.login("admin", facility.admin_password)
    token = admin.new_token("dask tests")
    api = urljoin(facility.url, "services/facility/api/")

    def call(method, path, **kwargs):
        headers = {"Authorization": f"token {token}"}
        return requests.request(method, api + path, headers=headers, timeout=30, **kwargs)

    for path in ("atlas", "atlas/higgs", STUDENTS):
        r = call("POST", "groups", json={"path": path})
        assert r.status_code in (201, 409), r.text
    r = call("PUT", f"groups/{STUDENTS}/-/quota", json={"max_dask_cores": 3})
    assert r.status_code == 200, r.text
    invitation = call("POST", f"groups/{STUDENTS}/-/invitations", json={"uses": 1})
    assert invitation.status_code == 201, invitation.text

    name = f"dstudent{os.getpid()}"
    session = facility.login(name, facility.add_user(name))
    user_token = session.new_token("student")
    joined = requests.post(
        api + "invitations/redeem",
        json={"token": invitation.json()["token"]},
        headers={"Authorization": f"token {user_token}"},
        timeout=30,
    )
    assert joined.status_code == 200, joined.text
    # the login put the student in the default group first; the course becomes their default
    r = requests.patch(
        api + f"users/{name}",
        json={"default_group": STUDENTS},
        headers={"Authorization": f"token {user_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    r = session.api("POST", f"users/{name}/server", json={})
    assert r.status_code in (201, 202), r.text
    session.wait_for_server()
    yield session, user_token
    session.stop_server()


NOTEBOOK = """
import warnings
from dask_gateway import Gateway
import dask.array as da
gateway = Gateway()
cluster = gateway.new_cluster()
client = cluster.get_client()
cluster.scale(2)
client.wait_for_workers(2, timeout=60)
x = da.ones((2000, 2000), chunks=(500, 500))
print("SUM", int(x.sum().compute()))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cluster.scale(5)
print("WARN", " | ".join(str(w.message) for w in caught))
print("WORKERS", len(client.scheduler_info()["workers"]))
# a refused new_cluster leaves a half-made client object whose __del__, if the garbage
# collector runs it on the client's IO thread, deadlocks the next call (dask-gateway
# 2026.3 client: Gateway.__del__ -> close -> sync on its own loop); keep them to the end
refused = []
try:
    gateway.new_cluster()  # the group's 3 Dask cores are all held
except Exception as exc:
    print("FULL", type(exc).__name__, exc)
    refused.append(exc)
try:
    gateway.new_cluster(worker_cores=8)
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
    refused.append(exc)
print("NAME", cluster.name)
print("DASHBOARD", cluster.dashboard_link)
cluster.shutdown_on_close = False  # the test goes on with it after the kernel ends
"""


def test_student_cluster_from_notebook_computes_hits_limit_and_is_charged(facility, student):
    session, token = student
    name = session.username
    out = run_in_kernel(facility.url, name, token, NOTEBOOK, timeout=120)
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
    assert lines["SUM"] == "4000000", out
    # scaling past the group's limit is capped, with the reason
    assert "runs 2 workers instead" in lines["WARN"], out
    # ... in the plain words of the spawn form (afhub.quotas.refusals.explain)
    full = f"Group '{STUDENTS}' is at its limit of 3 concurrent Dask cores: 3 of 3 in use."
    assert full in lines["WARN"], out
    assert "You can wait until Dask workers charged to it stop" in lines["WARN"], out
    assert "to raise the limit." in lines["WARN"], out
    assert lines["WORKERS"] == "2", out
    # a new cluster while the group's cores are all held: refused, the same words
    assert f"You cannot start this Dask cluster. {full}" in lines["FULL"], out
    assert "wait until Dask workers charged to it stop" in lines["FULL"], out
    assert "ask the facility's administrators to raise the limit." in lines["FULL"], out
    # options beyond the group's limit: a clear error and no cluster
    assert lines["REFUSED"].startswith("ValueError"), out
    assert "worker_cores=8" in lines["REFUSED"], out
    assert STUDENTS in lines["REFUSED"], out
    cluster = lines["NAME"]

    # the ledger holds a scheduler and two workers of this cluster, charged to the group
    open_now = [i for i in dask_intervals(facility, STUDENTS) if i.server_name.startswith(cluster)]
    assert sorted(i.state for i in open_now) == ["running"] * 3, open_now
    assert sum(i.cpu_cores for i in open_now) == 3
    clusters = gw(facility, "GET", "api/v1/clusters/", token).json()
    assert list(clusters) == [cluster]

    # isolation: another user sees neither the cluster nor its dashboard
    other = facility.login("dother", facility.add_user("dother"))
    other_token = other.new_token("other")
    assert gw(facility, "GET", "api/v1/clusters/", other_token).json() == {}
    r = gw(facility, "GET", f"api/v1/clusters/{cluster}", other_token)
    assert r.status_code == 403
    assert "lacks permissions" in r.json()["error"]
    r = gw(facility, "POST", f"api/v1/clusters/{cluster}/scale", other_token, json={"count": 0})
    assert r.status_code == 403
    r = gw(facility, "DELETE", f"api/v1/clusters/{cluster}", other_token)
    assert r.status_code == 403
    r = gw(facility, "GET", f"clusters/{cluster}/status", other_token)
    assert r.status_code == 403
    assert "lacks permissions" in r.json()["error"]
    r = gw(facility, "GET", f"clusters/{cluster}/status", None)
    assert r.status_code == 401
    assert "token" in r.json()["error"]
    # the owner opens the dashboard (a browser logs in through the hub: see
    # tests/security/test_gateway_dashboard.py); a token in the URL is refused
    r = gw(facility, "GET", f"clusters/{cluster}/status", token)
    assert r.status_code == 200
    assert "bokeh" in r.text.lower()
    r = requests.get(gateway_url(facility) + f"clusters/{cluster}/status?token={token}", timeout=30)
    assert r.status_code == 400
    assert "tokens in URLs are refused" in r.json()["error"]

    # bad tokens: 401 with a message, never 500
    for header in ("jupyterhub not-a-token", "garbage", "token "):
        r = requests.get(
            gateway_url(facility) + "api/v1/clusters/",
            headers={"Authorization": header},
            timeout=30,
        )
        assert r.status_code == 401, (header, r.status_code, r.text)
        assert "token" in r.json()["error"]
    r = gw(facility, "GET", "api/v1/clusters/", None)
    assert r.status_code == 401
    assert "Authorization" in r.json()["error"]

    # the scheduler dies: the cluster is cleaned up and its charges are closed
    pid = next(
        p.pid
        for p in psutil.process_iter(["cmdline", "environ"])
        if "scheduler" in " ".join(p.info["cmdline"] or [])
        and (p.info["environ"] or {}).get("DASK_GATEWAY_CLUSTER_NAME") == cluster
    )
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: all(
            i.state in ("closed", "failed")
            for i in dask_intervals(facility, STUDENTS)
            if i.server_name.startswith(cluster)
        ),
        40,
        "the dead cluster's charges to close",
    )
    wait_for(
        lambda: gw(facility, "GET", "api/v1/clusters/", token).json() == {}, 20, "cluster gone"
    )
    closed = [i for i in dask_intervals(facility, STUDENTS) if i.server_name.startswith(cluster)]
    assert len(closed) == 3
    assert all(i.stop is not None for i in closed)

    # core-hours in the ledger and in `afhub usage`
    report = facility.afhub("usage", "--group", STUDENTS, "--since", "2000-01-01", "--csv")
    rows = [r for r in csv.DictReader(io.StringIO(report.stdout)) if r["kind"] == "dask"]
    assert len(rows) >= 3
    assert all(r["group"] == STUDENTS for r in rows)
    assert sum(float(r["cpu_core_hours"]) for r in rows) > 0
