"""Issue 2: stopping and starting the facility loses nothing; a crashed hub resumes."""

from __future__ import annotations

import time
from urllib.parse import urljoin

import psutil
import pytest
import requests

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


@pytest.fixture
def own_facility(tmp_path):
    fac = Facility(tmp_path / "home")
    yield fac
    fac.stop()
    fac.cleanup_orphans()


def test_stop_and_start_keeps_users_passwords_and_sessions(own_facility):
    fac = own_facility.start()
    admin_password = fac.admin_password
    password = fac.add_user("keeper")
    session = fac.login("keeper", password)
    session.start_server()
    users_before = sorted(
        u["name"] for u in fac.login("admin", admin_password).api("GET", "users").json()
    )
    fac.stop()
    assert not fac.leftover, "Ctrl-C left processes running"
    with pytest.raises(requests.ConnectionError):
        requests.get(fac.url, timeout=2)

    fac.start()
    assert fac.admin_password == admin_password  # not regenerated
    admin = fac.login("admin", admin_password)
    assert sorted(u["name"] for u in admin.api("GET", "users").json()) == users_before
    # the session cookie from before the restart is still valid (same cookie secret)
    assert session.api("GET", "user").json()["name"] == "keeper"
    # the server record is kept (stopped by the shutdown), and it starts again
    model = admin.api("GET", "users/keeper").json()
    assert model["servers"] == {}
    session.start_server()
    session.stop_server()
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
