"""GPU workers, pure part: who is offered them (registry groups, inherited down the tree),
the group chain's ``max_gpus``, validation of ``worker_gpus``/``gpu_resource``, charges,
and capping by quota and by free device slots."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from afhub.dask.gpus import (
    NO_GPU_RESOURCE,
    GpuOffer,
    cap_by_slots,
    free_slots,
    gpu_ceiling,
    gpu_offer,
    gpu_resources,
    slots_notice,
    validate_gpus,
)
from afhub.dask.policy import (
    ClusterRequest,
    DaskPolicy,
    OptionsRefused,
    scale_notice,
    validate_request,
    worker_charge,
    workers_that_fit,
)
from afhub.quotas.decisions import NodeState, decide
from afhub.quotas.limits import ChargeKind, Holdings, Limits, Usage
from afhub.registry.model import parse_registry

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
POLICY = DaskPolicy()


def resource(name, kind="gpu", groups=("atlas/higgs",), count=2, nodes=1):
    entry = {
        "name": name,
        "provider": "lab",
        "site": "here",
        "kind": kind,
        "cpu_per_node": 8,
        "memory_per_node": "64Gi",
        "image": "ghcr.io/afhub/notebook:1",
        "node_count": nodes,
        "allowed_groups": list(groups),
    }
    if kind != "cpu":
        entry.update(
            count_per_node=count,
            accelerator="NVIDIA A100",
            extended_resource="nvidia.com/gpu" if kind == "gpu" else "xilinx.com/fpga-u250",
        )
    return entry


REGISTRY = parse_registry(
    {
        "providers": [{"name": "lab", "institution": "A Lab"}],
        "resources": [
            resource("cpu-big", kind="cpu", groups=("atlas",)),
            resource("fpga-u250", kind="fpga", groups=("atlas",)),
            resource("gpu-a100", groups=("atlas/higgs",), count=2, nodes=2),
            resource("gpu-cms", groups=("cms",)),
            resource("gpu-t4", groups=("atlas/higgs/students",), count=1),
        ],
    }
)


def node(path, max_gpus=None, gpus_held=0, gpu_hours=None, used=0.0):
    return NodeState(
        path,
        Limits(max_gpus=max_gpus, gpu_hours=gpu_hours),
        Usage(gpu_hours=used, holdings=Holdings(gpus=gpus_held)),
    )


def chain(students=None, higgs=None, held=0, gpu_hours=None, used=0.0):
    return [
        node("atlas", gpus_held=held),
        node("atlas/higgs", higgs, gpus_held=held),
        node("atlas/higgs/students", students, held, gpu_hours, used),
    ]


def test_gpu_resources_follow_the_registry_groups_inherited_down_the_tree():
    names = [r.name for r in gpu_resources(REGISTRY, {"atlas/higgs/students"})]
    # the ancestor's resource first (registry order), then the students' own; no CPU, no
    # FPGA, nothing of another experiment
    assert names == ["gpu-a100", "gpu-t4"]
    assert [r.name for r in gpu_resources(REGISTRY, {"atlas/higgs"})] == ["gpu-a100"]
    assert gpu_resources(REGISTRY, {"atlas", "atlas/top"}) == []
    assert [r.name for r in gpu_resources(REGISTRY, {"cms/ecal"})] == ["gpu-cms"]


def test_offer_per_group_and_quota():
    offer = gpu_offer(REGISTRY, {"atlas/higgs/students"}, chain())
    assert offer == GpuOffer(("gpu-a100", "gpu-t4"), 1, "")
    assert offer.default_resource == "gpu-a100"
    assert offer.choices == ["gpu-a100", "gpu-t4"]
    # no GPU resource for the user's groups: nothing offered, the select shows "(none)"
    none = gpu_offer(REGISTRY, {"atlas/top"}, chain())
    assert none.max_worker_gpus == 0
    assert none.choices == [NO_GPU_RESOURCE]
    assert "registry" in none.reason
    # max_gpus 0 somewhere on the chain: the group that sets it is named
    zero = gpu_offer(REGISTRY, {"atlas/higgs/students"}, chain(students=4, higgs=0))
    assert zero.max_worker_gpus == 0
    assert "'atlas/higgs'" in zero.reason
    assert gpu_ceiling(chain(students=4, higgs=2)) == (2, "atlas/higgs")
    assert gpu_ceiling(chain()) is None


def test_gpu_options_are_validated_against_the_offer():
    offer = gpu_offer(REGISTRY, {"atlas/higgs/students"}, chain(students=1))
    assert validate_gpus(0, NO_GPU_RESOURCE, offer) == ""
    assert validate_gpus(1, NO_GPU_RESOURCE, offer) == "gpu-a100"  # the default
    assert validate_gpus(1, "gpu-t4", offer) == "gpu-t4"
    with pytest.raises(OptionsRefused, match=r"gpu_resource='gpu-cms'.*gpu-a100, gpu-t4"):
        validate_gpus(1, "gpu-cms", offer)
    with pytest.raises(OptionsRefused, match="at most 1 GPU"):
        validate_gpus(2, "gpu-a100", offer)
    with pytest.raises(OptionsRefused, match="must be 0 or 1"):
        validate_gpus(-1, "gpu-a100", offer)
    with pytest.raises(OptionsRefused, match="none is"):
        validate_gpus(1, NO_GPU_RESOURCE, gpu_offer(REGISTRY, {"atlas/top"}, chain()))
    with pytest.raises(OptionsRefused, match=r"max_gpus.*'atlas/higgs'"):
        validate_gpus(1, "gpu-a100", gpu_offer(REGISTRY, {"atlas/higgs"}, chain(higgs=0)))


def test_validate_request_checks_gpus_with_the_rest():
    offer = gpu_offer(REGISTRY, {"atlas/higgs/students"}, chain())
    base = {"group": "atlas/higgs/students", "worker_cores": 1, "worker_memory_gib": 2.0}
    request = ClusterRequest(**base, max_workers=4, worker_gpus=1, gpu_resource="gpu-t4")
    assert validate_request(request, chain(), POLICY, offer) == "gpu-t4"
    cpu = ClusterRequest(**base, max_workers=4)
    assert validate_request(cpu, chain(), POLICY) == ""
    with pytest.raises(OptionsRefused, match="GPU"):
        validate_request(request, chain(), POLICY)  # no offer: refused
    # the config a GPU cluster runs with is the CPU one: GPUs live in the options
    assert request.config(POLICY) == cpu.config(POLICY)


def test_a_gpu_worker_charges_one_gpu_of_its_resource():
    charge = worker_charge(2, 1, "gpu-a100")
    assert (charge.kind, charge.cpu_cores, charge.gpus, charge.resource) == (
        ChargeKind.DASK,
        2.0,
        1,
        "gpu-a100",
    )
    assert worker_charge(2).resource == "dask-worker"
    assert worker_charge(2).gpus == 0


def test_quota_caps_gpu_workers_across_servers_clusters_and_fits():
    # max_gpus 3 on the students, 1 GPU already held elsewhere: 2 more GPU workers fit
    fit, why = workers_that_fit(chain(students=3, held=1), worker_charge(1, 1, "gpu-a100"), 5, NOW)
    assert fit == 2
    assert "atlas/higgs/students" in why.message
    assert "concurrent GPUs" in why.message
    # a spent GPU-hour budget admits no GPU worker, but CPU workers still fit
    spent = chain(gpu_hours=10, used=10.0)
    assert workers_that_fit(spent, worker_charge(1, 1, "gpu-a100"), 3, NOW)[0] == 0
    assert workers_that_fit(spent, worker_charge(1), 3, NOW)[0] == 3
    assert not decide(spent, worker_charge(1, 1, "gpu-a100"), NOW).allowed


def test_free_slots_cap_gpu_workers_with_a_message():
    gpu = REGISTRY.resources["gpu-a100"]  # 2 nodes x 2 GPUs
    assert free_slots(4, 3) == 1
    assert free_slots(4, 6) == 0
    assert cap_by_slots(3, 1) == 1
    assert cap_by_slots(3, 5) == 3
    assert cap_by_slots(2, 0) == 0
    message = slots_notice(gpu, 4, 4)
    assert "no free GPU on resource 'gpu-a100' (NVIDIA A100): 4 of 4 in use" in message
    notice = scale_notice(3, 1, message)
    assert notice.startswith("Scale request of 3 workers")
    assert "no free GPU" in notice
