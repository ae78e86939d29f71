"""Fail fast in Kubernetes mode, with the facility database (SQLite): the profile, the
quota and the registry's accelerator accounting refuse a spawn before any pod exists,
and a refused spawn leaves nothing behind. (Local mode: tests/test_resources_e2e.py.)"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from unittest import mock

import pytest
from tornado import web

from afhub.quotas.limits import Charge
from afhub.spawners.kube import AfhubKubeSpawner
from afhub.stores.devices import DeviceStore
from afhub.stores.facade import Stores
from tests.support.databases import fresh_sqlite

REGISTRY = {
    "providers": [{"name": "lab", "institution": "A Lab"}],
    "resources": [
        {
            "name": "gpu",
            "provider": "lab",
            "site": "here",
            "kind": "gpu",
            "accelerator": "NVIDIA A100 80GB",
            "count_per_node": 2,
            "cpu_per_node": 8,
            "memory_per_node": "64Gi",
            "extended_resource": "nvidia.com/gpu",
            "image": "ghcr.io/afhub/notebook-gpu:1",
            "allowed_groups": ["atlas/higgs"],
        }
    ],
}


@pytest.fixture
def db(tmp_path, _sqlite_template):
    url = fresh_sqlite(_sqlite_template, tmp_path)
    stores = Stores.open(url, migrate=False)
    for path in ("atlas", "atlas/higgs", "atlas/higgs/students"):
        stores.groups.create(path)
    stores.quotas.set("atlas/higgs/students", {"max_gpus": 1})
    stores.groups.add_member("atlas/higgs/students", "ann")
    for user in ("bob", "cat"):
        stores.groups.add_member("atlas/higgs", user)
    stores.groups.create("cms")
    stores.groups.add_member("cms", "eve")
    yield url, stores
    stores.close()


def spawner(url: str, name: str, options: dict) -> AfhubKubeSpawner:
    async def make():
        user = SimpleNamespace(name=name, id=1, url=f"/user/{name}/", groups=[])
        with mock.patch("kubespawner.spawner.load_config"):
            made = AfhubKubeSpawner(_mock=True, user=user, registry=REGISTRY, facility_db_url=url)
        await made.api.api_client.close()
        made.user_options = options
        return made

    return asyncio.run(make())


def refused(made: AfhubKubeSpawner, status: int) -> str:
    t0 = time.monotonic()
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(made.start())
    assert time.monotonic() - t0 < 2
    assert info.value.status_code == status, info.value
    return info.value.log_message


def admitted(made: AfhubKubeSpawner) -> int:
    """What start() does before kubespawner creates the pod."""
    asyncio.run(made.prepare_start())
    interval = made._admit()
    asyncio.run(made.claim_resources(interval))
    made.interval_id = interval
    return interval


def test_kube_spawns_fail_fast_and_leave_nothing(db):
    url, stores = db
    devices = DeviceStore(stores.db)
    gpu = {"profile": "gpu", "accelerators": "1"}
    # not allowed, over quota: 403 before admission
    assert "available to your groups" in refused(spawner(url, "eve", gpu), 403)
    message = refused(spawner(url, "ann", {**gpu, "accelerators": "2"}), 403)
    assert "Group 'atlas/higgs/students' allows 1 concurrent GPUs: 0 in use" in message
    assert "ask for at most 1 GPU" in message
    assert "HTTP" not in message
    bad = refused(spawner(url, "bob", {**gpu, "charge_to": "../../etc"}), 400)
    assert "charge_to must be a group path" in bad
    assert "cms" in refused(spawner(url, "bob", {**gpu, "charge_to": "cms"}), 403)
    form = asyncio.run(spawner(url, "ann", {}).options_form(spawner(url, "ann", {})))
    assert "Your quota leaves 1 GPU." in form
    assert stores.ledger.open_intervals() == []
    assert devices.allocations() == []

    ann = spawner(url, "ann", gpu)
    admitted(ann)
    assert ann.server_charge() == Charge("server", cpu_cores=4.0, gpus=1, resource="gpu")
    bob = spawner(url, "bob", gpu)
    admitted(bob)
    assert [(a.user, a.slot) for a in devices.allocations()] == [("ann", 0), ("bob", 1)]

    # every slot held: 409 at once, the interval failed, nothing held
    message = refused(spawner(url, "cat", gpu), 409)
    assert "no free GPU on resource 'gpu'" in message
    assert "2 of 2 in use" in message
    assert {i.user for i in stores.ledger.open_intervals()} == {"ann", "bob"}
    assert {a.user for a in devices.allocations()} == {"ann", "bob"}

    # ann's server stops: its slot and charge are released, cat gets the slot
    asyncio.run(ann.run_post_stop_hook())
    assert [(a.user, a.slot) for a in devices.allocations()] == [("bob", 1)]
    cat = spawner(url, "cat", gpu)
    admitted(cat)
    assert sorted((a.user, a.slot) for a in devices.allocations()) == [("bob", 1), ("cat", 0)]
    assert {i.user for i in stores.ledger.open_intervals()} == {"bob", "cat"}


def test_a_resource_is_paid_only_by_a_group_it_is_open_to(db):
    """Issue 11, finding 3: access to a resource and the group that pays for it agree."""
    url, stores = db
    stores.groups.create("users")
    stores.groups.add_member("users", "ann")  # ann's default group stays atlas/higgs/students
    stores.groups.add_member("users", "dan")  # dan joined users first: it is his default
    stores.groups.add_member("atlas/higgs/students", "dan")
    gpu = {"profile": "gpu", "accelerators": "1"}
    message = refused(spawner(url, "ann", {**gpu, "charge_to": "users"}), 403)
    assert "'atlas/higgs'" in message, message
    assert "not to 'users'" in message, message
    assert "your groups that may pay: atlas/higgs/students" in message, message
    # a malformed charge_to is a 400 that says why, never a 500
    for bad in ("atlas/../users", "atlas//higgs", "/atlas", "Atlas"):
        assert "charge_to must be a group path" in refused(
            spawner(url, "ann", {**gpu, "charge_to": bad}), 400
        )
    assert stores.ledger.open_intervals() == []
    # the form marks the groups that may not pay for a profile
    dan = spawner(url, "dan", gpu)
    form = asyncio.run(dan.options_form(dan))
    assert 'value="users" data-cannot-pay="gpu"' in form, form
    assert ">users (cannot pay for gpu)</option>" in form, form
    assert 'value="atlas/higgs/students" data-cannot-pay=""' in form, form
    # each group carries what its quota leaves; the select shows the hub's select look
    assert 'data-quota="Quota of atlas/higgs/students leaves 1 accelerator (of 1)."' in form
    assert 'class="form-select js-profile-option-select"' in form
    # no choice made: dan's default group (users) may not pay, his one group that may does
    interval = admitted(dan)
    assert stores.ledger.get(interval).group == "atlas/higgs/students"
    # now no group that may pay for the GPU has one left: the form offers no GPU profile
    form = asyncio.run(dan.options_form(dan))
    assert 'value="gpu"' not in form
    assert 'data-quota="Quota of atlas/higgs/students leaves 0 accelerators (of 1)."' in form
    # ann asks for it anyway: refused in plain words, with the one group full
    message = refused(spawner(url, "ann", gpu), 403)
    assert "Group 'atlas/higgs/students' is at its limit of 1 concurrent GPUs" in message
    assert "wait until a server holding GPUs charged to it stops" in message
