"""Admission, devices and release of Dask workers, against the facility database.

The gateway backend calls these (in a thread) and keeps only the gateway-side state; they
take no gateway object, so store-level tests call them directly. A worker is keyed in the
ledger and the device store by ``CLUSTER/WORKER`` (its ``server_name``).

* :meth:`WorkerCharging.admit` opens the worker's ``dask`` ledger interval (refused by the
  group chain's limits, atomically with every other admission) and, for a GPU worker,
  takes one exclusive device slot of its GPU resource; when no slot is free the interval
  is closed again (charged nothing) and :class:`WorkerRefused` says why.
* :meth:`WorkerCharging.release` closes the interval and frees the slot (a worker that
  stopped or died); :meth:`WorkerCharging.release_cluster` does it for every process of a
  cluster.
* :meth:`WorkerCharging.environment` is what the worker process is told about its devices.

In local mode this machine's own GPUs (``nvidia-smi -L``) are the built-in ``local-gpu``
resource open to everyone, exactly as for servers
(:func:`afhub.devices.probe.machine_gpus`), so servers and GPU workers share its slots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from afhub.dask.gpus import GpuOffer, cap_by_slots, free_slots, gpu_offer, slots_notice
from afhub.dask.policy import worker_charge
from afhub.devices import (
    EVERYONE,
    capacity,
    device_environment,
    local_provider,
)
from afhub.quotas.decisions import NodeState
from afhub.registry.model import Registry, Resource
from afhub.stores.devices import DevicesBusy
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores
from afhub.stores.ledger import QuotaExceeded

KIND = "dask"


class WorkerRefused(Exception):
    """A worker that cannot start now; ``str()`` is the user-visible reason."""


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker of a cluster holds (from the cluster's options)."""

    worker_cores: int
    worker_gpus: int = 0
    gpu_resource: str = ""

    @classmethod
    def from_options(cls, options: Mapping, config: Mapping) -> WorkerSpec:
        gpus = int(options.get("worker_gpus") or 0)
        return cls(
            worker_cores=int(config["worker_cores"]),
            worker_gpus=gpus,
            gpu_resource=str(options.get("gpu_resource") or "") if gpus else "",
        )


class WorkerCharging:
    """Ledger intervals and device slots of Dask workers."""

    def __init__(
        self,
        stores: Stores,
        local: Mapping[str, Resource] | None = None,
        real_devices: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``local``: this machine's GPU resources (open to everyone, after the
        registry's); ``real_devices``: ``{resource: [CUDA id per slot]}`` of resources
        backed by this machine's GPUs (others are simulated)."""
        self.stores = stores
        self.devices = stores.devices
        self.local = {name: r for name, r in (local or {}).items() if r.kind == "gpu"}
        self.real_devices = {name: list(ids) for name, ids in (real_devices or {}).items()}

    # -- options -----------------------------------------------------------------------------

    def registry(self) -> Registry:
        """The registry plus this machine's GPUs (when not registered under that name)."""
        registry = self.stores.registry.load()
        extra = {n: r for n, r in self.local.items() if n not in registry.resources}
        if not extra:
            return registry
        providers = dict(registry.providers)
        providers.setdefault(local_provider().name, local_provider())
        return Registry(providers=providers, resources={**registry.resources, **extra})

    def offer(self, user: str, chain: Sequence[NodeState]) -> GpuOffer:
        """GPU workers offered to ``user`` charging the group of ``chain``."""
        groups = set(self.stores.groups.roles_of(user)) | {EVERYONE}
        return gpu_offer(self.registry(), groups, chain)

    def resource(self, name: str) -> Resource:
        resource = self.registry().resources.get(name)
        if resource is None or resource.kind != "gpu":
            raise WorkerRefused(
                f"GPU resource {name!r} is no longer in the registry; start a new cluster "
                "and choose another gpu_resource"
            )
        return resource

    # -- devices -----------------------------------------------------------------------------

    def free(self, resource: Resource) -> tuple[int, int, int]:
        """``(free, total, held)`` slots of ``resource`` now (stale rows reclaimed first)."""
        self.devices.reclaim()
        total = capacity(resource)
        held = len(self.devices.allocations(resource.name))
        return free_slots(total, held), total, held

    def cap(self, spec: WorkerSpec, fit: int) -> tuple[int, str]:
        """Of ``fit`` workers the quota allows, how many the free slots hold, and why
        not more ('' when none are capped). CPU workers are not capped."""
        if not spec.worker_gpus:
            return fit, ""
        try:
            resource = self.resource(spec.gpu_resource)
        except WorkerRefused as exc:
            return 0, str(exc)
        free, total, held = self.free(resource)
        capped = cap_by_slots(fit, free)
        return capped, (slots_notice(resource, total, held) if capped < fit else "")

    # -- life cycle --------------------------------------------------------------------------

    def admit(self, *, user: str, group: str, key: str, spec: WorkerSpec) -> int:
        """Open the worker's ledger interval and hold its device slot; returns the
        interval's id. Raises :class:`WorkerRefused` (nothing held afterwards)."""
        charge = worker_charge(spec.worker_cores, spec.worker_gpus, spec.gpu_resource)
        resource = self.resource(spec.gpu_resource) if spec.worker_gpus else None
        if resource is not None and not resource.payable_by(group):
            # the registry may have changed since the cluster's options were checked
            raise WorkerRefused(resource.payer_refusal(group) or "")
        try:
            admission = self.stores.ledger.admit(
                user=user, charge=charge, group=group, server_name=key
            )
        except (QuotaExceeded, StoreError) as exc:
            raise WorkerRefused(str(exc)) from None
        if resource is None:
            return admission.interval_id
        try:
            self.devices.allocate(
                resource,
                capacity(resource),
                spec.worker_gpus,
                user=user,
                server_name=key,
                interval_id=admission.interval_id,
            )
        except DevicesBusy:
            self.stores.ledger.close(admission.interval_id, None, "no free GPU")
            _, total, held = self.free(resource)
            raise WorkerRefused(slots_notice(resource, total, held)) from None
        return admission.interval_id

    def release(self, *, user: str, key: str, note: str) -> None:
        """The worker stopped or died: close its interval, free its slot (idempotent)."""
        interval = self.stores.ledger.find_open(kind=KIND, user=user, server_name=key)
        if interval is not None:
            self.stores.ledger.close(interval.id, None, note)
        self.devices.release(user=user, server_name=key)

    def release_cluster(self, *, user: str, cluster_name: str, note: str) -> None:
        """Close every open interval of the cluster's processes and free their slots."""
        prefix = f"{cluster_name}/"
        for interval in self.stores.ledger.open_intervals(KIND):
            if interval.user == user and interval.server_name.startswith(prefix):
                self.stores.ledger.close(interval.id, None, note)
        for allocation in self.devices.allocations():
            if allocation.user == user and allocation.server_name.startswith(prefix):
                self.devices.release(user=user, server_name=allocation.server_name)

    def held(self, *, user: str, key: str) -> tuple[str | None, list[int]]:
        """The GPU resource and slots the worker holds (``None, []`` for none)."""
        rows = self.devices.held_by(user=user, server_name=key)
        if not rows:
            return None, []
        return rows[0].resource, [row.slot for row in rows]

    def environment(self, *, user: str, key: str) -> dict[str, str]:
        """``CUDA_VISIBLE_DEVICES``, ``AFHUB_DEVICES`` and ``AFHUB_DEVICES_SIMULATED`` of
        the worker process: real device ids when its resource is backed by this machine's
        GPUs, else simulated (nothing attached); a CPU worker sees no GPU."""
        name, slots = self.held(user=user, key=key)
        resource = self.registry().resources.get(name) if name else None
        real = self.real_devices.get(name) if name else None
        return device_environment(resource, slots, real)
