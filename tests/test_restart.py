"""Issue 2: stopping and starting the facility loses nothing; a crashed hub resumes.
Issue 13: ``afhub up`` says where to log in once the hub answers, and Ctrl-C stops
everything it started in under 10 s; a server running at Ctrl-C is stopped and charged up
to the stop (its ledger interval closed), and starts again after the restart."""

from __future__ import annotations

import contextlib
import signal
import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import psutil
import pytest
import requests

from afhub.stores.facade import Stores
from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]


def services_of(fac: Facility) -> list[str]:
    """Command lines of afhub services still running for this facility's home."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if "afhub.services." in cmd and env.get("AFHUB_HOME") == str(fac.home):
            found.append(cmd)
    return found


def announcements(fac: Facility) -> list[str]:
    """The facility's output from the hub's "now running" line on, at each "log in at"."""
    output = fac.log_path.read_text(errors="replace")
    return [part for part in output.split("JupyterHub is now running")[1:] if "log in at" in part]


def server_intervals(fac: Facility, user: str) -> list:
    stores = Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)
    try:
        report = stores.ledger.usage("users", datetime(2000, 1, 1, tzinfo=UTC))
        return [i for i in report.intervals if i.user == user and i.kind == "server"]
    finally:
        stores.close()


def commands(fac: Facility) -> list[str]:
    """Command lines of the processes of the facility's tree."""
    found = []
    for proc in fac._tree():
        try:
            found.append(" ".join(proc.cmdline()))
        except psutil.Error:  # ended meanwhile
            continue
    return found


def start_dask_cluster_with_a_worker(fac: Facility, token: str) -> None:
    """A Dask cluster (a scheduler and one worker process) through the gateway's API."""
    clusters = urljoin(fac.url, "services/dask-gateway/api/v1/clusters/")
    auth = {"Authorization": f"jupyterhub {token}"}
    made = requests.post(clusters, json={"cluster_options": {}}, headers=auth, timeout=30)
    assert made.status_code == 201, made.text
    name = made.json()["name"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = requests.get(f"{clusters}{name}", headers=auth, timeout=30).json()["status"]
        if status == "RUNNING":
            break
        time.sleep(0.5)
    scaled = requests.post(f"{clusters}{name}/scale", json={"count": 1}, headers=auth, timeout=30)
    assert scaled.status_code == 200, scaled.text
    while time.monotonic() < deadline:
        if any("dask" in c and "worker" in c for c in commands(fac)):
            return
        time.sleep(0.5)
    pytest.fail("no running Dask cluster with a worker process after 90 s")


def ctrl_c(fac: Facility) -> tuple[float, datetime, datetime]:
    """Stop ``fac`` as Ctrl-C does; how long it took, from when to when; every process of
    its tree (hub, proxy, services, servers, Dask scheduler and worker, fit workers) gone."""
    assert any("jupyterhub.singleuser" in c for c in commands(fac))
    tree = fac._tree()
    began, clock = datetime.now(UTC), time.monotonic()
    fac.stop(timeout=30)
    took, ended = time.monotonic() - clock, datetime.now(UTC)
    _gone, alive = psutil.wait_procs(tree, timeout=0.1)
    assert not fac.leftover, "Ctrl-C left processes running"
    assert alive == []
    return took, began, ended


@contextlib.contextmanager
def sigint_ignored():
    """Start processes as a shell's background job or a test runner's worker does: with
    SIGINT ignored, which every process they start inherits."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def own_facility(tmp_path):
    fac = Facility(tmp_path / "home")
    yield fac
    fac.stop()
    fac.cleanup_orphans()


def test_stop_and_start_keeps_users_passwords_and_sessions(own_facility):
    with sigint_ignored():  # Ctrl-C still stops everything
        fac = own_facility.start()
    admin_password = fac.admin_password
    password = fac.add_user("keeper")
    session = fac.login("keeper", password)
    session.start_server()
    users_before = sorted(
        u["name"] for u in fac.login("admin", admin_password).api("GET", "users").json()
    )
    start_dask_cluster_with_a_worker(fac, session.new_token("dask"))
    # "log in at" once, after the hub answers, with the password made now
    (first,) = announcements(fac)
    assert f"afhub is up: log in at {fac.url}hub/login" in first
    assert f"user admin, password {admin_password}" in first
    took, began, ended = ctrl_c(fac)
    assert took < 10, f"Ctrl-C took {took:.1f} s"
    assert "did not stop in time" not in fac.log_path.read_text()  # each on its SIGINT
    with pytest.raises(requests.ConnectionError):
        requests.get(fac.url, timeout=2)
    # the server was stopped with the facility and charged up to then
    (interval,) = server_intervals(fac, "keeper")
    assert interval.state == "closed"
    assert began <= interval.stop <= ended

    fac.start()
    assert fac.admin_password == admin_password  # not regenerated
    second = announcements(fac)[1]
    assert admin_password not in second  # shown once, when it was made
    assert f"user admin, password in {fac.home / 'admin-password'}" in second
    admin = fac.login("admin", admin_password)
    assert sorted(u["name"] for u in admin.api("GET", "users").json()) == users_before
    # the session cookie from before the restart is still valid (same cookie secret)
    assert session.api("GET", "user").json()["name"] == "keeper"
    # the server record is kept (stopped by the shutdown), and it starts again
    model = admin.api("GET", "users/keeper").json()
    assert model["servers"] == {}
    session.start_server()
    session.stop_server()
    assert [i.state for i in server_intervals(fac, "keeper")] == ["closed", "closed"]
    api = requests.get(urljoin(fac.url, "services/facility/api/openapi.yaml"), timeout=30)
    assert api.status_code == 200
    # a fresh login with the same password works
    fac.login("keeper", password)


def test_hub_killed_with_running_server_resumes_it(own_facility):
    fac = own_facility.start()
    password = fac.add_user("survivor")
    session = fac.login("survivor", password)
    session.start_server()
    token = session.new_token("crash test")
    fac.kill()  # SIGKILL: no cleanup at all
    # the hub's services notice that their hub is gone and exit (their ports free again)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and services_of(fac):
        time.sleep(0.5)
    assert services_of(fac) == []
    fac.start()
    model = fac.login("admin", fac.admin_password).api("GET", "users/survivor").json()
    assert model["servers"][""]["ready"] is True
    status = requests.get(
        urljoin(fac.url, "user/survivor/api/status"),
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert status.status_code == 200
    session.stop_server()
    api = requests.get(urljoin(fac.url, "services/facility/api/openapi.yaml"), timeout=30)
    assert api.status_code == 200
