"""Pure parts of local mode: local GPUs, slots, the server's device environment, what a
quota leaves, and the profiles a local user is offered."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from afhub.devices import (
    EVERYONE,
    LOCAL_CPU,
    LOCAL_GPU,
    LocalGpu,
    busy_message,
    capacity,
    choose_slots,
    compose,
    device_environment,
    local_provider,
    local_resources,
    parse_nvidia_smi_list,
    real_device_ids,
)
from afhub.profiles.build import build_profile_list
from afhub.quotas.decisions import NodeState, decide
from afhub.quotas.limits import Charge, Holdings, Limits, Usage
from afhub.quotas.remaining import ResourceKind, describe, remaining, units_left
from afhub.registry.model import Registry, parse_registry

NVIDIA_SMI = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-5a2b6c1e-0d4f-4a55-9c7e-1f2e3d4c5b6a)
  MIG 1g.10gb     Device  0: (UUID: MIG-0f7e2d1c-aaaa-bbbb-cccc-111122223333)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-6b3c7d2f-1e5a-4b66-8d8f-2a3b4c5d6e7f)
No devices were found
"""

REGISTRY = parse_registry(
    {
        "providers": [{"name": "lab", "institution": "A Lab"}],
        "resources": [
            {
                "name": "sim-gpu",
                "provider": "lab",
                "site": "here",
                "kind": "gpu",
                "accelerator": "NVIDIA A100 80GB",
                "count_per_node": 2,
                "node_count": 2,
                "cpu_per_node": 8,
                "memory_per_node": "64Gi",
                "extended_resource": "nvidia.com/gpu",
                "image": "ghcr.io/afhub/notebook-gpu:1",
                "allowed_groups": ["atlas/higgs"],
            },
            {
                "name": "sim-fpga",
                "provider": "lab",
                "site": "here",
                "kind": "fpga",
                "accelerator": "AMD Alveo U250",
                "count_per_node": 1,
                "cpu_per_node": 4,
                "memory_per_node": "32Gi",
                "extended_resource": "xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1",
                "image": "ghcr.io/afhub/notebook-fpga:1",
                "allowed_groups": ["atlas/higgs"],
            },
            {
                "name": "cpu-big",
                "provider": "lab",
                "site": "here",
                "kind": "cpu",
                "cpu_per_node": 32,
                "memory_per_node": "128Gi",
                "image": "ghcr.io/afhub/notebook-cpu:1",
                "allowed_groups": ["cms"],
            },
        ],
    }
)
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_nvidia_smi_list_whole_gpus_only():
    gpus = parse_nvidia_smi_list(NVIDIA_SMI)
    assert [(g.index, g.model) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-80GB"),
        (1, "NVIDIA A100-SXM4-80GB"),
    ]
    assert gpus[1].uuid.startswith("GPU-6b3c")
    assert parse_nvidia_smi_list("") == []
    assert real_device_ids(gpus) == ["0", "1"]


def test_slots_lowest_free_and_none_when_short():
    assert capacity(REGISTRY.resources["sim-gpu"]) == 4
    assert capacity(REGISTRY.resources["cpu-big"]) == 0
    assert choose_slots(4, {0, 2}, 2) == [1, 3]
    assert choose_slots(4, {0, 2}, 3) is None
    assert choose_slots(4, set(), 0) == []
    with pytest.raises(ValueError, match="count must not be negative"):
        choose_slots(4, set(), -1)
    message = busy_message(REGISTRY.resources["sim-fpga"], 1, 1, 1)
    assert "no free FPGA" in message
    assert "'sim-fpga'" in message
    assert "1 of 1" in message


def test_device_environment_real_simulated_and_none():
    gpu = REGISTRY.resources["sim-gpu"]
    simulated = device_environment(gpu, [1, 3])
    assert simulated == {
        "AFHUB_DEVICES": "1,3",
        "AFHUB_DEVICES_SIMULATED": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    real = device_environment(gpu, [1, 3], ["0", "1", "2", "GPU-x"])
    assert real["CUDA_VISIBLE_DEVICES"] == "1,GPU-x"
    assert real["AFHUB_DEVICES_SIMULATED"] == "0"
    cpu = device_environment(REGISTRY.resources["cpu-big"], [])
    assert cpu["CUDA_VISIBLE_DEVICES"] == ""
    assert cpu["AFHUB_DEVICES"] == ""
    with pytest.raises(ValueError, match="mapped to 1 real"):
        device_environment(gpu, [0], ["0"])


def test_local_resources_and_composition():
    gpus = [LocalGpu(0, "NVIDIA H100", "GPU-1")]
    local = local_resources(16, 64 * 2**30, gpus)
    assert local[LOCAL_CPU].cpu_per_node == 16
    assert local[LOCAL_CPU].memory_per_node == "65536Mi"
    assert local[LOCAL_GPU].count_per_node == 1
    assert local[LOCAL_GPU].accelerator == "NVIDIA H100"
    assert LOCAL_GPU not in local_resources(2, 2**30)
    # a member of atlas/higgs: local-cpu first (no registered CPU for them), then the rest
    offered = compose(REGISTRY.resources, {"atlas/higgs"}, local)
    assert list(offered) == [LOCAL_CPU, "sim-gpu", "sim-fpga", "cpu-big", LOCAL_GPU]
    registry = Registry({**REGISTRY.providers, "local": local_provider()}, offered)
    slugs = [p["slug"] for p in build_profile_list(registry, {"atlas/higgs", EVERYONE})]
    assert slugs == [LOCAL_CPU, "sim-gpu", "sim-fpga", LOCAL_GPU]
    slugs = [p["slug"] for p in build_profile_list(registry, {"outsider", EVERYONE})]
    assert slugs == [LOCAL_CPU, LOCAL_GPU]
    # a user with a registered CPU resource does not get local-cpu
    assert LOCAL_CPU not in compose(REGISTRY.resources, {"cms"}, local)


def node(path, limits=Limits(), usage=Usage()):
    return NodeState(path, limits, usage)


def test_remaining_is_the_smallest_room_on_the_chain():
    chain = [
        node("atlas", Limits(max_gpus=4), Usage(holdings=Holdings(servers=3, gpus=3))),
        node("atlas/higgs", Limits(max_gpus=2, max_servers=5), Usage(holdings=Holdings(1, 1))),
    ]
    room = remaining(chain)
    assert (room.group, room.servers, room.gpus) == ("atlas/higgs", 4, 1)
    units = units_left(room, [ResourceKind("sim-gpu", True), ResourceKind("cpu", False)])
    assert units == {"sim-gpu": 1}
    assert "1 accelerator" in describe(room)
    assert "atlas/higgs" in describe(room)
    # what remaining says agrees with the admission decision at the edge
    assert decide(chain, Charge("server", 1, 1), NOW).allowed
    assert not decide(chain, Charge("server", 1, 2), NOW).allowed


def test_spent_budgets_and_full_servers_leave_nothing():
    spent_gpu = remaining([node("g", Limits(gpu_hours=10), Usage(gpu_hours=10))])
    units = units_left(spent_gpu, [ResourceKind("gpu", True), ResourceKind("cpu", False)])
    assert units == {"gpu": 0}
    assert "no GPU-hours" in describe(spent_gpu)
    full = remaining([node("g", Limits(max_servers=1), Usage(holdings=Holdings(servers=1)))])
    assert units_left(full, [ResourceKind("gpu", True), ResourceKind("cpu", False)]) == {
        "gpu": 0,
        "cpu": 0,
    }
    free = remaining([node("g")])
    assert units_left(free, [ResourceKind("gpu", True)]) == {}
    assert describe(free) == "Quota of g: no limit applies."
    with pytest.raises(ValueError, match="the chain must contain at least the charged group"):
        remaining([])


def test_quota_trims_choices_and_is_described():
    room = remaining([node("atlas/higgs", Limits(max_gpus=1))])
    units = units_left(
        room, [ResourceKind(r.name, r.is_accelerated) for r in REGISTRY.resources.values()]
    )
    profiles = {p["slug"]: p for p in build_profile_list(REGISTRY, {"atlas/higgs"}, units)}
    assert list(profiles["sim-gpu"]["profile_options"]["accelerators"]["choices"]) == ["1"]
    assert "Your quota leaves 1 GPU." in profiles["sim-gpu"]["description"]
    none_left = units_left(
        remaining([node("atlas/higgs", Limits(max_gpus=0))]),
        [ResourceKind("sim-gpu", True)],
    )
    assert "sim-gpu" not in {
        p["slug"] for p in build_profile_list(REGISTRY, {"atlas/higgs"}, none_left)
    }
