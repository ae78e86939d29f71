"""DeviceStore on SQLite and PostgreSQL: exclusive slots, release, stale reclamation, and
racing allocations that never share a slot."""

from __future__ import annotations

import threading

import pytest

from afhub.quotas.limits import Charge
from afhub.registry.model import parse_registry
from afhub.stores.devices import DevicesBusy, DeviceStore

GPU = parse_registry(
    {
        "providers": [{"name": "lab", "institution": "A Lab"}],
        "resources": [
            {
                "name": "sim-gpu",
                "provider": "lab",
                "site": "here",
                "kind": "gpu",
                "accelerator": "NVIDIA A100 80GB",
                "count_per_node": 3,
                "cpu_per_node": 8,
                "memory_per_node": "64Gi",
                "extended_resource": "nvidia.com/gpu",
                "image": "ghcr.io/afhub/notebook-gpu:1",
                "allowed_groups": ["atlas"],
            }
        ],
    }
).resources["sim-gpu"]


@pytest.fixture
def devices(stores):
    stores.groups.create("atlas")
    for user in ("ann", "bob", "cat", *(f"u{i}" for i in range(8))):
        stores.groups.add_member("atlas", user)
    return DeviceStore(stores.db)


def admit(stores, user, server_name="", gpus=1):
    charge = Charge("server", cpu_cores=1, gpus=gpus, resource="sim-gpu")
    return stores.ledger.admit(user=user, charge=charge, server_name=server_name).interval_id


def test_slots_are_exclusive_and_released(stores, devices):
    assert devices.allocate(GPU, 3, 2, user="ann", interval_id=admit(stores, "ann")) == [0, 1]
    with pytest.raises(DevicesBusy) as info:
        devices.allocate(GPU, 3, 2, user="bob", interval_id=admit(stores, "bob"))
    assert info.value.status == 409
    assert "2 of 3 in use" in str(info.value)
    assert devices.allocate(GPU, 3, 1, user="bob", server_name="x") == [2]
    assert devices.counts() == {"sim-gpu": 3}
    assert [a.slot for a in devices.held_by(user="ann")] == [0, 1]
    assert devices.release(user="ann") == 2
    assert devices.allocate(GPU, 3, 2, user="cat") == [0, 1]
    # the same server spawned again gives back what it held first
    assert devices.allocate(GPU, 3, 1, user="cat") == [0]
    assert sorted(a.slot for a in devices.allocations("sim-gpu")) == [0, 2]
    assert devices.allocate(GPU, 3, 0, user="cat") == []
    assert devices.held_by(user="cat") == []


def test_stale_allocations_are_reclaimed(stores, devices):
    failed = admit(stores, "ann")
    devices.allocate(GPU, 3, 3, user="ann", interval_id=failed)
    with pytest.raises(DevicesBusy):
        devices.allocate(GPU, 3, 1, user="bob", interval_id=admit(stores, "bob"))
    # the spawn failed (or the server died and its interval was closed): slots come back
    stores.ledger.fail(failed, "spawn failed")
    assert devices.allocate(GPU, 3, 1, user="cat", interval_id=admit(stores, "cat")) == [0]
    assert {a.user for a in devices.allocations()} == {"cat"}
    # after a hub crash: servers the hub no longer sees are reclaimed
    devices.allocate(GPU, 3, 1, user="u0", server_name="gpu")
    assert devices.reclaim(alive=[("cat", "")]) == 1
    assert [(a.user, a.slot) for a in devices.allocations()] == [("cat", 0)]
    stores.ledger.close(devices.allocations()[0].interval_id)
    assert devices.reclaim() == 1
    assert devices.allocations() == []


def test_racing_allocations_never_share_a_slot(stores, devices):
    users = [f"u{i}" for i in range(8)]
    intervals = {u: admit(stores, u) for u in users}
    results: dict[str, object] = {}
    barrier = threading.Barrier(len(users))

    def spawn(user):
        barrier.wait()
        try:
            results[user] = devices.allocate(GPU, 3, 1, user=user, interval_id=intervals[user])
        except DevicesBusy as exc:
            results[user] = exc

    threads = [threading.Thread(target=spawn, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = {u: r for u, r in results.items() if isinstance(r, list)}
    assert len(results) == 8
    assert len(won) == 3
    assert sorted(s for r in won.values() for s in r) == [0, 1, 2]
    assert sorted(a.slot for a in devices.allocations("sim-gpu")) == [0, 1, 2]
