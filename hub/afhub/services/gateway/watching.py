"""What the gateway watches while it runs: the hub that started it, schedulers that died,
clusters whose starting server stopped, and groups whose budget is spent; and, at start,
the ledger's open Dask intervals squared with the clusters the gateway's database holds.

A cluster started from a user's server (the server's own token) stops with that server,
unless it was started with ``outlive_server=True``.
"""

from __future__ import annotations

import asyncio
import os
import signal

from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.backends.local import is_running

from afhub.services.gateway.admission import (
    KIND,
    SERVER_INTERVAL,
    SERVER_KIND,
    STARTED_BY,
    scheduler_key,
    worker_key,
)
from afhub.services.gateway.budgets import BudgetMixin


class WatchingMixin(BudgetMixin):
    """The periodic tasks of :class:`~afhub.services.gateway.backend.AfhubLocalBackend`."""

    def start_watching(self) -> None:
        """Run the periodic checks (the hub's watch was set up before anything started:
        ``self._hub_process``, a :class:`~afhub.services.kit.lifecycle.ParentWatch`)."""
        self.task_pool.spawn(self._loop(self.liveness_period, self.check_schedulers))
        self.task_pool.spawn(self._loop(self.liveness_period, self.stop_orphaned_clusters))
        self.task_pool.spawn(self._loop(self.enforcement_period, self.enforce_budgets))

    async def _reconcile_ledger(self) -> None:
        """Square open Dask intervals with the clusters this gateway's database holds (after
        a restart, or a crash: what died meanwhile is closed at its last checkpoint)."""
        alive = set()
        for cluster in self.db.active_clusters():
            alive.add((cluster.username, scheduler_key(cluster.name)))
            for worker in cluster.workers.values():
                if worker.status < JobStatus.STOPPED:
                    alive.add((cluster.username, worker_key(cluster.name, worker.name)))
        report = await asyncio.to_thread(self.stores.ledger.reconcile, alive, kind=KIND)
        # slots of workers whose interval was just closed (of servers' too: same rule)
        await asyncio.to_thread(self.workers.devices.reclaim)
        self.log.info(
            "Ledger reconciled with the gateway: closed %d, failed %d, kept %d, started %d",
            len(report.closed),
            len(report.failed),
            len(report.kept),
            len(report.started),
        )

    async def check_schedulers(self) -> list[str]:
        """Clean up running clusters whose scheduler process is gone; returns their names.
        When the hub that started the gateway is gone, exit without stopping clusters: the
        next gateway takes them back from the persistent database."""
        if self._hub_process.gone:
            self.log.warning("The hub is gone; the gateway exits and leaves clusters running")
            self.stop_clusters_on_shutdown = False
            os.kill(os.getpid(), signal.SIGTERM)
            return []
        dead = []
        for cluster in list(self.db.active_clusters()):
            pid = cluster.state.get("pid")
            if (
                cluster.status == JobStatus.RUNNING
                and cluster.target == JobStatus.RUNNING
                and pid is not None
                and not is_running(pid)
            ):
                self.log.warning("Scheduler of cluster %s died; cleaning up", cluster.name)
                await self.stop_cluster(cluster.name, failed=True)
                dead.append(cluster.name)
        return dead

    async def stop_orphaned_clusters(self) -> list[str]:
        """Stop the clusters whose starting server stopped (its ledger interval closed),
        unless they were started with ``outlive_server``; returns their names."""
        tied = [
            c
            for c in self.db.active_clusters()
            if c.target <= JobStatus.RUNNING
            and c.options.get(SERVER_INTERVAL) is not None
            and not c.options.get("outlive_server")
        ]
        if not tied:
            return []
        open_ids = {
            i.id for i in await asyncio.to_thread(self.stores.ledger.open_intervals, SERVER_KIND)
        }
        stopped = []
        for cluster in tied:
            if cluster.options[SERVER_INTERVAL] in open_ids:
                continue
            server = cluster.options.get(STARTED_BY) or "(default server)"
            self.log.info(
                "Stopping cluster %s of %s: the server %s that started it stopped",
                cluster.name,
                cluster.username,
                server,
            )
            await self.stop_cluster(cluster.name)
            stopped.append(cluster.name)
        return stopped

    def _running(self, name: str) -> bool:
        cluster = self.db.get_cluster(name)
        return cluster is not None and cluster.target <= JobStatus.RUNNING
