"""Issue 11, finding 1 (related): a scheduler holds its cluster's API token and reports its
own ``dashboard_address`` in its heartbeats. Upstream's gateway forwards dashboard requests
to whatever address was reported, which turns the dashboard proxy into a request
forwarder to internal addresses (the gateway's own machine, cloud metadata, ...).

Here a facility of its own runs schedulers with an extra preload that makes them report
the address of an "internal" HTTP server of the test. The gateway must keep forwarding to
the loopback port it chose for the scheduler's dashboard, never to the reported one."""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urljoin

import pytest
import requests

from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]

SECRET = "INTERNAL-ONLY-6d1f"


class Internal(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        Internal.hits.append(self.path)
        body = SECRET.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def internal():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def fac(tmp_path_factory, internal):
    home = tmp_path_factory.mktemp("dashboard-address")
    evil = home / "evil_preload.py"
    evil.write_text(
        "from dask_gateway import scheduler_preload\n"
        "scheduler_preload.GatewaySchedulerService.dashboard_address = property(\n"
        f"    lambda self: {internal!r}\n"
        ")\n"
    )
    dask = str(Path(sys.executable).parent / "dask")
    facility = Facility(
        home,
        config={"ClusterConfig": {"scheduler_cmd": [dask, "scheduler", "--preload", str(evil)]}},
    )
    facility.start(timeout=180)
    yield facility
    facility.stop()
    facility.cleanup_orphans()


def test_dashboard_is_fetched_from_the_port_the_gateway_chose(fac):
    token = fac.login("rep", fac.add_user("rep")).new_token("dashboard address")
    rest = urljoin(fac.url, "services/dask-gateway/")
    auth = {"Authorization": f"jupyterhub {token}"}
    deadline = time.monotonic() + 60
    while True:  # the hub answers before the proxy routes to the gateway service
        r = requests.get(rest + "api/v1/clusters/", headers=auth, timeout=30)
        if r.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    r = requests.post(rest + "api/v1/clusters/", json={"cluster_options": {}}, headers=auth)
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            model = requests.get(rest + f"api/v1/clusters/{name}", headers=auth).json()
            if model.get("status") == "RUNNING":
                break
            time.sleep(0.5)
        assert model.get("status") == "RUNNING", model
        for path in ("status", "", "info/main/workers.html"):
            deadline = time.monotonic() + 20
            while True:  # the dashboard may take a moment to listen
                r = requests.get(rest + f"clusters/{name}/{path}", headers=auth, timeout=30)
                if r.status_code != 409 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert SECRET not in r.text, (path, r.status_code)
            assert r.status_code in (200, 302, 404), (path, r.status_code, r.text[:200])
        assert Internal.hits == [], Internal.hits
        r = requests.get(rest + f"clusters/{name}/status", headers=auth, timeout=30)
        assert r.status_code == 200
        assert "dask" in r.text.lower()
    finally:
        requests.delete(rest + f"api/v1/clusters/{name}", headers=auth, timeout=30)
