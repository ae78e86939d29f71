"""Cluster options, their bounds, and the charges of Dask clusters.

A Dask cluster charges the group chosen in its options (``charge_to``, default the
user's default group) one ledger interval of kind ``dask`` per process: the scheduler
(``scheduler_cores`` cores) and each worker (``worker_cores`` cores, ``worker_gpus``
GPUs). The concurrency limit ``max_dask_cores`` of every group on the chain caps the sum
of those intervals across all clusters of the group's subtree; core-hours and GPU-hours
accrue into the group's budgets like a server's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from afhub.dask.bounds import OptionsRefused, lowest_limit
from afhub.dask.gpus import GpuOffer, validate_gpus
from afhub.quotas.decisions import Decision, NodeState, decide
from afhub.quotas.limits import Charge, ChargeKind, LimitName

GIB = 1024**3
#: the policy's bounds an operator sets (``GatewaySettings``), by their one name
POLICY_SETTINGS = (
    "max_worker_cores",
    "default_worker_cores",
    "max_worker_memory_gib",
    "default_worker_memory_gib",
    "max_workers",
    "scheduler_cores",
)


@dataclass(frozen=True)
class DaskPolicy:
    """Facility-wide bounds of cluster options (per worker and per cluster); the group's
    quota narrows them further."""

    max_worker_cores: int = 4
    default_worker_cores: int = 1
    max_worker_memory_gib: float = 16.0
    default_worker_memory_gib: float = 2.0
    max_workers: int = 100
    scheduler_cores: int = 1
    scheduler_memory_gib: float = 2.0

    @classmethod
    def of(cls, settings: object) -> DaskPolicy:
        """The policy of settings that carry the :data:`POLICY_SETTINGS` under these names
        (the gateway's settings, the gateway backend's traits)."""
        return cls(**{name: getattr(settings, name) for name in POLICY_SETTINGS})

    def __post_init__(self) -> None:
        if not 1 <= self.default_worker_cores <= self.max_worker_cores:
            raise ValueError("default_worker_cores must be between 1 and max_worker_cores")
        if not 0 < self.default_worker_memory_gib <= self.max_worker_memory_gib:
            raise ValueError("default_worker_memory_gib must be in (0, max_worker_memory_gib]")
        if self.max_workers < 1 or self.scheduler_cores < 1:
            raise ValueError("max_workers and scheduler_cores must be at least 1")


@dataclass(frozen=True)
class ClusterRequest:
    """The options of one cluster, as the user chose them (already type-checked)."""

    group: str
    worker_cores: int
    worker_memory_gib: float
    max_workers: int
    worker_gpus: int = 0
    #: the registry's GPU resource of GPU workers ('' for CPU workers)
    gpu_resource: str = ""

    def config(self, policy: DaskPolicy) -> dict[str, object]:
        """``ClusterConfig`` overrides for these options."""
        return {
            "worker_cores": self.worker_cores,
            "worker_threads": self.worker_cores,
            "worker_memory": int(self.worker_memory_gib * GIB),
            "scheduler_cores": policy.scheduler_cores,
            "scheduler_memory": int(policy.scheduler_memory_gib * GIB),
            "cluster_max_workers": self.max_workers,
        }


def core_ceiling(chain: Sequence[NodeState]) -> tuple[float, str] | None:
    """The lowest ``max_dask_cores`` on the chain and the group that sets it (``None``:
    no group on the chain limits Dask cores)."""
    found = lowest_limit(chain, LimitName.MAX_DASK_CORES)
    return None if found is None else (float(found[0]), found[1])


def _fmt(value: float) -> str:
    return f"{value:g}"


def validate_request(
    request: ClusterRequest,
    chain: Sequence[NodeState],
    policy: DaskPolicy,
    gpus: GpuOffer | None = None,
) -> str:
    """Refuse options that can never fit the group's quota or the policy.

    What is free *now* is not checked here (the ledger's admission does that for the
    scheduler and each worker); this refuses a cluster whose scheduler plus one worker
    could never fit under the group's ``max_dask_cores``. GPU workers are checked against
    ``gpus`` (:func:`afhub.dask.gpus.gpu_offer`; ``None``: none offered). Returns the GPU
    resource of GPU workers ('' for CPU workers).
    """
    ceiling = core_ceiling(chain)
    if ceiling is not None:
        limit, where = ceiling
        room = limit - policy.scheduler_cores
        if request.worker_cores > room:
            raise OptionsRefused(
                f"worker_cores={request.worker_cores} cannot fit: group {where!r} allows "
                f"{_fmt(limit)} concurrent Dask cores and the scheduler takes "
                f"{policy.scheduler_cores}; choose worker_cores <= {_fmt(max(room, 0))}"
                + ("" if room >= 1 else f" (no worker fits; ask an admin of {where!r})")
            )
    if not 1 <= request.worker_cores <= policy.max_worker_cores:
        raise OptionsRefused(
            f"worker_cores={request.worker_cores} is outside 1..{policy.max_worker_cores} "
            "(the facility's bound per worker)"
        )
    if not 0 < request.worker_memory_gib <= policy.max_worker_memory_gib:
        raise OptionsRefused(
            f"worker_memory={_fmt(request.worker_memory_gib)} GiB is outside "
            f"(0, {_fmt(policy.max_worker_memory_gib)}] GiB (the facility's bound per worker)"
        )
    if not 1 <= request.max_workers <= policy.max_workers:
        raise OptionsRefused(
            f"max_workers={request.max_workers} is outside 1..{policy.max_workers} "
            "(the facility's bound per cluster)"
        )
    return validate_gpus(request.worker_gpus, request.gpu_resource, gpus)


def max_worker_cores_for(chain: Sequence[NodeState], policy: DaskPolicy) -> int:
    """The largest ``worker_cores`` the chain's ceiling allows (at least 1, for the form)."""
    ceiling = core_ceiling(chain)
    bound = policy.max_worker_cores
    if ceiling is not None:
        bound = min(bound, math.floor(ceiling[0] - policy.scheduler_cores))
    return max(1, bound)


def max_workers_for(chain: Sequence[NodeState], policy: DaskPolicy, worker_cores: int) -> int:
    """The most workers of ``worker_cores`` the chain's ceiling could ever hold at once."""
    ceiling = core_ceiling(chain)
    if ceiling is None:
        return policy.max_workers
    room = ceiling[0] - policy.scheduler_cores
    return max(0, min(policy.max_workers, math.floor(room / worker_cores)))


def scheduler_charge(policy: DaskPolicy) -> Charge:
    return Charge(
        ChargeKind.DASK, cpu_cores=float(policy.scheduler_cores), resource="dask-scheduler"
    )


def worker_charge(worker_cores: int, worker_gpus: int = 0, gpu_resource: str = "") -> Charge:
    """One worker's charge; a GPU worker's ``resource`` is its registry GPU resource."""
    resource = gpu_resource if worker_gpus and gpu_resource else "dask-worker"
    return Charge(
        ChargeKind.DASK, cpu_cores=float(worker_cores), gpus=worker_gpus, resource=resource
    )


def _times(charge: Charge, n: int) -> Charge:
    return Charge(charge.kind, charge.cpu_cores * n, charge.gpus * n, charge.resource)


def workers_that_fit(
    chain: Sequence[NodeState], per_worker: Charge, wanted: int, now: datetime
) -> tuple[int, Decision]:
    """How many of ``wanted`` more workers fit the chain now, and the decision for one
    more than that (its message says why no more fit; allowed when all ``wanted`` fit).

    Holdings and budgets only grow with the number of workers, so the largest count that
    fits is found by bisection over :func:`afhub.quotas.decisions.decide`.
    """
    if wanted <= 0:
        return 0, Decision()
    if decide(chain, _times(per_worker, wanted), now).allowed:
        return wanted, Decision()
    lo, hi = 0, wanted  # lo fits (0 always does), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if decide(chain, _times(per_worker, mid), now).allowed:
            lo = mid
        else:
            hi = mid
    return lo, decide(chain, _times(per_worker, lo + 1), now)


def scale_notice(requested: int, granted: int, why: Decision | str) -> str:
    """What the user reads when a scale request is capped (``why``: the quota's
    decision, or the reason as text, e.g. no free GPU)."""
    reason = why if isinstance(why, str) else why.message
    return (
        f"Scale request of {requested} workers exceeds the Dask limits of your group; "
        f"the cluster runs {granted} workers instead: {reason}"
    )
