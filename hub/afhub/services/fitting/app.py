"""Build and run the fitting service (a hub-managed JupyterHub service).

Run by the hub as ``python -m afhub.services.fitting``; it reads the environment a
hub-managed service gets (``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_PREFIX``,
``JUPYTERHUB_SERVICE_URL``, ...), ``AFHUB_DB_URL`` and its settings
(:class:`~afhub.services.fitting.config.FittingService`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpserver import HTTPServer

from afhub.services.fitting.config import FittingService, load_fitting_settings
from afhub.services.fitting.jobs import JOB_ID, JobHandler, JobsHandler, ResultsHandler, Submissions
from afhub.services.fitting.scheduler import Scheduler, StartError
from afhub.services.kit.app import service_application, service_prefix, service_routes
from afhub.services.kit.handlers import pages_redirect
from afhub.services.kit.lifecycle import ParentWatch, on_stop_signals
from afhub.stores.facade import Stores

log = logging.getLogger("afhub.fitting")
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


def routes(prefix: str) -> list[tuple]:
    return service_routes(
        prefix,
        OPENAPI_PATH,
        [
            (r"jobs/?", JobsHandler),
            (r"jobs/" + JOB_ID + r"/results", ResultsHandler),
            (r"jobs/" + JOB_ID, JobHandler),
        ],
        [(r"", pages_redirect("usage"))],  # a browser at the service's root: My usage
    )


def make_app(
    stores: Stores,
    scheduler: Scheduler,
    config: FittingService,
    *,
    prefix: str | None = None,
    hub_auth: HubOAuth | None = None,
) -> web.Application:
    """The tornado application. ``prefix`` defaults to ``$JUPYTERHUB_SERVICE_PREFIX``."""
    prefix = service_prefix(prefix, "/services/fitting/")
    return service_application(
        routes(prefix),
        hub_auth=hub_auth,
        afhub_stores=stores,
        afhub_fits=scheduler.fits,
        afhub_scheduler=scheduler,
        afhub_fitting=config,
        afhub_prefix=prefix,
        afhub_submissions=Submissions(),
        afhub_validators=ThreadPoolExecutor(config.max_validations, "fit-validate"),
    )


async def serve(config: FittingService) -> None:
    stores = Stores.open()
    scheduler = Scheduler(stores.fits, stores.ledger, config, registry=stores.registry)
    try:
        await scheduler.start()
    except StartError:
        stores.close()
        raise
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8083"))
    server = HTTPServer(
        make_app(stores, scheduler, config),
        # above the service's own limit, so that oversized bodies get a 413 with a message
        max_body_size=2 * config.max_body_bytes + 1024 * 1024,
    )
    server.listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info(
        "fitting service on %s: %s executor, %d worker cores, batched engine on %s",
        url.geturl(),
        config.executor,
        scheduler.pool.size,
        (scheduler.device or {}).get("device", "cpu"),
    )
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    await ParentWatch().wait(step=2, stop=stop)
    log.info("fitting service stopping")
    server.stop()
    await scheduler.stop()
    stores.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    # one thread per worker process: the pool is the parallelism (the batched engine sets
    # its own torch threads)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    try:
        config = load_fitting_settings()
    except ValueError as exc:
        print(f"afhub fitting service: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(config))
    except StartError as exc:
        print(f"afhub fitting service: {exc}", file=sys.stderr)
        sys.exit(2)
