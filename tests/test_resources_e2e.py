"""Issue 4's "Done when", in the local facility: an admin registers a GPU and an FPGA
resource for atlas/higgs; members see and start them (simulated devices, exclusive), a
non-member neither sees nor starts them, bad requests are refused before anything runs,
and a spawn that cannot get a device fails fast and leaves nothing behind."""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import pytest
import requests

from afhub.stores.devices import DeviceStore
from afhub.stores.facade import Stores
from tests.facility import Facility, run_in_kernel

pytestmark = [pytest.mark.facility, pytest.mark.slow]

PROVIDER = {"name": "higgs-lab", "institution": "Higgs Lab", "contacts": ["ops@lab.example"]}
GPU = {
    "name": "sim-a100",
    "provider": "higgs-lab",
    "site": "lab",
    "kind": "gpu",
    "accelerator": "NVIDIA A100 80GB",
    "count_per_node": 2,
    "node_count": 1,
    "cpu_per_node": 2,
    "memory_per_node": "4Gi",
    "extended_resource": "nvidia.com/gpu",
    "image": "ghcr.io/afhub/notebook-gpu:2026.11",
    "image_pattern": "^ghcr\\.io/afhub/[a-z-]+:[0-9.]+$",
    "allowed_groups": ["atlas/higgs"],
}
FPGA = {
    "name": "sim-u250",
    "provider": "higgs-lab",
    "site": "lab",
    "kind": "fpga",
    "accelerator": "AMD Alveo U250",
    "count_per_node": 1,
    "cpu_per_node": 1,
    "memory_per_node": "2Gi",
    "extended_resource": "xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1",
    "image": "ghcr.io/afhub/notebook-fpga:2026.11",
    "allowed_groups": ["atlas/higgs"],
}
ENV_CODE = (
    "import os; print('|'.join([os.environ.get('AFHUB_RESOURCE', '-'), "
    "os.environ.get('AFHUB_DEVICES', '-'), os.environ.get('AFHUB_DEVICES_SIMULATED', '-'), "
    "repr(os.environ.get('CUDA_VISIBLE_DEVICES')), os.getcwd()]))"
)


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    # its own facility: the session's already has users named user and user-hyphen
    facility = Facility(tmp_path_factory.mktemp("resources-facility"))
    facility.start(timeout=180)  # managed services start one after the other
    yield facility
    facility.stop()
    facility.cleanup_orphans()


def stores_of(fac: Facility) -> Stores:
    return Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)


class Admin:
    def __init__(self, fac: Facility):
        self.base = urljoin(fac.url, "services/facility/api/")
        token = fac.login("admin", fac.admin_password).new_token("resources e2e")
        self.headers = {"Authorization": f"token {token}"}

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, self.base + path, headers=self.headers, timeout=30, **kwargs
        )


def register(fac: Facility, admin: Admin) -> str:
    """Register through the facility API when it serves the registry, else the store."""
    r = admin("POST", "providers", json=PROVIDER)
    if r.status_code == 404 and "error" not in r.text:
        stores = stores_of(fac)
        try:
            stores.registry.add_provider(PROVIDER)
            for entry in (GPU, FPGA):
                stores.registry.add_resource(entry)
        finally:
            stores.close()
        return "store"
    assert r.status_code == 201, r.text
    for entry in (GPU, FPGA):
        r = admin("POST", "resources", json=entry)
        assert r.status_code == 201, r.text
    return "api"


def spawn(session, options: dict) -> requests.Response:
    return session.api("POST", f"users/{session.username}/server", json=options)


def servers(session) -> dict:
    return session.api("GET", f"users/{session.username}").json()["servers"]


def profile_block(html: str, slug: str) -> str:
    """The part of kubespawner's form that belongs to one profile."""
    start = html.index(f'id="profile-item-{slug}"')
    end = html.find('id="profile-item-', start + 1)
    return html[start : end if end > 0 else len(html)]


def test_registered_gpu_and_fpga_for_atlas_higgs(fac):
    admin = Admin(fac)
    for path in ("atlas", "atlas/higgs", "atlas/higgs/students", "cms"):
        assert admin("POST", "groups", json={"path": path}).status_code == 201
    r = admin("PUT", "groups/atlas/higgs/students/-/quota", json={"max_gpus": 1})
    assert r.status_code == 200, r.text
    passwords = {name: fac.add_user(name) for name in ("user", "user-hyphen", "student")}
    for name in ("user", "user-hyphen"):
        assert admin("PUT", f"groups/atlas/higgs/-/members/{name}", json={}).status_code == 200
    assert admin("PUT", "groups/atlas/higgs/students/-/members/student", json={}).status_code == 200
    how = register(fac, admin)

    # groups reach the hub at login
    user = fac.login("user", passwords["user"])
    hyphen = fac.login("user-hyphen", passwords["user-hyphen"])
    student = fac.login("student", passwords["student"])
    outsider = fac.login("outsider", fac.add_user("outsider"))
    assert admin("PUT", "groups/cms/-/members/outsider", json={}).status_code == 200

    # members see both resources in the spawn form, with what their quota leaves
    form = user.get(urljoin(fac.hub_url, "spawn"), timeout=30)
    assert form.status_code == 200
    assert 'value="sim-a100"' in form.text
    assert 'value="sim-u250"' in form.text
    assert "Quota of atlas/higgs: no limit applies." in form.text
    gpu_block = profile_block(
        student.get(urljoin(fac.hub_url, "spawn"), timeout=30).text, "sim-a100"
    )
    assert "Your quota leaves 1 GPU." in gpu_block
    assert re.findall(r'<option value="(\d)"', gpu_block) == ["1"]
    # a non-member does not (the charge-to select gives them a form to look at)
    form = outsider.get(urljoin(fac.hub_url, "spawn"), timeout=30)
    assert form.status_code == 200
    assert 'name="charge_to"' in form.text
    assert "sim-a100" not in form.text
    assert "sim-u250" not in form.text
    assert servers(user) == servers(student) == servers(outsider) == {}

    # refused at once, nothing spawned: not allowed, over quota, junk choices, extra keys
    refusals = [
        (outsider, {"profile": "sim-a100", "accelerators": "1"}, "not available"),
        (student, {"profile": "sim-a100", "accelerators": "2"}, "atlas/higgs/students"),
        (student, {"profile": "sim-a100", "accelerators": "1x"}, "not one of"),
        (
            student,
            {"profile": "sim-a100", "image--unlisted-choice": "ghcr.io/afhub/x:2026.11;rm"},
            "not an allowed value",
        ),
        (student, {"profile": "sim-a100", "privileged": True}, "unknown options"),
        (student, {"profile": "sim-a100", "cmd": ["sh"]}, "unknown options"),
    ]
    for session, options, words in refusals:
        t0 = time.monotonic()
        r = spawn(session, options)
        assert r.status_code == 403, (options, r.status_code, r.text)
        assert words in r.json()["message"], (options, r.json())
        assert time.monotonic() - t0 < 5
        assert servers(session) == {}

    # a member starts a server with both GPUs; inside, the simulated devices are named
    assert spawn(user, {"profile": "sim-a100", "accelerators": "2"}).status_code in (201, 202)
    user.wait_for_server()
    token = user.new_token("kernel")
    resource, devices, simulated, cuda, cwd = (
        run_in_kernel(fac.url, "user", token, ENV_CODE).strip().split("|")
    )
    assert (resource, devices, simulated, cuda) == ("sim-a100", "0,1", "1", "''")
    assert cwd.endswith("/homes/user")

    # every GPU is held: the next GPU spawn fails fast, clearly, and leaves nothing
    t0 = time.monotonic()
    busy = spawn(hyphen, {"profile": "sim-a100", "accelerators": "1"})
    elapsed = time.monotonic() - t0
    assert busy.status_code == 409, busy.text
    assert "no free GPU" in busy.json()["message"]
    assert "2 of 2 in use" in busy.json()["message"]
    assert elapsed < 2, elapsed
    assert servers(hyphen) == {}
    # ... and the next spawn works: the FPGA for user-hyphen, in its own home
    assert spawn(hyphen, {"profile": "sim-u250"}).status_code in (201, 202)
    hyphen.wait_for_server()
    assert (fac.home / "homes" / "user-2dhyphen").is_dir()
    assert (fac.home / "homes" / "user").is_dir()

    # stop one GPU server: its slots come back and the next GPU spawn succeeds
    user.stop_server()
    assert spawn(student, {"profile": "sim-a100", "accelerators": "1"}).status_code in (201, 202)
    student.wait_for_server()

    stores = stores_of(fac)
    try:
        held = {(a.user, a.resource, a.slot) for a in DeviceStore(stores.db).allocations()}
        assert held == {("user-hyphen", "sim-u250", 0), ("student", "sim-a100", 0)}
        ledger = stores.ledger.usage("atlas", datetime(2000, 1, 1, tzinfo=UTC)).intervals
        mine = [i for i in ledger if i.user == "user"]
        assert [(i.resource, i.gpus, i.cpu_cores, i.state) for i in mine] == [
            ("sim-a100", 2, 2.0, "closed")
        ]
        open_servers = stores.ledger.open_intervals("server")
        assert {(i.user, i.resource, i.gpus) for i in open_servers} == {
            ("user-hyphen", "sim-u250", 1),
            ("student", "sim-a100", 1),
        }
    finally:
        stores.close()
    # the refused GPU spawn of user-hyphen was recorded as failed, charged nothing
    with sqlite3.connect(fac.home / "afhub.sqlite") as db:
        rows = db.execute(
            "SELECT resource, state, start_ts FROM afhub_ledger WHERE user_name = 'user-hyphen' "
            "ORDER BY id"
        ).fetchall()
    assert rows[0] == ("sim-a100", "failed", None)
    assert rows[1][:2] == ("sim-u250", "running")
    hyphen.stop_server()
    student.stop_server()
    stores = stores_of(fac)
    try:
        assert DeviceStore(stores.db).allocations() == []
    finally:
        stores.close()
    print(f"registered through the {how}")
