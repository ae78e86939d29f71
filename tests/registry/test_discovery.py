"""Discovery: resources proposed from a recorded ``kubectl get nodes -o json``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from afhub.registry.discovery import propose_resources
from afhub.registry.model import parse_registry

NODES = json.loads((Path(__file__).parent / "nodes.json").read_text())
PROVIDER = {"name": "uchicago", "institution": "University of Chicago"}


def proposals(nodes=NODES) -> dict[str, dict]:
    return {p["name"]: p for p in propose_resources(nodes, "uchicago", "UChicago AF")}


def test_pools_from_the_recorded_cluster():
    found = proposals()
    assert set(found) == {
        "cpu-c6i-16xlarge",
        "gpu-nvidia-a100-sxm4-80gb-x4",
        "mig-1g-10gb-nvidia-a100-sxm4-80gb",
        "gpu-nvidia-l40s-x2",
        "fpga-xilinx-u250-gen3x16-xdma-shell-4-1-0",
    }
    a100 = found["gpu-nvidia-a100-sxm4-80gb-x4"]
    assert (a100["kind"], a100["count_per_node"], a100["node_count"]) == ("gpu", 4, 2)
    assert a100["extended_resource"] == "nvidia.com/gpu"
    assert a100["node_selector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "nvidia.com/gpu.count": "4",
    }
    assert a100["cpu_per_node"] == 127.5
    assert a100["memory_per_node"] == "1005Gi"
    assert a100["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    mig = found["mig-1g-10gb-nvidia-a100-sxm4-80gb"]
    assert (mig["extended_resource"], mig["count_per_node"]) == ("nvidia.com/mig-1g.10gb", 7)
    assert mig["accelerator"] == "NVIDIA A100 SXM4 80GB MIG 1g.10gb"
    fpga = found["fpga-xilinx-u250-gen3x16-xdma-shell-4-1-0"]
    assert fpga["kind"] == "fpga"
    assert fpga["count_per_node"] == 2
    assert fpga["extended_resource"] == "xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1-0"
    cpu = found["cpu-c6i-16xlarge"]
    # cpu-03 is cordoned and cp-1 is the control plane: neither is proposed
    assert cpu["node_count"] == 2
    assert "extended_resource" not in cpu
    assert cpu["node_selector"] == {"node.kubernetes.io/instance-type": "c6i.16xlarge"}
    assert all(p["allowed_groups"] == [] for p in found.values())


def test_proposals_are_valid_registry_entries():
    registry = parse_registry(
        {"providers": [PROVIDER], "resources": propose_resources(NODES, "uchicago", "UC")}
    )
    assert {r.kind for r in registry.resources.values()} == {"cpu", "gpu", "fpga"}
    assert registry.allowed({"atlas"}) == []  # nobody until the operator says who


def test_text_input_and_bare_item_list():
    assert proposals(json.dumps(NODES)) == proposals(NODES["items"]) == proposals()


def test_nodes_without_usable_accelerators_fall_back_to_cpu():
    nodes = copy.deepcopy(NODES)
    for node in nodes["items"]:
        for key in ("capacity", "allocatable"):
            caps = node["status"][key]
            for name in list(caps):
                if "/" in name:
                    caps[name] = "0"
    assert {p["kind"] for p in proposals(nodes).values()} == {"cpu"}


@pytest.mark.parametrize(
    "nodes",
    [
        {"items": []},
        [],
        {"items": [{"metadata": {}, "spec": {}}]},
        [{"metadata": {}, "status": {"capacity": {"cpu": "many", "memory": "1Gi"}}}],
    ],
)
def test_empty_or_unreadable_lists_propose_nothing(nodes):
    assert proposals(nodes) == {}
