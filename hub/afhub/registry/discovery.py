"""Propose registry resources from a Kubernetes node list (``kubectl get nodes -o json``).

Nodes are grouped into pools of identical nodes:

* MIG slices (NVIDIA "mixed" strategy): one pool per ``nvidia.com/mig-<N>g.<M>gb``
  capacity, named after the GPU product label;
* whole NVIDIA GPUs: GPU feature discovery's ``nvidia.com/gpu.product`` and
  ``nvidia.com/gpu.count`` labels with ``nvidia.com/gpu`` capacity;
* AMD GPUs (``amd.com/gpu`` capacity) and FPGAs (``xilinx.com/fpga-*`` capacity);
* CPU-only nodes by instance type (``node.kubernetes.io/instance-type``).

Control-plane and cordoned nodes, and nodes without readable CPU and memory, are skipped.
A pool's CPU and memory are the smallest allocatable among its nodes; tolerations are
proposed for the taints all its nodes share.
The proposals are registry entries (dicts, the YAML file's shape) that pass
:func:`afhub.registry.model.parse_registry` once a provider is declared; they carry no
``allowed_groups`` (nobody may use them until an operator says who) and a placeholder
image per kind. Pure core: reads data, contacts no cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from afhub.registry.model import EXTENDED_RESOURCE_RE, LABEL_VALUE_RE, NAME_RE, parse_quantity

PRODUCT_LABEL = "nvidia.com/gpu.product"
COUNT_LABEL = "nvidia.com/gpu.count"
INSTANCE_LABEL = "node.kubernetes.io/instance-type"
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
MIG_RE = re.compile(r"nvidia\.com/mig-([0-9]+g\.[0-9]+gb)")
PLACEHOLDER_IMAGES = {
    "cpu": "quay.io/jupyter/scipy-notebook:latest",
    "gpu": "quay.io/jupyter/pytorch-notebook:cuda12-latest",
    "fpga": "quay.io/jupyter/scipy-notebook:latest",
}


def _cpu(value: str) -> float:
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _gib(value: str) -> str:
    return f"{parse_quantity(value) // 2**30}Gi"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return slug or "pool"


def _positive(capacity: Mapping[str, str], key: str) -> int:
    try:
        return int(capacity.get(key, "0"))
    except ValueError:
        return 0


Pool = tuple[tuple, dict]


def _pool(key: tuple, name: str, kind: str, **entry: Any) -> Pool:
    """A pool's grouping key and its partial registry entry."""
    return key, {"name": name, "kind": kind, **entry}


def _extended_pools(capacity: Mapping[str, Any], product: str | None) -> list[Pool]:
    """MIG slices (``nvidia.com/mig-*``) and Xilinx FPGAs (``xilinx.com/fpga-*``)."""
    pools = []
    for key in sorted(capacity):
        match = MIG_RE.fullmatch(key)
        count = _positive(capacity, key)
        if match and count:
            profile = match.group(1)
            gpu_name = (product or "NVIDIA GPU").replace("-", " ")
            pools.append(
                _pool(
                    ("gpu", key, product, count),
                    f"mig-{profile}-{product or 'gpu'}",
                    "gpu",
                    accelerator=f"{gpu_name} MIG {profile}",
                    count_per_node=count,
                    extended_resource=key,
                    node_selector={PRODUCT_LABEL: product} if product else {},
                )
            )
        elif key.startswith("xilinx.com/fpga-") and count and EXTENDED_RESOURCE_RE.fullmatch(key):
            pools.append(
                _pool(
                    ("fpga", key, count),
                    f"fpga-{key.split('/fpga-', 1)[1]}",
                    "fpga",
                    accelerator=key.split("/", 1)[1],
                    count_per_node=count,
                    extended_resource=key,
                    node_selector={},
                )
            )
    return pools


def _nvidia_pool(
    capacity: Mapping[str, Any], labels: Mapping[str, str], product: str | None
) -> list[Pool]:
    """Whole NVIDIA GPUs of a labelled product (GPU feature discovery's labels)."""
    gpus = _positive(capacity, "nvidia.com/gpu")
    if not (gpus and product):
        return []
    count = int(labels.get(COUNT_LABEL, gpus)) if labels.get(COUNT_LABEL, "").isdigit() else gpus
    count = min(count, gpus)
    return [
        _pool(
            ("gpu", "nvidia.com/gpu", product, count),
            f"gpu-{product}-x{count}",
            "gpu",
            accelerator=product.replace("-", " "),
            count_per_node=count,
            extended_resource="nvidia.com/gpu",
            node_selector={PRODUCT_LABEL: product, COUNT_LABEL: str(count)},
        )
    ]


def _amd_pool(capacity: Mapping[str, Any], labels: Mapping[str, str]) -> list[Pool]:
    amd = _positive(capacity, "amd.com/gpu")
    if not amd:
        return []
    name = labels.get("amd.com/gpu.product-name", "AMD GPU")
    return [
        _pool(
            ("gpu", "amd.com/gpu", name, amd),
            f"amd-{name}-x{amd}",
            "gpu",
            accelerator=name,
            count_per_node=amd,
            extended_resource="amd.com/gpu",
            node_selector={},
        )
    ]


def _cpu_pool(capacity: Mapping[str, Any], labels: Mapping[str, str]) -> Pool:
    """A node without accelerators, grouped by instance type (else by cores and memory)."""
    instance = labels.get(INSTANCE_LABEL)
    cpu = capacity.get("cpu", "0")
    return _pool(
        ("cpu", instance or f"{cpu}-{capacity.get('memory', '')}"),
        f"cpu-{instance or cpu + 'cores'}",
        "cpu",
        node_selector={INSTANCE_LABEL: instance} if instance else {},
    )


def _pools_of(node: Mapping[str, Any]) -> list[Pool]:
    """(pool key, partial entry) for each pool this node belongs to."""
    labels = node.get("metadata", {}).get("labels", {}) or {}
    status = node.get("status", {})
    capacity = status.get("allocatable") or status.get("capacity") or {}
    product = labels.get(PRODUCT_LABEL)
    pools = _extended_pools(capacity, product)
    pools += _nvidia_pool(capacity, labels, product)
    pools += _amd_pool(capacity, labels)
    return pools or [_cpu_pool(capacity, labels)]


def _shared_tolerations(nodes: list[Mapping[str, Any]]) -> list[dict]:
    def taints(node):
        return {
            (t.get("key"), t.get("value"), t.get("effect"))
            for t in node.get("spec", {}).get("taints", []) or []
            if t.get("effect") in ("NoSchedule", "NoExecute")
        }

    common = set.intersection(*(taints(n) for n in nodes)) if nodes else set()
    out = []
    for key, value, effect in sorted(common, key=lambda t: tuple(map(str, t))):
        if value is not None and LABEL_VALUE_RE.fullmatch(value):
            out.append({"key": key, "operator": "Equal", "value": value, "effect": effect})
        else:
            out.append({"key": key, "operator": "Exists", "effect": effect})
    return out


def _usable(node: Mapping[str, Any]) -> bool:
    labels = node.get("metadata", {}).get("labels", {}) or {}
    if any(label in labels for label in CONTROL_PLANE_LABELS):
        return False
    if (node.get("spec") or {}).get("unschedulable", False):
        return False
    status = node.get("status") or {}
    sizes = status.get("allocatable") or status.get("capacity") or {}
    try:  # a node whose size cannot be read cannot be proposed
        return _cpu(sizes["cpu"]) > 0 and parse_quantity(sizes["memory"]) > 0
    except (KeyError, ValueError, TypeError):
        return False


def propose_resources(
    nodes: str | Mapping[str, Any] | list, provider: str, site: str
) -> list[dict[str, Any]]:
    """Registry entries proposed for the pools in ``nodes`` (a node List or its items)."""
    if isinstance(nodes, str):
        nodes = json.loads(nodes)
    items = nodes.get("items", []) if isinstance(nodes, Mapping) else list(nodes)
    groups: dict[tuple, tuple[dict, list]] = {}
    for node in items:
        if not isinstance(node, Mapping) or not _usable(node):
            continue
        for key, entry in _pools_of(node):
            groups.setdefault(key, (entry, []))[1].append(node)
    proposals: list[dict[str, Any]] = []
    used: set[str] = set()
    for entry, members in groups.values():
        allocs = [m["status"].get("allocatable") or m["status"]["capacity"] for m in members]
        cpu = min(_cpu(a.get("cpu", "0")) for a in allocs)
        memory = min(parse_quantity(a.get("memory", "0")) for a in allocs)
        name = _slug(entry["name"])
        base, n = name, 2
        while name in used or not NAME_RE.fullmatch(name):
            name = f"{base[:60].rstrip('-')}-{n}"
            n += 1
        used.add(name)
        proposal = {
            "name": name,
            "provider": provider,
            "site": site,
            "kind": entry["kind"],
            "node_count": len(members),
            "cpu_per_node": int(cpu) if cpu == int(cpu) else round(cpu, 3),
            "memory_per_node": _gib(f"{memory}"),
            "node_selector": entry["node_selector"],
            "tolerations": _shared_tolerations(members),
            "image": PLACEHOLDER_IMAGES[entry["kind"]],
            "allowed_groups": [],
        }
        if entry["kind"] != "cpu":
            proposal.update(
                accelerator=entry["accelerator"],
                count_per_node=entry["count_per_node"],
                extended_resource=entry["extended_resource"],
            )
        proposals.append(proposal)
    return proposals
