"""Admission of schedulers and workers through the ledger.

Every scheduler and every worker is one ledger interval of kind ``dask`` (``server_name``
``CLUSTER/scheduler`` or ``CLUSTER/WORKER``) charged to the group chosen in the cluster's
options. A cluster is refused (no cluster) when its scheduler does not fit the group's
limits now; workers are admitted one by one (atomic with every other admission of the
group chain): a scale request beyond what fits is capped and the client told why; adaptive
scaling and later heartbeats retry. Intervals start when the process starts and close when
it stops (a process that never started is charged nothing).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus, timestamp

from afhub.dask.policy import scheduler_charge, worker_charge, workers_that_fit
from afhub.services.gateway.middleware import tell_the_scaler
from afhub.services.gateway.refusals import cluster_refused, scale_capped
from afhub.services.gateway.workers import WorkerRefused, WorkerSpec
from afhub.stores.errors import StoreError

KIND = "dask"
#: the ledger's kind of a user's notebook server (a cluster may stop with one)
SERVER_KIND = "server"
#: the options keys the backend adds: the server that started a cluster and its interval
STARTED_BY = "afhub_started_by"
SERVER_INTERVAL = "afhub_server_interval"


def scheduler_key(cluster_name: str) -> str:
    return f"{cluster_name}/scheduler"


def worker_key(cluster_name: str, worker_name: str) -> str:
    return f"{cluster_name}/{worker_name}"


class AdmissionMixin:
    """The charging of :class:`~afhub.services.gateway.backend.AfhubLocalBackend`."""

    async def start_cluster(self, user, cluster_options):
        options, config = await self.process_cluster_options(user, cluster_options)
        options = {**options, **(await self._started_by(user))}
        group = options["charge_to"]
        charge = scheduler_charge(self.policy)
        try:
            decision = await asyncio.to_thread(
                self.stores.ledger.preview, user=user.name, charge=charge, group=group
            )
        except StoreError as exc:  # e.g. no longer a member of the group
            raise PublicException(f"no cluster started: {exc}") from None
        if not decision.allowed:
            raise PublicException(
                await asyncio.to_thread(cluster_refused, self.stores, user.name, charge, decision)
            )
        cluster = self.db.create_cluster(user.name, options, config.to_dict())
        try:
            await asyncio.to_thread(
                self.stores.ledger.admit,
                user=user.name,
                charge=charge,
                group=group,
                server_name=scheduler_key(cluster.name),
            )
        except StoreError as exc:  # a concurrent admission took the room, say
            self.db.update_cluster(
                cluster, status=JobStatus.FAILED, target=JobStatus.FAILED, stop_time=timestamp()
            )
            cluster.ready.set()
            cluster.shutdown.set()
            refused = await asyncio.to_thread(cluster_refused, self.stores, user.name, charge, exc)
            raise PublicException(refused) from None
        self.log.info(
            "Created cluster %s for user %s, charged to %s", cluster.name, user.name, group
        )
        self.queue.put(cluster)
        return cluster.name

    async def _started_by(self, user) -> dict:
        """The server whose token started a cluster and its ledger interval (the cluster
        stops when that interval closes); nothing for a token of no single server."""
        server = getattr(user, "started_by", None)
        if server is None:
            return {}
        interval = await asyncio.to_thread(
            self.stores.ledger.find_open, kind=SERVER_KIND, user=user.name, server_name=server
        )
        if interval is None:
            return {}
        return {STARTED_BY: server, SERVER_INTERVAL: interval.id}

    async def _scale_notice(self, cluster, requested: int, extra: int) -> tuple[int, str]:
        """Of ``extra`` more workers of ``cluster`` (``requested`` in all), how many fit its
        group's limits and (GPU workers) the free device slots now, and the notice when not
        all ('' when all): the refusal in plain words."""
        chain = await asyncio.to_thread(self.stores.ledger.status, cluster.options["charge_to"])
        spec = WorkerSpec.from_options(cluster.options, cluster.config)
        per_worker = worker_charge(spec.worker_cores, spec.worker_gpus, spec.gpu_resource)
        fit, why = workers_that_fit(chain, per_worker, extra, datetime.now(UTC))
        capped, reason = await asyncio.to_thread(self.workers.cap, spec, fit)
        if capped >= extra:
            return capped, ""
        notice = await asyncio.to_thread(
            scale_capped,
            self.stores,
            requested,
            requested - extra + capped,
            reason if capped < fit else why,
            per_worker,
            fit,
        )
        return capped, notice

    async def forward_message_to_scheduler(self, cluster, msg):
        if msg.get("op") == "scale":
            record = self.db.get_cluster(cluster.name)
            held = len(record.active_workers())
            extra = int(msg["count"]) - held
            if extra > 0:
                fit, notice = await self._scale_notice(record, int(msg["count"]), extra)
                if fit < extra:
                    granted = held + fit
                    self.log.info("Cluster %s: %s", cluster.name, notice)
                    self._notices[cluster.name] = notice
                    tell_the_scaler(notice)
                    msg = {**msg, "count": granted}
        await super().forward_message_to_scheduler(cluster, msg)

    async def _check_cluster_scale(self, cluster):
        extra = cluster.count - len(cluster.active_workers())
        if extra <= 0 or cluster.worker_start_failure_count >= self.worker_start_failure_limit:
            await super()._check_cluster_scale(cluster)
            return
        fit, capped_notice = await self._scale_notice(cluster, cluster.count, extra)
        admitted, refusal = await self._admit_workers(cluster, fit)
        if admitted < extra:
            granted = len(cluster.active_workers())
            notice = capped_notice
            if refusal is not None:  # a concurrent admission took the room
                notice = (
                    f"cluster {cluster.name} runs {granted} of {cluster.count} workers: {refusal}"
                )
            if self._notices.get(cluster.name) != notice:
                self.log.info("%s", notice)
                self._notices[cluster.name] = notice
            self.db.update_cluster(cluster, count=granted)

    async def _admit_workers(self, cluster, count: int) -> tuple[int, str | None]:
        """Create and admit up to ``count`` workers of ``cluster`` one by one; how many
        were admitted, and why the next one was refused (``None``: none was)."""
        spec = WorkerSpec.from_options(cluster.options, cluster.config)
        for admitted in range(count):
            worker = self.db.create_worker(cluster)
            try:
                await asyncio.to_thread(
                    self.workers.admit,
                    user=cluster.username,
                    group=cluster.options["charge_to"],
                    key=worker_key(cluster.name, worker.name),
                    spec=spec,
                )
            except WorkerRefused as exc:
                self.db.update_worker(
                    worker,
                    status=JobStatus.STOPPED,
                    target=JobStatus.STOPPED,
                    stop_time=timestamp(),
                )
                return admitted, str(exc)
            self.log.info("Created worker %s for cluster %s", worker.name, cluster.name)
            self.queue.put(worker)
        return count, None

    async def _mark_running(self, user: str, key: str) -> None:
        interval = await asyncio.to_thread(
            self.stores.ledger.find_open, kind=KIND, user=user, server_name=key
        )
        if interval is not None:
            await asyncio.to_thread(self.stores.ledger.mark_running, interval.id)

    async def _cluster_to_submitted(self, cluster):
        await super()._cluster_to_submitted(cluster)
        if cluster.status == JobStatus.SUBMITTED and cluster.target == JobStatus.RUNNING:
            await self._mark_running(cluster.username, scheduler_key(cluster.name))

    async def _cluster_to_stopped(self, cluster):
        await super()._cluster_to_stopped(cluster)
        note = "cluster failed" if cluster.status == JobStatus.FAILED else "cluster stopped"
        await asyncio.to_thread(
            self.workers.release_cluster,
            user=cluster.username,
            cluster_name=cluster.name,
            note=note,
        )
        self._notices.pop(cluster.name, None)

    async def _worker_to_submitted(self, worker):
        await super()._worker_to_submitted(worker)
        if worker.status == JobStatus.SUBMITTED and worker.target == JobStatus.RUNNING:
            key = worker_key(worker.cluster.name, worker.name)
            await self._mark_running(worker.cluster.username, key)

    async def _worker_to_stopped(self, worker):
        await super()._worker_to_stopped(worker)
        note = "worker failed" if worker.status == JobStatus.FAILED else "worker stopped"
        await asyncio.to_thread(
            self.workers.release,
            user=worker.cluster.username,
            key=worker_key(worker.cluster.name, worker.name),
            note=note,
        )

    async def do_start_worker(self, worker):
        """Upstream's local start, with the worker's devices in its environment."""
        cluster = worker.cluster
        cmd = self.get_worker_command(cluster, worker.name)
        env = self.get_worker_env(cluster)
        env.update(
            await asyncio.to_thread(
                self.workers.environment,
                user=cluster.username,
                key=worker_key(cluster.name, worker.name),
            )
        )
        pid = await self.start_process(cluster, cmd, env, f"worker-{worker.name}")
        yield {"pid": pid}
