"""The gateway's backend: dask-gateway's local backend plus afhub's charging and limits.

Every scheduler and every worker is one ledger interval of kind ``dask``
(``server_name`` ``CLUSTER/scheduler`` or ``CLUSTER/WORKER``) charged to the group chosen
in the cluster's options:

- a cluster is refused (HTTP 422, no cluster) when its options break the group's bounds
  or its scheduler does not fit the group's limits now;
- workers are admitted one by one through the ledger (atomic with every other admission
  of the group chain): a scale request beyond what fits is capped, and the client gets a
  ``GatewayWarning`` saying why; adaptive scaling and later heartbeats retry, so workers
  appear once room frees;
- intervals start when the process starts and close when it stops (a process that never
  started is charged nothing);
- a cluster whose group's budget is spent is warned (ledger) and stopped after the grace
  period; a cluster whose scheduler process died is cleaned up;
- at start the ledger's open Dask intervals are squared with the clusters the gateway's
  persistent database holds.

Dashboards are not routed by the gateway's proxy straight to the scheduler (upstream
serves them to anyone who knows the URL): they go through the gateway, which serves a
cluster's dashboard only to its owner as identified by the viewer's own credentials (an
``Authorization`` header, or the dashboard session the hub's OAuth set up; never a token
from the link), only from the loopback port the backend chose for that scheduler (a
scheduler re-reporting its ``dashboard_address`` changes nothing), and with
``Content-Security-Policy: sandbox`` (no ``allow-same-origin``): scripts a scheduler
serves run in an opaque origin and cannot read the hub's pages or call its API with the
viewer's cookies.

A cluster started from a user's server (the server's own token) stops with that server,
unless it was started with ``outlive_server=True``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import socket
from datetime import UTC, datetime, timedelta

import aiohttp
import psutil
from aiohttp import web
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus, timestamp
from dask_gateway_server.backends.local import UnsafeLocalBackend, is_running
from dask_gateway_server.models import User
from dask_gateway_server.options import Bool as BoolField
from dask_gateway_server.options import Float as FloatField
from dask_gateway_server.options import Integer as IntegerField
from dask_gateway_server.options import Options, Select
from traitlets import Bool, Dict, Float, Integer, Unicode

from afhub.dask.gpus import NO_GPU_RESOURCE, GpuOffer
from afhub.dask.policy import (
    ClusterRequest,
    DaskPolicy,
    OptionsRefused,
    max_worker_cores_for,
    max_workers_for,
    scale_notice,
    scheduler_charge,
    validate_request,
    worker_charge,
    workers_that_fit,
)
from afhub.quotas.decisions import EnforcementAction, plan_enforcement
from afhub.services.gateway.auth import (
    INVALID,
    SESSION_COOKIE,
    URL_CREDENTIALS_REFUSED,
    has_secret_parameter,
    is_document,
    parse_authorization,
)
from afhub.services.gateway.workers import (
    WorkerCharging,
    WorkerRefused,
    WorkerSpec,
    machine_gpus,
)
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores

KIND = "dask"
NO_GROUP = "(no group)"
#: the ledger's kind of a user's notebook server (a cluster may stop with one)
SERVER_KIND = "server"
#: the options keys the backend adds: the server that started a cluster and its interval
STARTED_BY = "afhub_started_by"
SERVER_INTERVAL = "afhub_server_interval"
#: headers of every dashboard response: the scheduler's content runs in an opaque origin
DASHBOARD_HEADERS = {
    "Content-Security-Policy": (
        "sandbox allow-scripts allow-forms allow-popups allow-downloads; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: headers of the scheduler's responses never passed on (besides hop-by-hop ones): a
#: scheduler may not set cookies on the hub's origin, loosen the policy or allow CORS
_DASHBOARD_DROPPED = {
    "set-cookie",
    "content-security-policy",
    "content-security-policy-report-only",
    "x-frame-options",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
    "x-content-type-options",
    "cache-control",
    "referrer-policy",
    "cross-origin-opener-policy",
}
#: a dashboard's upstream: connect within 10 s, some bytes at least every 60 s
DASHBOARD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
#: bytes of a dashboard response held in memory at once
DASHBOARD_CHUNK = 64 * 1024
#: methods that change something: refused when the browser says the request is cross-site
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CROSS_SITE = (
    "cross-site request refused: the Dask gateway's API takes requests from API clients "
    "(dask_gateway.Gateway, with 'Authorization: jupyterhub TOKEN'), not from other sites' "
    "pages"
)
#: a capped scale request's message, read by the middleware for the response
_scale_notices: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "afhub_scale_notices", default=None
)
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
    "host",
    "authorization",
    "cookie",
}


def scheduler_key(cluster_name: str) -> str:
    return f"{cluster_name}/scheduler"


def worker_key(cluster_name: str, worker_name: str) -> str:
    return f"{cluster_name}/{worker_name}"


def is_cross_site(request: web.Request) -> bool:
    """Whether a browser sent ``request`` from another site's page (or from a sandboxed
    dashboard, whose origin is ``null``): ``Sec-Fetch-Site`` when the browser sends it,
    else an ``Origin`` other than the one the request was made to. API clients send
    neither header."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    host = request.headers.get("X-Forwarded-Host") or request.host
    return origin == "null" or origin.split("://", 1)[-1].rstrip("/") != host


async def _safe_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer of the gateway (JSON errors included) is never sniffed into a page
    and, unless a dashboard's own policy is set, renders as nothing that can run."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'none'; sandbox; frame-ancestors 'none'"
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on now (a scheduler's dashboard)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` listens on loopback ``port`` (its own dashboard)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return False
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections
    )


class AfhubLocalBackend(UnsafeLocalBackend):
    """Local processes (one Unix user, as the rest of local mode), charged to the ledger."""

    facility_db_url = Unicode(
        help="SQLAlchemy URL of afhub's facility database (groups, quotas, the ledger).",
        config=True,
    )
    max_worker_cores = Integer(4, help="Most cores per worker.", config=True)
    default_worker_cores = Integer(1, help="Default cores per worker.", config=True)
    max_worker_memory_gib = Float(16.0, help="Most memory (GiB) per worker.", config=True)
    default_worker_memory_gib = Float(2.0, help="Default memory (GiB) per worker.", config=True)
    max_workers = Integer(100, help="Most workers per cluster.", config=True)
    scheduler_charge_cores = Integer(
        1, help="Cores a scheduler holds and is charged for.", config=True
    )
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
    enforcement_period = Float(
        60.0, help="Seconds between checks of the groups' budgets.", config=True
    )
    grace_period = Float(
        600.0, help="Seconds between the over-budget warning and stopping.", config=True
    )

    # -- set-up ------------------------------------------------------------------------------

    @property
    def policy(self) -> DaskPolicy:
        return DaskPolicy(
            max_worker_cores=self.max_worker_cores,
            default_worker_cores=self.default_worker_cores,
            max_worker_memory_gib=self.max_worker_memory_gib,
            default_worker_memory_gib=self.default_worker_memory_gib,
            max_workers=self.max_workers,
            scheduler_cores=self.scheduler_charge_cores,
        )

    async def setup(self, app: web.Application) -> None:
        self.stores = Stores.open(self.facility_db_url or None, migrate=False)
        local, ids = machine_gpus(self.nvidia_smi) if self.local_gpus else ({}, [])
        real = {name: ids for name in local}
        real.update(self.real_devices)
        self.workers = WorkerCharging(self.stores, local, real)
        self._notices: dict[str, str] = {}
        app.middlewares.append(self._middleware)
        app.on_response_prepare.append(_safe_headers)
        app.router.add_route("*", "/clusters/{cluster_name}", self._dashboard)
        app.router.add_route("*", "/clusters/{cluster_name}/{tail:.*}", self._dashboard)
        self._parent = os.getppid()
        await super().setup(app)
        await self._reconcile_ledger()
        self.task_pool.spawn(self._loop(self.liveness_period, self.check_schedulers))
        self.task_pool.spawn(self._loop(self.liveness_period, self.stop_orphaned_clusters))
        self.task_pool.spawn(self._loop(self.enforcement_period, self.enforce_budgets))

    async def cleanup(self) -> None:
        await super().cleanup()
        if hasattr(self, "stores"):
            self.stores.close()

    async def _loop(self, period: float, step) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("afhub gateway task %s failed", step.__name__)

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        """Every error as JSON with a message; malformed credentials are a 401; a capped
        scale request answers ``ok: false`` with the reason (the client warns)."""
        if request.path == "/api/v1/routes":  # the gateway's own proxy, token-checked
            return await handler(request)
        if request.path != "/oauth_callback" and has_secret_parameter(request.query):
            return web.json_response({"error": URL_CREDENTIALS_REFUSED}, status=400)
        if request.method not in _SAFE_METHODS and is_cross_site(request):
            self.log.warning("Refused a cross-site %s %s", request.method, request.path)
            return web.json_response({"error": CROSS_SITE}, status=403)
        header = request.headers.get("Authorization")
        if header is not None and parse_authorization(header) is None:
            return web.json_response(
                {"error": INVALID}, status=401, headers={"WWW-Authenticate": "jupyterhub"}
            )
        notices: list[str] = []
        token = _scale_notices.set(notices)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k == "WWW-Authenticate"}
            return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
        except Exception:
            self.log.exception("Unexpected error handling %s %s", request.method, request.path)
            return web.json_response(
                {
                    "error": "internal error in the Dask gateway; the operators can see it in "
                    "the gateway's log"
                },
                status=500,
            )
        finally:
            _scale_notices.reset(token)
        if notices and request.path.endswith("/scale") and response.status == 200:
            return web.json_response({"ok": False, "msg": notices[-1]})
        return response

    # -- cluster options ---------------------------------------------------------------------

    async def get_cluster_options(self, user) -> Options:
        """The options form for ``user``: the group to charge (their groups, default
        first) and per-worker resources, bounded by the policy and the default group's
        ``max_dask_cores``; the handler checks the chosen group's bounds."""
        policy = self.policy
        info = await asyncio.to_thread(self._user_groups, user.name)
        groups, default = info
        chains = {}
        offers: dict[str, GpuOffer] = {}
        for group in groups:
            chains[group] = await asyncio.to_thread(self.stores.ledger.status, group)
            offers[group] = await asyncio.to_thread(self.workers.offer, user.name, chains[group])
        default_chain = chains.get(default, [])
        default_offer = offers.get(default or (groups[0] if groups else ""), GpuOffer())
        cores_bound = max_worker_cores_for(default_chain, policy)
        workers_bound = max(1, max_workers_for(default_chain, policy, policy.default_worker_cores))

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

        return Options(
            Select(
                "charge_to",
                groups or [NO_GROUP],
                default=default or (groups[0] if groups else NO_GROUP),
                label="Group to charge",
            ),
            IntegerField(
                "worker_cores",
                default=min(policy.default_worker_cores, cores_bound),
                # bounds checked by the handler, whose message names the group
                label=f"Worker cores (your group allows up to {cores_bound})",
            ),
            FloatField(
                "worker_memory",
                default=policy.default_worker_memory_gib,
                # bounds checked by the handler, whose message names the group
                label=f"Worker memory (GiB, up to {policy.max_worker_memory_gib:g})",
            ),
            IntegerField(
                "max_workers",
                default=policy.max_workers,
                # bounds checked by the handler, whose message names the group
                label=(
                    f"Maximum workers of this cluster (up to {policy.max_workers}; your "
                    f"group's Dask cores hold {workers_bound} such workers at once)"
                ),
            ),
            IntegerField(
                "worker_gpus",
                default=0,
                # bounds checked by the handler (registry and the group's max_gpus)
                label=(
                    "GPUs per worker (0 or 1: one GPU of the chosen GPU resource)"
                    if default_offer.max_worker_gpus
                    else f"GPUs per worker (0 only: {default_offer.reason})"
                ),
            ),
            Select(
                "gpu_resource",
                default_offer.choices,
                default=default_offer.default_resource,
                label="GPU resource of GPU workers"
                + ("" if default_offer.resources else f" ({NO_GPU_RESOURCE}: none is open to you)"),
            ),
            BoolField(
                "outlive_server",
                default=False,
                label=(
                    "Keep running after the server that started it stops (until idle or "
                    "shut down; it is charged meanwhile)"
                ),
            ),
            handler=handler,
        )

    def _user_groups(self, user: str) -> tuple[list[str], str | None]:
        try:
            info = self.stores.groups.user(user)
        except StoreError:
            return [], None
        groups = sorted(info.roles)
        default = info.default_group if info.default_group in groups else None
        if default:
            groups.remove(default)
            groups.insert(0, default)
        return groups, default

    # -- charging ----------------------------------------------------------------------------

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
            raise PublicException(f"no cluster started: {decision.message}")
        cluster = self.db.create_cluster(user.name, options, config.to_dict())
        try:
            await asyncio.to_thread(
                self.stores.ledger.admit,
                user=user.name,
                charge=charge,
                group=group,
                server_name=scheduler_key(cluster.name),
            )
        except StoreError as exc:
            self.db.update_cluster(
                cluster, status=JobStatus.FAILED, target=JobStatus.FAILED, stop_time=timestamp()
            )
            cluster.ready.set()
            cluster.shutdown.set()
            raise PublicException(f"no cluster started: {exc}") from None
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

    async def _fit(self, cluster, extra: int) -> tuple[int, str]:
        """How many of ``extra`` more workers of ``cluster`` fit its group's limits and
        (GPU workers) the free device slots now, and why no more."""
        chain = await asyncio.to_thread(self.stores.ledger.status, cluster.options["charge_to"])
        spec = WorkerSpec.from_options(cluster.options, cluster.config)
        per_worker = worker_charge(spec.worker_cores, spec.worker_gpus, spec.gpu_resource)
        fit, why = workers_that_fit(chain, per_worker, extra, datetime.now(UTC))
        capped, reason = await asyncio.to_thread(self.workers.cap, spec, fit)
        return capped, (reason if capped < fit else why.message)

    async def forward_message_to_scheduler(self, cluster, msg):
        if msg.get("op") == "scale":
            record = self.db.get_cluster(cluster.name)
            held = len(record.active_workers())
            extra = int(msg["count"]) - held
            if extra > 0:
                fit, why = await self._fit(record, extra)
                if fit < extra:
                    granted = held + fit
                    notice = scale_notice(int(msg["count"]), granted, why)
                    self.log.info("Cluster %s: %s", cluster.name, notice)
                    self._notices[cluster.name] = notice
                    notices = _scale_notices.get()
                    if notices is not None:
                        notices.append(notice)
                    msg = {**msg, "count": granted}
        await super().forward_message_to_scheduler(cluster, msg)

    async def _check_cluster_scale(self, cluster):
        extra = cluster.count - len(cluster.active_workers())
        if extra <= 0 or cluster.worker_start_failure_count >= self.worker_start_failure_limit:
            await super()._check_cluster_scale(cluster)
            return
        fit, why_message = await self._fit(cluster, extra)
        spec = WorkerSpec.from_options(cluster.options, cluster.config)
        admitted = 0
        for _ in range(fit):
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
                why_message = str(exc)
                break
            admitted += 1
            self.log.info("Created worker %s for cluster %s", worker.name, cluster.name)
            self.queue.put(worker)
        if admitted < extra:
            granted = len(cluster.active_workers())
            notice = (
                f"cluster {cluster.name} runs {granted} of {cluster.count} workers: {why_message}"
            )
            if self._notices.get(cluster.name) != notice:
                self.log.info("%s", notice)
                self._notices[cluster.name] = notice
            self.db.update_cluster(cluster, count=granted)

    async def _open_interval(self, user: str, key: str):
        return await asyncio.to_thread(
            self.stores.ledger.find_open, kind=KIND, user=user, server_name=key
        )

    async def _mark_running(self, user: str, key: str) -> None:
        interval = await self._open_interval(user, key)
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

    # -- watching ----------------------------------------------------------------------------

    async def check_schedulers(self) -> list[str]:
        """Clean up running clusters whose scheduler process is gone; returns their names.
        When the hub that started the gateway is gone, exit without stopping clusters: the
        next gateway takes them back from the persistent database."""
        if os.getppid() != self._parent:
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

    async def enforce_budgets(self, now: datetime | None = None) -> list[str]:
        """Warn clusters whose group (or an ancestor) spent a budget; stop them once the
        grace period has passed since the warning. Returns what was done."""
        now = now or datetime.now(UTC)
        over = [
            item
            for item in await asyncio.to_thread(self.stores.ledger.over_budget, now)
            if item.interval.kind == KIND
        ]
        if not over:
            return []
        by_id = {item.interval.id: item.interval for item in over}
        steps = plan_enforcement(
            [item.pure() for item in over], now, timedelta(seconds=self.grace_period)
        )
        warn = [s.interval_id for s in steps if s.action == EnforcementAction.WARN]
        if warn:
            await asyncio.to_thread(self.stores.ledger.mark_warned, warn, now)
        done: list[str] = []
        for step in steps:
            interval = by_id[step.interval_id]
            name = interval.server_name.split("/", 1)[0]
            if step.action == EnforcementAction.WARN:
                message = (
                    f"cluster {name} of {interval.user} is over budget and stops in "
                    f"{self.grace_period:g} s: {step.reason}"
                )
                if self._notices.get(name) != message:
                    self.log.warning("%s", message)
                    self._notices[name] = message
                    done.append(f"warned {name}")
            elif f"stopped {name}" not in done and self._running(name):
                self.log.warning("Stopping cluster %s of %s: %s", name, interval.user, step.reason)
                await self.stop_cluster(name)
                done.append(f"stopped {name}")
        return done

    def _running(self, name: str) -> bool:
        cluster = self.db.get_cluster(name)
        return cluster is not None and cluster.target <= JobStatus.RUNNING

    # -- dashboards --------------------------------------------------------------------------

    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        """A dashboard request. A browser's page load is identified by the viewer's own
        login and sent on to ``clusters/NAME/~KEY/PAGE``, whose relative subresources
        (requested from the sandbox's opaque origin, without cookies) the key admits."""
        auth = request.app["authenticator"]
        name = request.match_info["cluster_name"]
        tail = request.match_info.get("tail", "")
        if tail.startswith("~"):
            key, _, rest = tail[1:].partition("/")
            grant = auth.page_grant(key)
            clean = f"{auth.service_prefix}clusters/{name}/{rest}" + (
                f"?{request.query_string}" if request.query_string else ""
            )
            if grant is None or grant[0] != name:
                if is_document(request):  # an old page: open the dashboard again
                    raise web.HTTPFound(clean)
                raise web.HTTPNotFound(
                    reason="this dashboard page has expired: open the dashboard link again"
                )
            if is_document(request):  # a page load needs the viewer's own login, always
                if request.cookies.get(SESSION_COOKIE) is None and auth.get_token(request) is None:
                    raise web.HTTPFound(clean)
                viewer = await auth.dashboard_user(request)
                if viewer.name != grant[1]:
                    raise web.HTTPForbidden(
                        reason=f"User {viewer.name} lacks permissions to view cluster {name}"
                    )
            request["user"] = User(grant[1])
            return await self._dashboard_for_owner(request, rest)
        request["user"] = await auth.dashboard_user(request)
        if is_document(request) and request.method == "GET":
            self._owned_cluster(request["user"], name)
            key = auth.grant_page(name, request["user"].name)
            location = f"{auth.service_prefix}clusters/{name}/~{key}/{tail}" + (
                f"?{request.query_string}" if request.query_string else ""
            )
            raise web.HTTPFound(location, headers={"Cache-Control": "no-store"})
        return await self._dashboard_for_owner(request, tail)

    def dashboard_target(self, cluster) -> str:
        """The one address a cluster's dashboard is fetched from: the loopback port the
        backend chose when it started the scheduler, while the scheduler's own process
        listens on it (never an address the scheduler reported)."""
        port = cluster.state.get("dashboard_port")
        pid = cluster.state.get("pid")
        if port is None or pid is None:
            raise web.HTTPConflict(
                reason=f"cluster {cluster.name} has no dashboard the gateway started; start a "
                "new cluster"
            )
        if not listens_on(int(pid), int(port)):
            raise web.HTTPConflict(
                reason=f"the dashboard of cluster {cluster.name} is not up (yet); try again"
            )
        return f"http://127.0.0.1:{int(port)}"

    def _owned_cluster(self, user, name: str):
        cluster = self.db.get_cluster(name)
        if cluster is None:
            raise web.HTTPNotFound(reason=f"Cluster {name} not found")
        if cluster.username != user.name:
            raise web.HTTPForbidden(
                reason=f"User {user.name} lacks permissions to view cluster {name}"
            )
        return cluster

    async def _dashboard_for_owner(self, request: web.Request, tail: str) -> web.StreamResponse:
        user = request["user"]
        name = request.match_info["cluster_name"]
        cluster = self._owned_cluster(user, name)
        if cluster.status != JobStatus.RUNNING:
            raise web.HTTPConflict(reason=f"cluster {name} is not running")
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(
                request.method, ["GET", "HEAD"], reason="dashboards are read-only: GET only"
            )
        base = await asyncio.to_thread(self.dashboard_target, cluster)
        target = f"{base}/{tail}"
        query = list(request.query.items())
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP_BY_HOP and not k.lower().startswith("x-forwarded")
        }
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._proxy_websocket(request, target, query)
        async with self.session.request(
            request.method,
            target,
            params=query,
            headers=headers,
            allow_redirects=False,
            timeout=DASHBOARD_TIMEOUT,
        ) as upstream:
            out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() not in _DASHBOARD_DROPPED
            }
            location = out.pop("Location", None)
            if location is not None and "//" not in location and "\\" not in location:
                out["Location"] = location  # only a path on this origin
            out.update(DASHBOARD_HEADERS)
            # streamed: the gateway holds one chunk of a page at a time, whatever its size
            response = web.StreamResponse(status=upstream.status, headers=out)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(DASHBOARD_CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _proxy_websocket(self, request, target, query) -> web.WebSocketResponse:
        server = web.WebSocketResponse(headers=DASHBOARD_HEADERS)
        await server.prepare(request)
        url = "ws" + target[len("http") :]
        async with self.session.ws_connect(url, params=query) as client:

            async def pump(source, sink):
                async for message in source:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(message.data)
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(message.data)
                    else:
                        break

            tasks = [
                asyncio.ensure_future(pump(server, client)),
                asyncio.ensure_future(pump(client, server)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        await server.close()
        return server

    async def do_start_cluster(self, cluster):
        """Upstream's local start, with the dashboard on a loopback port chosen here and
        recorded in the cluster's state (the only address the dashboard proxy uses)."""
        workdir = self.setup_working_directory(cluster)
        port = free_port()
        yield {"workdir": workdir, "dashboard_port": port}
        command = list(self.get_scheduler_command(cluster))
        if "--dashboard-address" in command:
            command[command.index("--dashboard-address") + 1] = f"127.0.0.1:{port}"
        pid = await self.start_process(
            cluster, command, self.get_scheduler_env(cluster), "scheduler"
        )
        yield {"workdir": workdir, "pid": pid, "dashboard_port": port}

    async def on_cluster_heartbeat(self, cluster_name, msg):
        """The scheduler's heartbeat, with the dashboard address the backend chose in
        place of the one reported (a scheduler holds its cluster's API token and could
        report any address)."""
        cluster = self.db.get_cluster(cluster_name)
        port = cluster.state.get("dashboard_port") if cluster is not None else None
        reported = msg.get("dashboard_address")
        pinned = f"http://127.0.0.1:{port}" if port is not None else ""
        if reported and reported != pinned:
            self.log.warning(
                "Cluster %s reported dashboard address %r; the gateway uses %r",
                cluster_name,
                reported,
                pinned,
            )
        await super().on_cluster_heartbeat(cluster_name, {**msg, "dashboard_address": pinned})

    async def _check_cluster_proxied(self, cluster):
        """Only the scheduler's TLS route goes into the proxy; dashboards are served by
        :meth:`_dashboard`, which checks ownership."""
        if not cluster.added_to_proxies:
            await self.proxy.add_route(
                kind="SNI", sni=cluster.name, target=cluster.scheduler_address
            )
            cluster.added_to_proxies = True
