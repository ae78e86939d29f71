"""``/api/resources``, ``/api/providers``, ``/api/registry`` of the facility API.

The service runs in a thread next to a stand-in for the hub's token check (see
tests/facility_api/conftest.py); one test at the end goes through a real hub, with the
registry file applied at its start.
"""

# the facility API fixtures of tests/facility_api are reused here
# ruff: noqa: F811

from __future__ import annotations

import json
import time
from urllib.parse import urljoin

import pytest
import requests

from afhub.quotas.limits import Charge, ChargeKind
from tests.facility_api.conftest import _template, service  # noqa: F401

PROVIDER = {"name": "uchicago", "institution": "University of Chicago", "contacts": ["a@b.c"]}


def gpu(name="a100", groups=("atlas/higgs",), **changes):
    entry = {
        "name": name,
        "provider": "uchicago",
        "site": "UChicago AF",
        "kind": "gpu",
        "accelerator": "NVIDIA A100 80GB",
        "count_per_node": 4,
        "node_count": 2,
        "cpu_per_node": 64,
        "memory_per_node": "512Gi",
        "extended_resource": "nvidia.com/gpu",
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "image": "ghcr.io/afhub/notebook-gpu:2026.11",
        "allowed_groups": list(groups),
    }
    entry.update(changes)
    return entry


def fpga(name="u250", groups=("atlas/higgs",)):
    return {
        "name": name,
        "provider": "uchicago",
        "site": "UChicago AF",
        "kind": "fpga",
        "accelerator": "AMD/Xilinx Alveo U250",
        "count_per_node": 2,
        "cpu_per_node": 16,
        "memory_per_node": "64Gi",
        "extended_resource": "xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1-0",
        "image": "ghcr.io/afhub/notebook-fpga:2026.11",
        "allowed_groups": list(groups),
    }


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body["error"]
    assert "Traceback" not in response.text
    assert "/work/" not in response.text
    return body["error"]


@pytest.fixture
def api(service):
    """A facility admin ``root``, ``hana`` in atlas/higgs/students, ``carl`` in cms."""
    stores = service.stores
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students", "cms"]:
        stores.groups.create(path)
    stores.groups.add_member("atlas/higgs/students", "hana")
    stores.groups.add_member("cms", "carl")
    service.root = service.user("root", admin=True)
    service.hana = service.user("hana")
    service.carl = service.user("carl")
    return service


def test_admin_registers_and_members_see_only_what_their_groups_may_use(api):
    root, hana, carl = api.root, api.hana, api.carl
    assert root("POST", "api/providers", json=PROVIDER).status_code == 201
    created = root("POST", "api/resources", json=gpu())
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "api"
    assert created.json()["accelerators_total"] == 8
    assert root("PUT", "api/resources/u250", json=fpga()).status_code == 201
    assert root("PUT", "api/resources/cpu", json=gpu("cpu", groups=["cms"])).status_code == 201

    # hana (atlas/higgs/students) inherits atlas/higgs: the GPU and the FPGA, not cms's
    seen = hana("GET", "api/resources").json()["resources"]
    assert [r["name"] for r in seen] == ["a100", "u250"]
    assert seen[0]["kind"] == "gpu"
    assert seen[0]["accelerator"] == "NVIDIA A100 80GB"
    # the devices free now (the Resources page shows them): 3 of the 8 held by a server
    api.stores.devices.allocate(api.stores.registry.load().resources["a100"], 8, 3, user="hana")
    assert hana("GET", "api/resources").json()["resources"][0]["accelerators_free"] == 5
    assert seen[0]["usable_through"] == ["atlas/higgs"]
    assert seen[0]["institution"] == "University of Chicago"
    assert "allowed_groups" not in seen[0]
    assert "source" not in seen[0]
    assert hana("GET", "api/resources/u250").json()["kind"] == "fpga"
    # carl (cms) sees only cms's; a resource he may not use is 404 like an unknown one
    assert [r["name"] for r in carl("GET", "api/resources").json()["resources"]] == ["cpu"]
    hidden = error_of(carl("GET", "api/resources/a100"), 404)
    unknown = error_of(carl("GET", "api/resources/nothing"), 404)
    assert hidden.replace("a100", "X") == unknown.replace("nothing", "X")

    # the admin sees everything, with who may use it and the servers running
    everything = root("GET", "api/resources").json()["resources"]
    assert [r["name"] for r in everything] == ["a100", "u250", "cpu"]
    assert everything[0]["allowed_groups"] == ["atlas/higgs"]
    assert everything[0]["servers_running"] == 0
    document = root("GET", "api/registry").json()
    assert document["resources"][0] == gpu()
    assert document["providers"] == [PROVIDER]

    # replace, then remove
    changed = root("PUT", "api/resources/a100", json=gpu(node_count=3))
    assert changed.status_code == 200
    assert changed.json()["node_count"] == 3
    assert root("DELETE", "api/resources/cpu").json() == {"deleted": "cpu"}
    error_of(root("DELETE", "api/resources/cpu"), 404)
    assert api.stores.registry.load().resources["a100"].node_count == 3


def test_non_admins_may_not_change_the_registry(api):
    root, hana = api.root, api.hana
    root("POST", "api/providers", json=PROVIDER)
    root("POST", "api/resources", json=gpu())
    revision = api.stores.registry.revision()
    for method, path, body in [
        ("POST", "api/resources", gpu("mine")),
        ("PUT", "api/resources/a100", gpu(node_count=9)),
        ("PUT", "api/resources/ghost", gpu("ghost")),
        ("DELETE", "api/resources/a100", None),
        ("DELETE", "api/resources/ghost", None),
        ("POST", "api/providers", dict(PROVIDER, name="mine")),
        ("PUT", "api/providers/uchicago", dict(PROVIDER, institution="Mine")),
        ("DELETE", "api/providers/uchicago", None),
        ("PUT", "api/registry", {"providers": [], "resources": []}),
        ("GET", "api/registry", None),
    ]:
        message = error_of(hana(method, path, json=body), 403)
        assert "only facility admins may" in message
    assert api.stores.registry.revision() == revision


def test_no_user_and_forged_token_get_401(api):
    api.root("POST", "api/providers", json=PROVIDER)
    for client in (api.client(None), api.client("forged-token")):
        for method, path, body in [
            ("GET", "api/resources", None),
            ("GET", "api/resources/a100", None),
            ("POST", "api/resources", gpu()),
            ("PUT", "api/resources/a100", gpu()),
            ("DELETE", "api/resources/a100", None),
            ("GET", "api/providers", None),
            ("GET", "api/providers/uchicago", None),
            ("PUT", "api/providers/uchicago", PROVIDER),
            ("POST", "api/providers", PROVIDER),
            ("DELETE", "api/providers/uchicago", None),
            ("GET", "api/registry", None),
            ("PUT", "api/registry", {}),
        ]:
            error_of(client(method, path, json=body), 401)
    assert api.stores.registry.document()["resources"] == []


def test_bad_bodies_are_refused_with_a_reason(api):
    root = api.root
    root("POST", "api/providers", json=PROVIDER)
    post = "api/resources"
    assert "must not be negative" in error_of(root("POST", post, json=gpu(count_per_node=-1)), 400)
    assert "field 'kind' is 'tpu'" in error_of(root("POST", post, json=gpu(kind="tpu")), 400)
    assert "unknown fields ['colour']" in error_of(root("POST", post, json=gpu(colour=1)), 400)
    nan = json.dumps(gpu()).replace('"cpu_per_node": 64', '"cpu_per_node": NaN')
    assert "not valid JSON" in error_of(root("POST", post, data=nan), 400)
    error_of(root("POST", post, data="{not json"), 400)
    assert "JSON object" in error_of(root("POST", post, json=[gpu()]), 400)
    error_of(root("POST", post), 400)
    too_big = {"description": "x" * (65 * 1024)}
    assert "over the limit" in error_of(root("POST", post, json=too_big), 413)
    assert "URL names" in error_of(root("PUT", "api/resources/b", json=gpu("a")), 400)
    error_of(root("GET", "api/registry?source=somewhere"), 400)
    assert api.stores.registry.document()["resources"] == []
    # the whole document may be larger, but not without bound
    big = {"resources": [gpu(f"g{i}", description="d" * 900) for i in range(1200)]}
    assert "over the limit" in error_of(root("PUT", "api/registry", json=big), 413)
    assert root("POST", post, json=gpu()).status_code == 201
    assert "already exists" in error_of(root("POST", post, json=gpu()), 409)


def test_removal_refused_while_servers_run(api):
    root, stores = api.root, api.stores
    root("POST", "api/providers", json=PROVIDER)
    root("POST", "api/resources", json=gpu())
    charge = Charge(kind=ChargeKind.SERVER, cpu_cores=16, gpus=1, resource="a100")
    admission = stores.ledger.admit(user="hana", charge=charge, group="atlas/higgs/students")
    message = error_of(root("DELETE", "api/resources/a100"), 409)
    assert "1 server(s) still run on it; stop them" in message
    assert root("GET", "api/resources/a100").json()["servers_running"] == 1
    change_kind = gpu(kind="fpga", extended_resource="xilinx.com/fpga-u250")
    error_of(root("PUT", "api/resources/a100", json=change_kind), 409)
    assert "still provides 1 resource" in error_of(root("DELETE", "api/providers/uchicago"), 409)
    error_of(root("PUT", "api/registry", json={"providers": [PROVIDER]}), 409)
    stores.ledger.close(admission.interval_id)
    assert root("DELETE", "api/resources/a100").status_code == 200
    assert root("DELETE", "api/providers/uchicago").status_code == 200


def test_put_registry_keeps_the_file_entries(api):
    root, stores = api.root, api.stores
    stores.registry.apply({"providers": [PROVIDER], "resources": [gpu()]}, source="file")
    # a file entry is changed in the file, not over the API
    assert "registry file" in error_of(root("DELETE", "api/resources/a100"), 409)
    assert "registry file" in error_of(root("PUT", "api/resources/a100", json=gpu()), 409)
    document = {"providers": [PROVIDER], "resources": [gpu(), fpga()]}
    applied = root("PUT", "api/registry", json=document)
    assert applied.status_code == 200, applied.text
    assert applied.json()["added"] == ["resource u250"]
    assert root("GET", "api/registry?source=api").json()["resources"] == [fpga()]
    emptied = root("PUT", "api/registry", json={"providers": [], "resources": []})
    assert emptied.json()["removed"] == ["resource u250"]
    assert list(stores.registry.load().resources) == ["a100"]


# --- through a real hub ----------------------------------------------------------------------


@pytest.mark.facility
@pytest.mark.slow
def test_through_a_real_hub(facility, new_user):
    """The session's facility: real tokens; unique names, and the registry left as found."""
    import uuid

    tag = uuid.uuid4().hex[:6]
    top, group, other = f"reg{tag}", f"reg{tag}/higgs", f"reg{tag}-cms"
    admin = facility.admin_token()

    def call(token, method, path, **kwargs):
        headers = {"Authorization": f"token {token}"} if token else {}
        url = urljoin(facility.url, "services/facility/api/" + path)
        for _ in range(40):  # the service starts a moment after the hub
            try:
                return requests.request(method, url, headers=headers, timeout=30, **kwargs)
            except requests.ConnectionError:
                time.sleep(0.25)
        raise AssertionError("facility API never answered")

    for path in [top, group, other]:
        assert call(admin, "POST", "groups", json={"path": path}).status_code == 201
    tokens = {}
    for key, path in [("member", group), ("outsider", other)]:
        name, password = new_user("reg")
        assert call(admin, "PUT", f"groups/{path}/-/members/{name}").ok
        tokens[key] = facility.login(name, password).new_token("registry")
    provider = dict(PROVIDER, name=f"prov-{tag}")
    names = [f"gpu-{tag}", f"fpga-{tag}"]
    try:
        assert call(admin, "POST", "providers", json=provider).status_code == 201
        for entry in (gpu(names[0], groups=[group]), fpga(names[1], groups=[group])):
            entry["provider"] = provider["name"]
            created = call(admin, "POST", "resources", json=entry)
            assert created.status_code == 201, created.text
        seen = call(tokens["member"], "GET", "resources").json()["resources"]
        assert [r["name"] for r in seen if r["name"] in names] == names
        outsider = call(tokens["outsider"], "GET", "resources").json()["resources"]
        assert not [r for r in outsider if r["name"] in names]
        assert call(tokens["outsider"], "GET", f"resources/{names[0]}").status_code == 404
        assert call(tokens["member"], "DELETE", f"resources/{names[0]}").status_code == 403
        assert call(None, "GET", "resources").status_code == 401
        assert call("forged-token", "GET", "resources").status_code == 401
        # the operator's CLI on the hub host reads the same database
        out = facility.afhub("resources", "list").stdout
        assert names[0] in out
        assert names[1] in out
    finally:
        for name in names:
            call(admin, "DELETE", f"resources/{name}")
        call(admin, "DELETE", f"providers/{provider['name']}")
    assert call(admin, "GET", f"resources/{names[0]}").status_code == 404
