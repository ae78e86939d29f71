"""What a user's quota still allows, for display in the spawn form.

Pure core. :func:`remaining` reads the charged group's chain (root first, limits and
rolled-up usage, as :func:`afhub.quotas.decisions.decide` reads it) and says how many
more servers and accelerators the chain allows right now and whether the GPU-hour and
core-hour budgets still have room. :func:`units_left` turns that into the units a
resource's profile may offer (accelerators for a GPU or FPGA resource, ``None`` for "not
limited"), the ``remaining`` argument of :func:`afhub.profiles.build.build_profile_list`.

Accelerators are charged as GPUs: a GPU, a MIG slice and an FPGA each count one towards
``max_gpus`` and accrue one GPU-hour per hour (see docs/resources.md).

The ledger's admission stays the authority: this is what the form shows, computed for
one charge group at one instant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import LimitName


@dataclass(frozen=True)
class Remaining:
    """Room left on a chain: ``None`` where no node sets a limit."""

    group: str
    servers: int | None = None
    gpus: int | None = None
    gpu_budget_left: bool = True
    cpu_budget_left: bool = True


def _room(chain: Sequence[NodeState], name: LimitName) -> int | None:
    room: int | None = None
    for node in chain:
        limit = node.limits.get(name)
        if limit is None:
            continue
        left = max(0, math.floor(limit - node.usage.get(name)))
        room = left if room is None else min(room, left)
    return room


def _budget_left(chain: Sequence[NodeState], name: LimitName) -> bool:
    return all(
        (limit := node.limits.get(name)) is None or node.usage.get(name) < limit for node in chain
    )


def remaining(chain: Sequence[NodeState]) -> Remaining:
    """Room on ``chain`` (root first, ending with the charged group): the smallest room
    of any node for concurrent servers and GPUs, and whether every node's GPU-hour and
    core-hour budget still has room (a budget at its limit refuses new charges)."""
    if not chain:
        raise ValueError("the chain must contain at least the charged group")
    return Remaining(
        group=chain[-1].path,
        servers=_room(chain, LimitName.MAX_SERVERS),
        gpus=_room(chain, LimitName.MAX_GPUS),
        gpu_budget_left=_budget_left(chain, LimitName.GPU_HOURS),
        cpu_budget_left=_budget_left(chain, LimitName.CPU_CORE_HOURS),
    )


@dataclass(frozen=True)
class ResourceKind:
    """The two facts about a resource that decide what a quota leaves of it."""

    name: str
    accelerated: bool


def units_left(room: Remaining, resources: Iterable[ResourceKind]) -> dict[str, float]:
    """Units each resource may still offer: 0 when no server may start (servers or a
    budget the server would consume exhausted), the accelerators left for accelerated
    resources, nothing (not limited) otherwise."""
    out: dict[str, float] = {}
    for resource in resources:
        if room.servers == 0 or not room.cpu_budget_left:
            out[resource.name] = 0
        elif resource.accelerated:
            if not room.gpu_budget_left:
                out[resource.name] = 0
            elif room.gpus is not None:
                out[resource.name] = room.gpus
    return out


def describe(room: Remaining) -> str:
    """One line for people: what the quota of ``room.group`` leaves now."""
    parts = []
    if room.servers is not None:
        parts.append(f"{room.servers} more server{'s' if room.servers != 1 else ''}")
    if room.gpus is not None:
        parts.append(f"{room.gpus} accelerator{'s' if room.gpus != 1 else ''}")
    if not room.gpu_budget_left:
        parts.append("no GPU-hours")
    if not room.cpu_budget_left:
        parts.append("no CPU core-hours")
    if not parts:
        return f"Quota of {room.group}: no limit applies."
    return f"Quota of {room.group} leaves {', '.join(parts)}."


def as_mapping(room: Remaining) -> Mapping[str, object]:
    return {
        "group": room.group,
        "servers": room.servers,
        "gpus": room.gpus,
        "gpu_budget_left": room.gpu_budget_left,
        "cpu_budget_left": room.cpu_budget_left,
    }
