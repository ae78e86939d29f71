"""afhub's gateway backend on Kubernetes: dask-gateway's ``KubeBackend`` plus afhub's
options form, admission and ledger charging (the same as the local backend's).

- A cluster is refused (no DaskCluster object) when its scheduler does not fit the
  group's limits; otherwise its scheduler is admitted through the ledger before the
  object is written.
- Workers: the gateway writes ``spec.replicas`` and the controller creates the pods. Every
  replica count the gateway writes (a client's scale request, the scheduler's adaptive
  heartbeat) is capped to what the group's Dask limits allow now; a capped client request
  gets the ``GatewayWarning`` saying why, as locally.
- Intervals open, start and close from the cluster's phase the gateway's informer sees,
  squared with the ledger by :func:`~afhub.services.gateway.kube_ledger.reconcile`
  (at start for every cluster, then on every event of a cluster).
- Groups whose budget is spent: their clusters warned, then stopped after the grace period
  (:class:`~afhub.services.gateway.budgets.BudgetMixin`, as locally).
- GPU workers ask Kubernetes for their registry resource's extended resource, node
  selector and tolerations; the device plugin picks the device (no slot table here).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.kubernetes import KubeBackend
from dask_gateway_server.models import ClusterStatus

from afhub.dask.policy import scheduler_charge, worker_charge, workers_that_fit
from afhub.services.gateway.budgets import BudgetMixin
from afhub.services.gateway.facility import FacilityMixin, pages_root
from afhub.services.gateway.kube_ledger import (
    Close,
    MarkRunning,
    Open,
    OpenInterval,
    reconcile,
    state_of,
)
from afhub.services.gateway.middleware import json_answers, safe_headers, tell_the_scaler
from afhub.services.gateway.refusals import cluster_refused, scale_capped
from afhub.services.gateway.workers import WorkerCharging, WorkerRefused, WorkerSpec
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores

KIND = "dask"


def gpu_worker_config(resource, gpus: int) -> dict:
    """``KubeClusterConfig`` overrides that put a GPU worker on its registry resource:
    the extended resource as request and limit, its node selector and tolerations, and its
    image (scheduler and workers alike: the same packages on both)."""
    if resource is None or not gpus:
        return {}
    name = resource.extended_resource or "nvidia.com/gpu"
    pod: dict = {}
    if resource.node_selector:
        pod["nodeSelector"] = dict(resource.node_selector)
    if resource.tolerations:
        pod["tolerations"] = [dict(t) for t in resource.tolerations]
    image = {"image": resource.image} if resource.image else {}
    return {
        **image,
        "worker_extra_container_config": {
            "resources": {"limits": {name: str(gpus)}, "requests": {name: str(gpus)}}
        },
        "worker_extra_pod_config": pod,
    }


class AfhubKubeBackend(FacilityMixin, BudgetMixin, KubeBackend):
    """DaskCluster objects on Kubernetes, charged to the ledger."""

    async def setup(self, app) -> None:
        self.stores = Stores.open(self.facility_db_url or None, migrate=False)
        self.workers = WorkerCharging(self.stores)
        app.middlewares.append(json_answers(self.log))
        app.on_response_prepare.append(safe_headers)
        app.router.add_get("/", pages_root)  # a browser at the service's root: My usage
        self._notices: dict[str, str] = {}
        await super().setup(app)
        await self.square_ledger(None)
        self._enforcer = asyncio.ensure_future(
            self._loop(self.enforcement_period, self.enforce_budgets)
        )

    async def cleanup(self) -> None:
        if hasattr(self, "_enforcer"):
            self._enforcer.cancel()
        await super().cleanup()
        if hasattr(self, "stores"):
            self.stores.close()

    def _running(self, name: str) -> bool:
        cluster = self.clusters.get(name)
        return cluster is not None and cluster.status <= ClusterStatus.RUNNING

    def make_cluster_object(self, username, options, config):
        """Upstream's object, with a GPU worker's resources from the registry."""
        obj = super().make_cluster_object(username, options, config)
        spec = WorkerSpec.from_options(options, obj["spec"]["config"])
        if spec.worker_gpus:
            resource = self.workers.resource(spec.gpu_resource)
            obj["spec"]["config"].update(gpu_worker_config(resource, spec.worker_gpus))
        return obj

    async def start_cluster(self, user, cluster_options):
        options, config = await self.process_cluster_options(user, cluster_options)
        group = options["charge_to"]
        try:
            obj = self.make_cluster_object(user.name, options, config)
        except WorkerRefused as exc:
            raise PublicException(f"no cluster started: {exc}") from None
        name = f"{config.namespace}.{obj['metadata']['name']}"
        charge = scheduler_charge(self.policy)
        try:
            admission = await asyncio.to_thread(
                self.stores.ledger.admit,
                user=user.name,
                charge=charge,
                group=group,
                server_name=f"{name}/scheduler",
            )
        except StoreError as exc:  # over the limits, or no longer a member
            refused = await asyncio.to_thread(cluster_refused, self.stores, user.name, charge, exc)
            raise PublicException(refused) from None
        self.log.info("Creating cluster %s for user %s, charged to %s", name, user.name, group)
        try:
            await self.custom_client.create_namespaced_custom_object(
                "gateway.dask.org", self.crd_version, config.namespace, "daskclusters", obj
            )
        except Exception:
            await asyncio.to_thread(
                self.stores.ledger.close, admission.interval_id, None, "not created"
            )
            raise
        return name

    async def capped(self, cluster_name: str, count: int) -> tuple[int, str]:
        """Of ``count`` workers wanted, how many the group's limits allow now (the
        replicas already written count as held), and why not more ('' when all)."""
        obj = self.informer.get(cluster_name)
        cluster = self.clusters.get(cluster_name)
        if obj is None or cluster is None:
            return count, ""
        held = state_of(obj).replicas
        if count <= held:
            return count, ""
        chain = await asyncio.to_thread(self.stores.ledger.status, cluster.options["charge_to"])
        spec = WorkerSpec.from_options(cluster.options, cluster.config)
        per_worker = worker_charge(spec.worker_cores, spec.worker_gpus, spec.gpu_resource)
        fit, why = workers_that_fit(chain, per_worker, count - held, datetime.now(UTC))
        if held + fit == count:
            return count, ""
        notice = await asyncio.to_thread(
            scale_capped, self.stores, count, held + fit, why, per_worker, fit
        )
        return held + fit, notice

    async def forward_message_to_scheduler(self, cluster, msg):
        if msg.get("op") == "scale":
            granted, notice = await self.capped(cluster.name, int(msg["count"]))
            if notice:
                self.log.info("Cluster %s: %s", cluster.name, notice)
                tell_the_scaler(notice)
                msg = {**msg, "count": granted}
        await super().forward_message_to_scheduler(cluster, msg)

    async def on_cluster_heartbeat(self, cluster_name, msg):
        granted, notice = await self.capped(cluster_name, int(msg["count"]))
        if notice:
            self.log.info("Cluster %s: %s", cluster_name, notice)
        await super().on_cluster_heartbeat(cluster_name, {**msg, "count": granted})

    async def sync_cluster(self, cluster_name):
        await super().sync_cluster(cluster_name)
        await self.square_ledger(cluster_name)

    async def square_ledger(self, cluster_name: str | None) -> None:
        """Apply :func:`reconcile` to one cluster (``None``: every cluster and every open
        ``dask`` interval, at start)."""
        if cluster_name is None:
            objs = list(self.informer.cache.values())
        else:
            obj = self.informer.get(cluster_name)
            objs = [obj] if obj is not None else []
        states = [state_of(o) for o in objs]
        prefix = None if cluster_name is None else f"{cluster_name}/"
        intervals = [
            OpenInterval(i.id, i.user, i.server_name, i.start is not None)
            for i in await asyncio.to_thread(self.stores.ledger.open_intervals, KIND)
            if prefix is None or i.server_name.startswith(prefix)
        ]
        for action in reconcile(states, intervals):
            await self.apply(action)

    async def apply(self, action) -> None:
        """One ledger action; a worker refused (the limits changed since the replicas
        were written) caps the cluster's replicas at the workers admitted before it."""
        ledger = self.stores.ledger
        if isinstance(action, Close):
            await asyncio.to_thread(ledger.close, action.interval_id, None, action.note)
        elif isinstance(action, MarkRunning):
            await asyncio.to_thread(ledger.mark_running, action.interval_id)
        elif isinstance(action, Open):
            await self._open(action)

    async def _open(self, action: Open) -> None:
        cluster_name, process = action.key.split("/", 1)
        cluster = self.clusters.get(cluster_name)
        if cluster is None:  # not synced yet: its own sync opens it
            return
        try:
            if action.worker:
                spec = WorkerSpec.from_options(cluster.options, cluster.config)
                charge = worker_charge(spec.worker_cores, spec.worker_gpus, spec.gpu_resource)
            else:
                charge = scheduler_charge(self.policy)
            admission = await asyncio.to_thread(
                self.stores.ledger.admit,
                user=action.user,
                charge=charge,
                group=action.group,
                server_name=action.key,
            )
        except StoreError as exc:
            self.log.warning("Cluster %s: %s not admitted: %s", cluster_name, process, exc)
            if action.worker:
                await self._set_replicas(cluster_name, int(process.split("-")[-1]))
            return
        if action.running:
            await asyncio.to_thread(self.stores.ledger.mark_running, admission.interval_id)

    async def _set_replicas(self, cluster_name: str, count: int) -> None:
        namespace, name = cluster_name.split(".")
        await self.custom_client.patch_namespaced_custom_object(
            "gateway.dask.org",
            self.crd_version,
            namespace,
            "daskclusters",
            name,
            [{"op": "add", "path": "/spec/replicas", "value": count}],
        )
