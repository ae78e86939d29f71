"""The gateway's backend: dask-gateway's local backend plus afhub's charging and limits.

Every scheduler and every worker is one ledger interval of kind ``dask`` charged to the
group chosen in the cluster's options. The concerns live in their own modules:

- :mod:`.options`: the options form and its check against the group's bounds (HTTP 422,
  no cluster, when they are broken);
- :mod:`.admission`: the scheduler's and each worker's admission through the ledger
  (a scale request beyond what fits is capped, and the client gets a ``GatewayWarning``
  saying why), intervals opened and closed with the processes;
- :mod:`.watching`: the hub's watch, dead schedulers, clusters whose starting server
  stopped, spent budgets (warned, stopped after the grace period), and the ledger squared
  with the gateway's persistent database at start;
- :mod:`.dashboard`: dashboards served to their owner only, in a sandbox;
- :mod:`.middleware`: every answer as JSON, cross-site and credential-carrying requests
  refused.
"""

from __future__ import annotations

from aiohttp import web
from dask_gateway_server.backends.local import UnsafeLocalBackend
from traitlets import Bool, Dict, Float, Unicode

from afhub.devices.probe import machine_gpus
from afhub.services.gateway.admission import AdmissionMixin
from afhub.services.gateway.dashboard import DashboardMixin
from afhub.services.gateway.facility import FacilityMixin, pages_root
from afhub.services.gateway.middleware import json_answers, safe_headers
from afhub.services.gateway.watching import WatchingMixin
from afhub.services.gateway.workers import WorkerCharging
from afhub.services.kit.lifecycle import ParentWatch
from afhub.stores.facade import Stores


class AfhubLocalBackend(
    FacilityMixin, AdmissionMixin, WatchingMixin, DashboardMixin, UnsafeLocalBackend
):
    """Local processes (one Unix user, as the rest of local mode), charged to the ledger."""

    real_devices = Dict(
        help="""GPU resources of the registry backed by this machine's real GPUs, as
        ``{resource name: [CUDA device index or UUID per slot]}`` (as the spawner's
        ``real_devices``). A GPU worker of another resource gets a simulated slot:
        ``CUDA_VISIBLE_DEVICES`` empty and ``AFHUB_DEVICES_SIMULATED=1``.""",
        config=True,
    )
    local_gpus = Bool(
        True,
        help="""Offer this machine's GPUs (``nvidia-smi -L``) to GPU workers as the built-in
        ``local-gpu`` resource, open to everyone, with real ``CUDA_VISIBLE_DEVICES`` (as
        the local spawner does for servers; they share its slots).""",
        config=True,
    )
    nvidia_smi = Unicode(
        "nvidia-smi", help="Command listing this machine's GPUs (``-L``).", config=True
    )
    liveness_period = Float(
        2.0, help="Seconds between checks that running schedulers are alive.", config=True
    )

    async def setup(self, app: web.Application) -> None:
        self.stores = Stores.open(self.facility_db_url or None, migrate=False)
        local, ids = machine_gpus(self.nvidia_smi) if self.local_gpus else ({}, [])
        real = {name: ids for name in local}
        real.update(self.real_devices)
        self.workers = WorkerCharging(self.stores, local, real)
        self._notices: dict[str, str] = {}
        app.middlewares.append(json_answers(self.log))
        app.on_response_prepare.append(safe_headers)
        self.add_dashboard_routes(app)
        app.router.add_get("/", pages_root)  # a browser at the service's root: My usage
        self._hub_process = ParentWatch()
        await super().setup(app)
        await self._reconcile_ledger()
        self.start_watching()

    async def cleanup(self) -> None:
        await super().cleanup()
        if hasattr(self, "stores"):
            self.stores.close()
