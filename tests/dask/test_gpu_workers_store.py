"""The gateway's worker admission, device allocation and release
(:class:`afhub.services.gateway.workers.WorkerCharging`) against the facility database,
on SQLite always and on PostgreSQL when AFHUB_TEST_POSTGRES_URL is set. These are the
functions the gateway backend calls for every worker; no gateway runs here."""

from __future__ import annotations

import asyncio

import pytest
from dask_gateway_server.models import User

from afhub.dask.bounds import OptionsRefused
from afhub.dask.gpus import NO_GPU_RESOURCE, validate_gpus
from afhub.dask.policy import DaskPolicy, scheduler_charge
from afhub.devices import LOCAL_GPU, LocalGpu, local_resources
from afhub.quotas.limits import Charge
from afhub.services.gateway.backend import AfhubLocalBackend
from afhub.services.gateway.workers import WorkerCharging, WorkerRefused, WorkerSpec
from afhub.stores.devices import DeviceStore

GROUP = "atlas/higgs/students"
GPU = WorkerSpec(worker_cores=1, worker_gpus=1, gpu_resource="gpu-sim")
CPU = WorkerSpec(worker_cores=1)


@pytest.fixture
def charging(stores):
    for path in ["atlas", "atlas/higgs", GROUP, "atlas/top"]:
        stores.groups.create(path)
    stores.groups.add_member(GROUP, "sam")
    stores.groups.add_member(GROUP, "sue")
    stores.groups.add_member("atlas/top", "tom")
    stores.registry.add_provider({"name": "lab", "institution": "A Lab"})
    stores.registry.add_resource(
        {
            "name": "gpu-sim",
            "provider": "lab",
            "site": "here",
            "kind": "gpu",
            "accelerator": "NVIDIA A100",
            "count_per_node": 2,
            "cpu_per_node": 8,
            "memory_per_node": "64Gi",
            "extended_resource": "nvidia.com/gpu",
            "image": "ghcr.io/afhub/notebook-gpu:1",
            "allowed_groups": ["atlas/higgs"],
        }
    )
    return WorkerCharging(stores)


def test_offer_comes_from_the_registry_and_the_group_quota(charging, stores):
    offer = charging.offer("sam", stores.ledger.status(GROUP))
    assert offer.resources == ("gpu-sim",)
    assert offer.max_worker_gpus == 1
    assert validate_gpus(1, "gpu-sim", offer) == "gpu-sim"
    # tom's group may not use the GPU resource
    tom = charging.offer("tom", stores.ledger.status("atlas/top"))
    with pytest.raises(OptionsRefused, match="none is"):
        validate_gpus(1, "gpu-sim", tom)
    # max_gpus 0 on an ancestor: no GPU workers for the students
    stores.quotas.set("atlas/higgs", {"max_gpus": 0})
    refused = charging.offer("sam", stores.ledger.status(GROUP))
    with pytest.raises(OptionsRefused, match=r"'atlas/higgs'.*max_gpus"):
        validate_gpus(1, "gpu-sim", refused)


def test_gpu_workers_hold_a_slot_and_release_it(charging, stores):
    devices = DeviceStore(stores.db)
    first = charging.admit(user="sam", group=GROUP, key="c1/w1", spec=GPU)
    charging.admit(user="sam", group=GROUP, key="c1/w2", spec=GPU)
    info = stores.ledger.get(first)
    assert (info.kind, info.gpus, info.resource, info.server_name) == (
        "dask",
        1,
        "gpu-sim",
        "c1/w1",
    )
    assert [(a.server_name, a.slot) for a in devices.allocations("gpu-sim")] == [
        ("c1/w1", 0),
        ("c1/w2", 1),
    ]
    env = charging.environment(user="sam", key="c1/w2")
    assert env == {
        "AFHUB_DEVICES": "1",
        "AFHUB_DEVICES_SIMULATED": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    mapped = WorkerCharging(stores, real_devices={"gpu-sim": ["3", "7"]})
    real = mapped.environment(user="sam", key="c1/w2")
    assert real["CUDA_VISIBLE_DEVICES"] == "7"
    assert real["AFHUB_DEVICES_SIMULATED"] == "0"
    # a CPU worker is charged no GPU and sees none
    cpu = charging.admit(user="sam", group=GROUP, key="c1/w3", spec=CPU)
    assert stores.ledger.get(cpu).gpus == 0
    assert charging.environment(user="sam", key="c1/w3") == {
        "AFHUB_DEVICES": "",
        "AFHUB_DEVICES_SIMULATED": "0",
        "CUDA_VISIBLE_DEVICES": "",
    }
    # both slots held: a third GPU worker is capped and refused with the reason, and is
    # charged nothing
    fit, reason = charging.cap(GPU, 3)
    assert fit == 0
    assert "no free GPU on resource 'gpu-sim' (NVIDIA A100): 2 of 2" in reason
    assert charging.cap(CPU, 3) == (3, "")
    with pytest.raises(WorkerRefused, match="2 of 2 in use"):
        charging.admit(user="sue", group=GROUP, key="c2/w1", spec=GPU)
    assert stores.ledger.find_open(kind="dask", user="sue", server_name="c2/w1") is None
    # a worker that stops frees its slot and closes its interval
    charging.release(user="sam", key="c1/w1", note="worker stopped")
    assert stores.ledger.get(first).state in ("failed", "closed")
    assert charging.cap(GPU, 3)[0] == 1
    charging.admit(user="sue", group=GROUP, key="c2/w1", spec=GPU)
    assert devices.held_by(user="sue", server_name="c2/w1")[0].slot == 0
    # a stopped cluster releases every process
    charging.release_cluster(user="sam", cluster_name="c1", note="cluster stopped")
    assert [a.server_name for a in devices.allocations()] == ["c2/w1"]
    assert stores.ledger.find_open(kind="dask", user="sam", server_name="c1/w3") is None


def test_max_gpus_counts_servers_and_gpu_workers_together(charging, stores):
    stores.quotas.set(GROUP, {"max_gpus": 2})
    # a GPU server of sue's (another kind of charge, same group) holds one GPU
    stores.ledger.admit(
        user="sue",
        group=GROUP,
        charge=Charge("server", cpu_cores=2, gpus=1, resource="gpu-sim"),
    )
    stores.ledger.admit(user="sam", group=GROUP, charge=scheduler_charge(DaskPolicy()))
    charging.admit(user="sam", group=GROUP, key="c1/w1", spec=GPU)
    with pytest.raises(WorkerRefused, match="concurrent GPUs"):
        charging.admit(user="sam", group=GROUP, key="c1/w2", spec=GPU)
    # refused by the quota: no slot taken, nothing open
    assert [a.server_name for a in DeviceStore(stores.db).allocations()] == ["c1/w1"]
    assert stores.ledger.find_open(kind="dask", user="sam", server_name="c1/w2") is None


def test_a_dead_worker_slot_is_reclaimed_from_the_ledger(charging, stores):
    interval = charging.admit(user="sam", group=GROUP, key="c1/w1", spec=GPU)
    charging.admit(user="sam", group=GROUP, key="c1/w2", spec=GPU)
    # the gateway crashed: the ledger's reconciliation closed the worker's interval
    stores.ledger.close(interval, None, "gateway gone")
    assert charging.cap(GPU, 2)[0] == 1  # its stale slot is free again
    charging.admit(user="sue", group=GROUP, key="c2/w1", spec=GPU)
    assert DeviceStore(stores.db).held_by(user="sue", server_name="c2/w1")[0].slot == 0


def test_the_gateway_options_form_offers_and_refuses_gpu_workers(charging, stores):
    """The backend's real options (dask-gateway's ``Options``) built from the database."""
    backend = AfhubLocalBackend()
    backend.stores, backend.workers = stores, charging

    def options_for(name):
        return asyncio.run(backend.get_cluster_options(User(name)))

    sam = options_for("sam")
    fields = {f["field"]: f for f in sam.get_specification()}
    assert fields["worker_gpus"]["default"] == 0
    assert fields["gpu_resource"]["spec"]["options"] == ["gpu-sim"]
    parsed = sam.parse_options({"worker_gpus": 1})
    assert (parsed["worker_gpus"], parsed["gpu_resource"]) == (1, "gpu-sim")
    config = sam.get_configuration(parsed, User("sam"))
    assert config["worker_cores"] == 1  # GPUs are in the options, not the process config
    # no GPU resource for tom: 0 is the only choice, and 1 is refused with the reason
    tom = options_for("tom")
    fields = {f["field"]: f for f in tom.get_specification()}
    assert "0 only" in fields["worker_gpus"]["label"]
    assert fields["gpu_resource"]["spec"]["options"] == [NO_GPU_RESOURCE]
    tom.get_configuration(tom.parse_options({}), User("tom"))  # CPU clusters as before
    with pytest.raises(OptionsRefused, match="none is"):
        tom.get_configuration(tom.parse_options({"worker_gpus": 1}), User("tom"))
    # max_gpus 0 on the students' ancestor: refused naming it
    stores.quotas.set("atlas/higgs", {"max_gpus": 0})
    sam = options_for("sam")
    with pytest.raises(OptionsRefused, match="'atlas/higgs'"):
        sam.get_configuration(sam.parse_options({"worker_gpus": 1}), User("sam"))


@pytest.mark.usefixtures("charging")
def test_this_machines_gpus_are_offered_to_everyone_with_real_devices(stores):
    """Local mode: ``local-gpu`` (from ``nvidia-smi -L``) is open to every user, its
    slots are shared with servers, and its workers see the real CUDA device."""
    gpu = LocalGpu(0, "NVIDIA H100 80GB HBM3", "GPU-0b1c")
    local = local_resources(16, 64 * 2**30, [gpu])
    machine = WorkerCharging(stores, local, {LOCAL_GPU: ["0"]})
    offer = machine.offer("tom", stores.ledger.status("atlas/top"))
    assert offer.resources == (LOCAL_GPU,)
    assert offer.max_worker_gpus == 1
    assert machine.offer("sam", stores.ledger.status(GROUP)).resources == ("gpu-sim", LOCAL_GPU)
    spec = WorkerSpec(worker_cores=1, worker_gpus=1, gpu_resource=LOCAL_GPU)
    machine.admit(user="tom", group="atlas/top", key="c9/w1", spec=spec)
    assert machine.environment(user="tom", key="c9/w1") == {
        "AFHUB_DEVICES": "0",
        "AFHUB_DEVICES_SIMULATED": "0",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    with pytest.raises(WorkerRefused, match=r"'local-gpu'.*1 of 1 in use"):
        machine.admit(user="tom", group="atlas/top", key="c9/w2", spec=spec)
