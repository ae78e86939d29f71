"""Dask on the facility, pure part: cluster options per group, their bounds from the
group's quota, what a scheduler and a worker charge, and how many workers fit.

Part of the pure core: imports neither the database, JupyterHub nor dask-gateway. The
gateway backend (:mod:`afhub.services.gateway`) feeds it the charged group's chain from
the ledger and acts on its answers.
"""

from afhub.dask.bounds import OptionsRefused
from afhub.dask.gpus import (
    NO_GPU_RESOURCE,
    GpuOffer,
    cap_by_slots,
    gpu_ceiling,
    gpu_offer,
    gpu_resources,
    slots_notice,
    validate_gpus,
)
from afhub.dask.policy import (
    ClusterRequest,
    DaskPolicy,
    core_ceiling,
    scale_notice,
    scheduler_charge,
    validate_request,
    worker_charge,
    workers_that_fit,
)

__all__ = [
    "NO_GPU_RESOURCE",
    "ClusterRequest",
    "DaskPolicy",
    "GpuOffer",
    "OptionsRefused",
    "cap_by_slots",
    "core_ceiling",
    "gpu_ceiling",
    "gpu_offer",
    "gpu_resources",
    "scale_notice",
    "scheduler_charge",
    "slots_notice",
    "validate_gpus",
    "validate_request",
    "worker_charge",
    "workers_that_fit",
]
