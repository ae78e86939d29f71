"""A hub service's tornado application: its routes under the service's prefix, between the
OpenAPI document and the 404 for any other path, authenticated through ``HubOAuth``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyterhub.services.auth import HubOAuth
from tornado import web

from afhub.services.kit.handlers import NotFoundHandler, openapi_handler


def service_prefix(prefix: str | None, default: str) -> str:
    """The URL prefix the hub routes to the service (``$JUPYTERHUB_SERVICE_PREFIX``, else
    ``default``), ending with ``/``."""
    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", default)
    return prefix if prefix.endswith("/") else prefix + "/"


def service_routes(
    prefix: str,
    openapi: Path,
    api: Sequence[tuple[str, type]],
    pages: Sequence[tuple[str, type]] = (),
) -> list[tuple[str, type]]:
    """``prefix/api/openapi.yaml`` (the document at ``openapi``), the ``api`` routes under
    ``prefix/api/``, the ``pages`` under ``prefix``, and the 404 for anything else."""
    return [
        (prefix + r"api/openapi\.yaml", openapi_handler(openapi)),
        *[(prefix + "api/" + pattern, handler) for pattern, handler in api],
        *[(prefix + pattern, handler) for pattern, handler in pages],
        (prefix + r".*", NotFoundHandler),
    ]


def service_application(
    routes: list[tuple[str, type]],
    *,
    hub_auth: HubOAuth | None = None,
    cookie_secret: bytes | None = None,
    **settings: Any,
) -> web.Application:
    """The service's application; ``settings`` are what its handlers read."""
    return web.Application(
        routes,
        hub_auth=hub_auth or HubOAuth(cache_max_age=60),
        cookie_secret=cookie_secret or os.urandom(32),
        xsrf_cookies=False,
        default_handler_class=NotFoundHandler,
        **settings,
    )
