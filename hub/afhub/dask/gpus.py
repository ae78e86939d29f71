"""GPU workers: who may ask for them, their bounds, and how many the devices hold.

A GPU worker holds one GPU: one ledger interval of kind ``dask`` with ``gpus=1`` and
``resource`` the registry's GPU resource (so ``max_gpus`` and ``gpu_hours`` of the group
chain count it with servers, other clusters and fits), and one exclusive device slot of
that resource (:class:`afhub.stores.devices.DeviceStore`, shared with servers).

Pure core: the caller passes the registry, the user's groups, the charged group's chain
and the slots in use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from afhub.dask.bounds import OptionsRefused, lowest_limit
from afhub.devices import capacity
from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import LimitName
from afhub.registry.model import Registry, Resource, expand_groups

#: the ``gpu_resource`` choice shown when the user may use no GPU resource
NO_GPU_RESOURCE = "(none)"
#: a GPU worker holds exactly this many GPUs (whole devices, one per worker)
GPUS_PER_WORKER = 1


def gpu_resources(registry: Registry, user_groups: Iterable[str]) -> list[Resource]:
    """The registry's ``gpu`` resources that one of ``user_groups`` (or an ancestor) may
    use, in registry order; resources without any slot are left out."""
    groups = expand_groups(user_groups)
    return [
        r
        for r in registry.resources.values()
        if r.kind == "gpu" and capacity(r) > 0 and not groups.isdisjoint(r.allowed_groups)
    ]


def gpu_ceiling(chain: Sequence[NodeState]) -> tuple[int, str] | None:
    """The lowest ``max_gpus`` on the chain and the group that sets it (``None``: no
    group on the chain limits concurrent GPUs)."""
    found = lowest_limit(chain, LimitName.MAX_GPUS)
    return None if found is None else (int(found[0]), found[1])


@dataclass(frozen=True)
class GpuOffer:
    """What the cluster options offer a user charging one group: the GPU resources they
    may choose (default first), the most ``worker_gpus`` (0 or 1) and, when 0, why."""

    resources: tuple[str, ...] = ()
    max_worker_gpus: int = 0
    reason: str = "no GPU resource of the registry is open to your groups"
    #: resources open to the user that the charged group may not pay for, and why
    #: (:meth:`afhub.registry.model.Resource.payer_refusal`)
    unpayable: tuple[tuple[str, str], ...] = ()

    @property
    def default_resource(self) -> str:
        return self.resources[0] if self.resources else NO_GPU_RESOURCE

    @property
    def choices(self) -> list[str]:
        """The ``gpu_resource`` select's choices (never empty); resources the group may
        not pay for are listed too, so that choosing one is refused with the reason."""
        unpayable = [name for name, _ in self.unpayable if name not in self.resources]
        return (list(self.resources) or [NO_GPU_RESOURCE]) + unpayable


def gpu_offer(
    registry: Registry, user_groups: Iterable[str], chain: Sequence[NodeState]
) -> GpuOffer:
    """GPU workers for a user in ``user_groups`` charging the group whose chain is
    ``chain`` (root first, the charged group last): offered when the registry opens a GPU
    resource to one of the user's groups that the charged group may pay for (access and
    payment agree: :meth:`~afhub.registry.model.Resource.payable_by`) and no group on the
    chain sets ``max_gpus`` below one GPU."""
    payer = chain[-1].path if chain else None
    open_to_user = gpu_resources(registry, user_groups)
    unpayable = tuple(
        (r.name, r.payer_refusal(payer) or "")
        for r in open_to_user
        if payer is not None and not r.payable_by(payer)
    )
    refused = {name for name, _ in unpayable}
    names = tuple(r.name for r in open_to_user if r.name not in refused)
    if not names:
        if unpayable:
            return GpuOffer((), 0, unpayable[0][1], unpayable)
        return GpuOffer()
    ceiling = gpu_ceiling(chain)
    if ceiling is not None and ceiling[0] < GPUS_PER_WORKER:
        return GpuOffer(
            names,
            0,
            f"group {ceiling[1]!r} allows {ceiling[0]} concurrent GPUs (max_gpus); ask an "
            f"admin of {ceiling[1]!r}",
            unpayable,
        )
    return GpuOffer(names, GPUS_PER_WORKER, "", unpayable)


def validate_gpus(worker_gpus: int, gpu_resource: str, offer: GpuOffer | None) -> str:
    """Check the GPU options against the offer; returns the GPU resource a GPU worker
    uses ('' for CPU workers). Raises :class:`OptionsRefused` saying why and what to do."""
    if isinstance(worker_gpus, bool) or not isinstance(worker_gpus, int) or worker_gpus < 0:
        raise OptionsRefused(f"worker_gpus={worker_gpus!r} must be 0 or 1")
    if worker_gpus == 0:
        return ""
    refusals = dict(offer.unpayable) if offer is not None else {}
    if gpu_resource in refusals:
        raise OptionsRefused(f"worker_gpus={worker_gpus} refused: {refusals[gpu_resource]}")
    if offer is not None and not offer.resources and offer.unpayable:
        raise OptionsRefused(f"worker_gpus={worker_gpus} refused: {offer.reason}")
    if offer is None or not offer.resources:
        raise OptionsRefused(
            f"worker_gpus={worker_gpus} refused: GPU workers need a GPU resource of the "
            "registry open to one of your groups, and none is; ask a facility admin"
        )
    if worker_gpus > offer.max_worker_gpus:
        if offer.max_worker_gpus == 0:
            raise OptionsRefused(f"worker_gpus={worker_gpus} refused: {offer.reason}")
        raise OptionsRefused(
            f"worker_gpus={worker_gpus} refused: a worker holds at most "
            f"{offer.max_worker_gpus} GPU; scale to more workers instead"
        )
    resource = offer.default_resource if gpu_resource in ("", NO_GPU_RESOURCE) else gpu_resource
    if resource not in offer.resources:
        raise OptionsRefused(
            f"gpu_resource={gpu_resource!r} is not a GPU resource open to your groups; "
            f"choose one of {', '.join(offer.resources)}"
        )
    return resource


def free_slots(total: int, held: int) -> int:
    """Slots of a resource nobody holds (never negative)."""
    return max(0, total - held)


def cap_by_slots(fit: int, free: int) -> int:
    """GPU workers that can start: what the quota lets fit, at most one per free slot."""
    return max(0, min(fit, free))


def slots_notice(resource: Resource, total: int, held: int) -> str:
    """Why no more GPU workers start, for the user (scale warnings, refusals)."""
    accelerator = f" ({resource.accelerator})" if resource.accelerator else ""
    return (
        f"no free GPU on resource {resource.name!r}{accelerator}: {held} of {total} in use "
        "by servers and GPU workers; more GPU workers start when one is released (scale "
        "again later, or use cluster.adapt)"
    )
