"""What bounds cluster options: the refusal, and the lowest limit on a group chain (shared
by the policy's cores and the GPU offer)."""

from __future__ import annotations

from collections.abc import Sequence

from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import LimitName


class OptionsRefused(ValueError):
    """Cluster options that the group's limits or the facility's policy do not allow; the
    message says which option, the bound, and where the bound comes from."""


def lowest_limit(chain: Sequence[NodeState], name: LimitName) -> tuple[float, str] | None:
    """The lowest limit ``name`` on the chain and the group that sets it (``None``: no
    group on the chain sets it)."""
    best: tuple[float, str] | None = None
    for node in chain:
        value = node.limits.get(name)
        if value is not None and (best is None or value < best[0]):
            best = (value, node.path)
    return best
