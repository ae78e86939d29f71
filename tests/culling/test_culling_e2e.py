"""Idle culling per kind in a real facility: an idle GPU server (a registered resource,
simulated device) is culled while the CPU server started with it, idle about as long, keeps
running until the CPU timeout culls it too; both ledger intervals closed, the device freed,
the named server kept for its user."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import pytest
import requests

from afhub.stores.devices import DeviceStore
from afhub.stores.facade import Stores
from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]

CPU_TIMEOUT_S = 20
GPU_TIMEOUT_S = 2
GROUP = "gpu-team"
PROVIDER = {"name": "cull-lab", "institution": "Culling Lab"}
GPU = {
    "name": "sim-gpu",
    "provider": "cull-lab",
    "site": "lab",
    "kind": "gpu",
    "accelerator": "NVIDIA A100 80GB",
    "count_per_node": 1,
    "cpu_per_node": 1,
    "memory_per_node": "2Gi",
    "extended_resource": "nvidia.com/gpu",
    "image": "ghcr.io/afhub/notebook-gpu:2026.11",
    "allowed_groups": [GROUP],
}


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    facility = Facility(
        tmp_path_factory.mktemp("culling-facility"),
        env={
            "AFHUB_CULL_TIMEOUT_CPU": str(CPU_TIMEOUT_S),
            "AFHUB_CULL_TIMEOUT_GPU": str(GPU_TIMEOUT_S),
            "AFHUB_CULL_EVERY": "1",
        },
    )
    facility.start(timeout=180)  # managed services start one after the other
    yield facility
    facility.stop()
    facility.cleanup_orphans()


def admin_api(fac: Facility):
    base = urljoin(fac.url, "services/facility/api/")
    headers = {"Authorization": f"token {fac.admin_token()}"}

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, base + path, headers=headers, timeout=30, **kwargs)

    return call


def test_idle_gpu_server_is_culled_before_the_cpu_one_and_usage_closes(fac):
    admin = admin_api(fac)
    assert admin("POST", "groups", json={"path": GROUP}).status_code == 201
    password = fac.add_user("idler")
    assert admin("PUT", f"groups/{GROUP}/-/members/idler", json={}).status_code == 200
    assert admin("POST", "providers", json=PROVIDER).status_code == 201
    registered = admin("POST", "resources", json=GPU)
    assert registered.status_code == 201, registered.text
    session = fac.login("idler", password)  # hub groups are set at login

    # the default server (CPU: the built-in local resource) and a named GPU server, at once
    codes: dict[str, int] = {}

    def spawn(name: str, options: dict) -> None:
        codes[name] = session.api("POST", f"users/idler/servers/{name}", json=options).status_code

    threads = [
        threading.Thread(target=spawn, args=("", {})),
        threading.Thread(target=spawn, args=("fit", {"profile": "sim-gpu"})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert codes == {"": codes[""], "fit": codes["fit"]}
    assert set(codes.values()) <= {201, 202}

    def servers() -> dict:
        return session.api("GET", "users/idler").json()["servers"]

    # nobody uses either; they are not waited for through their URLs (that is activity)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        current = servers()
        if "fit" not in current:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the idle GPU server was not culled:\n{fac.log_tail()}")
    # the CPU server, started with it and idle about as long, is not past its own timeout:
    # still there, ready or (on a loaded machine) still starting, not being stopped
    cpu_server = current.get("")
    assert cpu_server is not None, (current, fac.log_tail())
    starting_or_ready = cpu_server.get("ready") or cpu_server.get("pending") == "spawn"
    assert starting_or_ready, (current, fac.log_tail())

    deadline = time.monotonic() + CPU_TIMEOUT_S + 30
    while time.monotonic() < deadline and servers():
        time.sleep(0.5)
    assert servers() == {}, fac.log_tail()

    # stopped, not deleted: the named server stays the user's, ready to start again
    kept = session.api("GET", "users/idler", params={"include_stopped_servers": "1"}).json()
    assert kept["servers"]["fit"]["stopped"] is True

    # the post-stop hook closed both intervals (charged up to the stop), the GPU is free
    stores = Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)
    try:
        report = stores.ledger.usage(GROUP, datetime(2000, 1, 1, tzinfo=UTC))
        rows = {i.server_name: i for i in report.intervals if i.user == "idler"}
        assert not [i for i in stores.ledger.open_intervals("server") if i.user == "idler"]
        assert DeviceStore(stores.db).allocations() == []
    finally:
        stores.close()
    assert set(rows) == {"", "fit"}
    assert rows["fit"].resource == "sim-gpu"
    assert rows["fit"].gpus == 1
    for interval in rows.values():
        assert interval.state == "closed"
        assert interval.note == "stopped"
        assert interval.start is not None
        assert interval.stop > interval.start
    assert rows["fit"].stop < rows[""].stop

    # each cull is logged with user, server, kind and idle time
    log = fac.log_path.read_text(errors="replace")
    assert "Culling user idler server fit kind gpu idle 00:00:" in log, fac.log_tail()
    assert f"past the gpu timeout of {GPU_TIMEOUT_S} s" in log
    assert "Culling user idler server (default) kind cpu idle 00:00:" in log
    assert f"past the cpu timeout of {CPU_TIMEOUT_S} s" in log
