"""The cluster options form: the group to charge (the user's groups, default first) and
per-worker resources, bounded by the policy and the default group's ``max_dask_cores``;
its handler checks the chosen group's bounds (a cluster whose options break them is
refused with HTTP 422 and a message, and never created)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dask_gateway_server.options import Bool as BoolField
from dask_gateway_server.options import Float as FloatField
from dask_gateway_server.options import Integer as IntegerField
from dask_gateway_server.options import Options, Select

from afhub.dask.bounds import OptionsRefused
from afhub.dask.gpus import NO_GPU_RESOURCE, GpuOffer
from afhub.dask.policy import (
    ClusterRequest,
    DaskPolicy,
    max_worker_cores_for,
    max_workers_for,
    validate_request,
)
from afhub.quotas.decisions import NodeState
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores

NO_GROUP = "(no group)"


def user_groups(stores: Stores, user: str) -> tuple[list[str], str | None]:
    """``user``'s groups, their default group first, and the default group (``None``:
    none, or not one of theirs)."""
    try:
        info = stores.groups.user(user)
    except StoreError:
        return [], None
    groups = sorted(info.roles)
    default = info.default_group if info.default_group in groups else None
    if default:
        groups.remove(default)
        groups.insert(0, default)
    return groups, default


def options_handler(
    chains: Mapping[str, Sequence[NodeState]],
    offers: Mapping[str, GpuOffer],
    policy: DaskPolicy,
):
    """The options' handler: the chosen options checked against the chosen group's bounds,
    as ``ClusterConfig`` overrides; :class:`OptionsRefused` saying why otherwise."""

    def handler(options, user):
        if options.charge_to == NO_GROUP or options.charge_to not in chains:
            raise OptionsRefused(
                f"{user.name} is not a member of any group; ask a group admin for an invitation"
            )
        request = ClusterRequest(
            group=options.charge_to,
            worker_cores=int(options.worker_cores),
            worker_memory_gib=float(options.worker_memory),
            max_workers=int(options.max_workers),
            worker_gpus=int(options.worker_gpus),
            gpu_resource=str(options.gpu_resource),
        )
        validate_request(request, chains[request.group], policy, offers[request.group])
        return request.config(policy)

    return handler


def _gpu_fields(offer: GpuOffer) -> list:
    return [
        IntegerField(
            "worker_gpus",
            default=0,
            # bounds checked by the handler (registry and the group's max_gpus)
            label=(
                "GPUs per worker (0 or 1: one GPU of the chosen GPU resource)"
                if offer.max_worker_gpus
                else f"GPUs per worker (0 only: {offer.reason})"
            ),
        ),
        Select(
            "gpu_resource",
            offer.choices,
            default=offer.default_resource,
            label="GPU resource of GPU workers"
            + ("" if offer.resources else f" ({NO_GPU_RESOURCE}: none is open to you)"),
        ),
    ]


def _worker_fields(policy: DaskPolicy, chain: Sequence[NodeState]) -> list:
    """Cores, memory and the number of workers; their bounds are checked by the handler,
    whose message names the group."""
    cores_bound = max_worker_cores_for(chain, policy)
    workers_bound = max(1, max_workers_for(chain, policy, policy.default_worker_cores))
    return [
        IntegerField(
            "worker_cores",
            default=min(policy.default_worker_cores, cores_bound),
            label=f"Worker cores (your group allows up to {cores_bound})",
        ),
        FloatField(
            "worker_memory",
            default=policy.default_worker_memory_gib,
            label=f"Worker memory (GiB, up to {policy.max_worker_memory_gib:g})",
        ),
        IntegerField(
            "max_workers",
            default=policy.max_workers,
            label=(
                f"Maximum workers of this cluster (up to {policy.max_workers}; your "
                f"group's Dask cores hold {workers_bound} such workers at once)"
            ),
        ),
    ]


def cluster_options(
    groups: Sequence[str],
    default: str | None,
    chains: Mapping[str, Sequence[NodeState]],
    offers: Mapping[str, GpuOffer],
    policy: DaskPolicy,
) -> Options:
    """The options form for a user in ``groups`` (default first) whose group chains and
    GPU offers are ``chains`` and ``offers``."""
    default_offer = offers.get(default or (groups[0] if groups else ""), GpuOffer())
    return Options(
        Select(
            "charge_to",
            list(groups) or [NO_GROUP],
            default=default or (groups[0] if groups else NO_GROUP),
            label="Group to charge",
        ),
        *_worker_fields(policy, chains.get(default, [])),
        *_gpu_fields(default_offer),
        BoolField(
            "outlive_server",
            default=False,
            label=(
                "Keep running after the server that started it stops (until idle or "
                "shut down; it is charged meanwhile)"
            ),
        ),
        handler=options_handler(chains, offers, policy),
    )
