"""What both of afhub's gateway backends share: the facility database, the Dask policy's
settings and the options form (the local backend's processes and the Kubernetes backend's
DaskCluster objects differ only in how workers start and are seen)."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from dask_gateway_server.options import Options
from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from afhub.dask.gpus import GpuOffer
from afhub.dask.policy import DaskPolicy
from afhub.services.gateway.options import cluster_options, user_groups


class FacilityMixin(LoggingConfigurable):
    """The facility database and the Dask policy of afhub's gateway backends; the backend
    sets ``self.stores`` and ``self.workers`` (a :class:`~afhub.services.gateway.workers.
    WorkerCharging`) in its ``setup``."""

    facility_db_url = Unicode(
        help="SQLAlchemy URL of afhub's facility database (groups, quotas, the ledger).",
        config=True,
    )
    max_worker_cores = Integer(4, help="Most cores per worker.", config=True)
    default_worker_cores = Integer(1, help="Default cores per worker.", config=True)
    max_worker_memory_gib = Float(16.0, help="Most memory (GiB) per worker.", config=True)
    default_worker_memory_gib = Float(2.0, help="Default memory (GiB) per worker.", config=True)
    max_workers = Integer(100, help="Most workers per cluster.", config=True)
    scheduler_cores = Integer(1, help="Cores a scheduler holds and is charged for.", config=True)
    enforcement_period = Float(
        60.0, help="Seconds between checks of the groups' budgets.", config=True
    )
    grace_period = Float(
        600.0, help="Seconds between the over-budget warning and stopping.", config=True
    )

    @property
    def policy(self) -> DaskPolicy:
        return DaskPolicy.of(self)

    async def get_cluster_options(self, user) -> Options:
        """The options form for ``user`` (:func:`~afhub.services.gateway.options.
        cluster_options`), from their groups' chains and GPU offers now."""
        groups, default = await asyncio.to_thread(user_groups, self.stores, user.name)
        chains = {}
        offers: dict[str, GpuOffer] = {}
        for group in groups:
            chains[group] = await asyncio.to_thread(self.stores.ledger.status, group)
            offers[group] = await asyncio.to_thread(self.workers.offer, user.name, chains[group])
        return cluster_options(groups, default, chains, offers, self.policy)


async def pages_root(_request: web.Request) -> web.StreamResponse:
    """The service's root sends a browser to the facility's My usage page (its clusters);
    404 where the hub configured no pages."""
    pages = os.environ.get("AFHUB_PAGES_PREFIX")
    if not pages:
        raise web.HTTPNotFound(reason="no such API path")
    raise web.HTTPFound(pages + "usage")
