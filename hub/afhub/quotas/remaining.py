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

from afhub.quotas.decisions import NodeState, format_amount
from afhub.quotas.limits import LimitName


@dataclass(frozen=True)
class Remaining:
    """Room left on a chain: ``None`` where no node sets a limit.

    ``servers``/``gpus`` are what the tightest node leaves, ``servers_limit``/``gpus_limit``
    that node's limit; ``*_hours_left`` what the tightest budget leaves this period."""

    group: str
    servers: int | None = None
    gpus: int | None = None
    gpu_budget_left: bool = True
    cpu_budget_left: bool = True
    servers_limit: int | None = None
    gpus_limit: int | None = None
    gpu_hours_left: float | None = None
    cpu_core_hours_left: float | None = None


def _tightest(chain: Sequence[NodeState], name: LimitName) -> tuple[float, float] | None:
    """(room, limit) of the node that leaves the least room for ``name``; None: no limit."""
    best: tuple[float, float] | None = None
    for node in chain:
        limit = node.limits.get(name)
        if limit is None:
            continue
        left = max(0.0, limit - node.usage.get(name))
        if best is None or left < best[0]:
            best = (left, float(limit))
    return best


def _count(chain: Sequence[NodeState], name: LimitName) -> tuple[int | None, int | None]:
    found = _tightest(chain, name)
    return (None, None) if found is None else (math.floor(found[0]), int(found[1]))


def _hours(chain: Sequence[NodeState], name: LimitName) -> float | None:
    found = _tightest(chain, name)
    return None if found is None else found[0]


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
    servers, servers_limit = _count(chain, LimitName.MAX_SERVERS)
    gpus, gpus_limit = _count(chain, LimitName.MAX_GPUS)
    return Remaining(
        group=chain[-1].path,
        servers=servers,
        gpus=gpus,
        gpu_budget_left=_budget_left(chain, LimitName.GPU_HOURS),
        cpu_budget_left=_budget_left(chain, LimitName.CPU_CORE_HOURS),
        servers_limit=servers_limit,
        gpus_limit=gpus_limit,
        gpu_hours_left=_hours(chain, LimitName.GPU_HOURS),
        cpu_core_hours_left=_hours(chain, LimitName.CPU_CORE_HOURS),
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


def _plural(n: int, one: str) -> str:
    return f"{n} {one}{'' if n == 1 else 's'}"


def _budget_part(left: float | None, spent: bool, label: str) -> str | None:
    if spent:
        return f"no {label}"
    return None if left is None else f"{format_amount(left)} {label}"


def describe(room: Remaining) -> str:
    """One line for people: what the quota of ``room.group`` leaves now, of each limit."""
    parts = []
    if room.servers is not None:
        parts.append(f"{_plural(room.servers, 'more server')} (of {room.servers_limit})")
    if room.gpus is not None:
        parts.append(f"{_plural(room.gpus, 'accelerator')} (of {room.gpus_limit})")
    for part in (
        _budget_part(room.gpu_hours_left, not room.gpu_budget_left, "GPU-hours"),
        _budget_part(room.cpu_core_hours_left, not room.cpu_budget_left, "CPU core-hours"),
    ):
        if part is not None:
            parts.append(part)
    if not parts:
        return f"Quota of {room.group}: no limit applies."
    return f"Quota of {room.group} leaves {', '.join(parts)}."


def full_label(room: Remaining) -> str | None:
    """Why no server at all may be charged to ``room.group`` now, in a few words (for a
    group's entry in the spawn form), or None when one may."""
    if room.servers == 0:
        if room.servers_limit == 0:
            return "no servers allowed"
        return f"full: {room.servers_limit} of {room.servers_limit} servers"
    if not room.cpu_budget_left:
        return "full: CPU core-hours used up"
    return None


def as_mapping(room: Remaining) -> Mapping[str, object]:
    return {
        "group": room.group,
        "servers": room.servers,
        "gpus": room.gpus,
        "gpu_budget_left": room.gpu_budget_left,
        "cpu_budget_left": room.cpu_budget_left,
    }
