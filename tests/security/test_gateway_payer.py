"""Issue 11, finding 3 applied to Dask: a GPU worker on a registry resource is charged
only to a group that may pay for it (``Resource.payable_by``). A GPU registered for
``atlas`` only, ``atlas`` at ``max_gpus 0``: a member of ``atlas/higgs/students`` may not
get a GPU worker by charging another group (``users``); the refusal says which groups may
pay. Pure offer, the gateway's worker admission against the database, and the real
gateway."""

from __future__ import annotations

import os
from urllib.parse import urljoin

import pytest
import requests

from afhub.dask.bounds import OptionsRefused
from afhub.dask.gpus import gpu_offer, validate_gpus
from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import Holdings, Limits, Usage
from afhub.registry.model import parse_registry
from afhub.services.gateway.workers import WorkerCharging, WorkerRefused, WorkerSpec
from afhub.stores.devices import DeviceStore
from tests.store_fixtures import _postgres_url, _sqlite_template, db_url, stores  # noqa: F401

STUDENTS = "atlas/higgs/students"
GPU_ENTRY = {
    "name": "gpu-atlas",
    "provider": "lab",
    "site": "here",
    "kind": "gpu",
    "accelerator": "NVIDIA A100",
    "count_per_node": 2,
    "cpu_per_node": 8,
    "memory_per_node": "64Gi",
    "extended_resource": "nvidia.com/gpu",
    "image": "ghcr.io/afhub/notebook-gpu:1",
    "allowed_groups": ["atlas"],
}
REGISTRY = parse_registry(
    {"providers": [{"name": "lab", "institution": "A Lab"}], "resources": [GPU_ENTRY]}
)


def chain(*paths: str, max_gpus=None) -> list[NodeState]:
    return [NodeState(p, Limits(max_gpus=max_gpus), Usage(holdings=Holdings())) for p in paths]


def test_gpu_offer_only_for_groups_that_may_pay():
    user_groups = {STUDENTS, "users"}
    # charging the students (below atlas): offered
    offer = gpu_offer(REGISTRY, user_groups, chain("atlas", "atlas/higgs", STUDENTS))
    assert offer.resources == ("gpu-atlas",)
    assert offer.max_worker_gpus == 1
    assert validate_gpus(1, "gpu-atlas", offer) == "gpu-atlas"
    # charging 'users': the user may use the GPU, 'users' may not pay for it
    other = gpu_offer(REGISTRY, user_groups, chain("users"))
    assert other.resources == ()
    assert other.max_worker_gpus == 0
    assert "gpu-atlas" in other.choices  # listed, so that choosing it says why not
    for resource in ("gpu-atlas", "(none)"):
        with pytest.raises(OptionsRefused) as refused:
            validate_gpus(1, resource, other)
        message = str(refused.value)
        assert "'atlas'" in message, message
        assert "'users'" in message, message
        assert "can only be charged to" in message
    assert validate_gpus(0, "(none)", other) == ""  # CPU workers are charged anywhere


@pytest.fixture
def charging(stores):  # noqa: F811 - the fixture imported above
    for path in ["atlas", "atlas/higgs", STUDENTS, "users"]:
        stores.groups.create(path)
    stores.groups.add_member(STUDENTS, "sam")
    stores.groups.add_member("users", "sam")
    stores.registry.add_provider({"name": "lab", "institution": "A Lab"})
    stores.registry.add_resource(dict(GPU_ENTRY))
    return WorkerCharging(stores)


def test_worker_admission_refuses_a_group_that_may_not_pay(charging, stores):  # noqa: F811
    spec = WorkerSpec(worker_cores=1, worker_gpus=1, gpu_resource="gpu-atlas")
    with pytest.raises(WorkerRefused, match=r"can only be charged to.*not to 'users'"):
        charging.admit(user="sam", group="users", key="c1/w1", spec=spec)
    # nothing held: no open interval, no device slot
    assert stores.ledger.find_open(kind="dask", user="sam", server_name="c1/w1") is None
    assert DeviceStore(stores.db).held_by(user="sam", server_name="c1/w1") == []
    # the students may pay (the resource is opened to atlas, above them)
    charging.admit(user="sam", group=STUDENTS, key="c1/w2", spec=spec)
    assert stores.ledger.find_open(kind="dask", user="sam", server_name="c1/w2") is not None
    # CPU workers are charged to any group of the user
    charging.admit(user="sam", group="users", key="c1/w3", spec=WorkerSpec(worker_cores=1))


@pytest.mark.facility
@pytest.mark.slow
def test_gateway_refuses_a_gpu_cluster_charged_to_a_group_that_may_not_pay(facility):
    root = f"gpay{os.getpid()}"
    students = f"{root}/higgs/students"
    api = urljoin(facility.url, "services/facility/api/")
    admin_token = facility.login("admin", facility.admin_password).new_token("payer")

    def admin(method, path, **kwargs):
        headers = {"Authorization": f"token {admin_token}"}
        return requests.request(method, api + path, headers=headers, timeout=30, **kwargs)

    for path in (root, f"{root}/higgs", students):
        assert admin("POST", "groups", json={"path": path}).status_code in (201, 409)
    r = admin("PUT", f"groups/{root}/-/quota", json={"max_gpus": 0, "gpu_hours": 0})
    assert r.status_code == 200, r.text
    r = admin("POST", "providers", json={"name": f"lab{root}", "institution": "A Lab"})
    assert r.status_code == 201, r.text
    resource = {**GPU_ENTRY, "name": f"gpu-{root}", "provider": f"lab{root}"}
    resource["allowed_groups"] = [root]
    r = admin("POST", "resources", json=resource)
    assert r.status_code == 201, r.text
    invitation = admin("POST", f"groups/{students}/-/invitations", json={"uses": 1}).json()

    name = f"gpayer{os.getpid()}"
    token = facility.login(name, facility.add_user(name)).new_token("payer")
    joined = requests.post(
        api + "invitations/redeem",
        json={"token": invitation["token"]},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert joined.status_code == 200, joined.text

    gateway = urljoin(facility.url, "services/dask-gateway/api/v1/clusters/")
    auth = {"Authorization": f"jupyterhub {token}"}
    options = {"worker_gpus": 1, "gpu_resource": resource["name"]}
    r = requests.post(
        gateway, json={"cluster_options": {**options, "charge_to": "users"}}, headers=auth
    )
    created = r.json().get("name") if r.status_code == 201 else None
    if created:
        requests.delete(gateway + created, headers=auth, timeout=30)
    assert r.status_code == 422, (r.status_code, r.text)
    message = r.json()["error"]
    assert f"'{root}'" in message, message
    assert "'users'" in message, message
    assert "charged" in message, message
    # the group that may pay is still held by its own limits (max_gpus 0)
    r = requests.post(
        gateway, json={"cluster_options": {**options, "charge_to": students}}, headers=auth
    )
    assert r.status_code == 422, r.text
    assert "max_gpus" in r.json()["error"], r.text
    assert requests.get(gateway, headers=auth, timeout=30).json() == {}
