"""The gateway's HTTP answers: every error as JSON with a message, malformed credentials a
401, cross-site requests that change something refused, nothing sniffed or run as a page,
and a capped scale request answered with its reason."""

from __future__ import annotations

import contextvars
import logging

from aiohttp import web

from afhub.services.gateway.auth import (
    INVALID,
    URL_CREDENTIALS_REFUSED,
    has_secret_parameter,
    parse_authorization,
)

#: methods that change something: refused when the browser says the request is cross-site
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CROSS_SITE = (
    "cross-site request refused: the Dask gateway's API takes requests from API clients "
    "(dask_gateway.Gateway, with 'Authorization: jupyterhub TOKEN'), not from other sites' "
    "pages"
)
INTERNAL_ERROR = "internal error in the Dask gateway; the operators can see it in the gateway's log"
#: a capped scale request's message, read by the middleware for the response
_scale_notices: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "afhub_scale_notices", default=None
)


def tell_the_scaler(notice: str) -> None:
    """Answer the scale request being handled (if any) with ``notice`` (``ok: false``)."""
    notices = _scale_notices.get()
    if notices is not None:
        notices.append(notice)


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


async def safe_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """Every answer of the gateway (JSON errors included) is never sniffed into a page
    and, unless a dashboard's own policy is set, renders as nothing that can run."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'none'; sandbox; frame-ancestors 'none'"
    )


def _refusal(request: web.Request, log: logging.Logger) -> web.Response | None:
    """The answer to a request refused before its handler runs (``None``: not refused)."""
    if request.path != "/oauth_callback" and has_secret_parameter(request.query):
        return web.json_response({"error": URL_CREDENTIALS_REFUSED}, status=400)
    if request.method not in _SAFE_METHODS and is_cross_site(request):
        log.warning("Refused a cross-site %s %s", request.method, request.path)
        return web.json_response({"error": CROSS_SITE}, status=403)
    header = request.headers.get("Authorization")
    if header is not None and parse_authorization(header) is None:
        return web.json_response(
            {"error": INVALID}, status=401, headers={"WWW-Authenticate": "jupyterhub"}
        )
    return None


#: where the gateway's proxy reads its routes (``?watch=1``: a stream of route changes)
ROUTES_PATH = "/api/v1/routes"


async def routes_for_the_proxy(request: web.Request, handler, log: logging.Logger):
    """The routes for the gateway's proxy. The proxy ends each watch of the routes after
    60 s (its HTTP client's timeout) and starts a new one; the gateway learns that a watch
    was ended only when it next writes to it, at the next route change. So the first
    cluster after a quiet time met one ended watch per quiet minute, each logged by aiohttp
    as a traceback ("Cannot write to closing transport"). Such a watch is over, not an
    error: the answer goes nowhere (aiohttp sees the closed connection and logs nothing)."""
    try:
        return await handler(request)
    except ConnectionResetError:
        log.debug("The gateway's proxy had ended a watch of its routes")
        return web.Response(status=204)


def json_answers(log: logging.Logger):
    """The gateway's middleware (see the module's docstring)."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path == ROUTES_PATH:  # the gateway's own proxy, token-checked
            return await routes_for_the_proxy(request, handler, log)
        refused = _refusal(request, log)
        if refused is not None:
            return refused
        notices: list[str] = []
        token = _scale_notices.set(notices)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k == "WWW-Authenticate"}
            return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
        except Exception:  # any crash is a JSON 500 without details; the log has them
            log.exception("Unexpected error handling %s %s", request.method, request.path)
            return web.json_response({"error": INTERNAL_ERROR}, status=500)
        finally:
            _scale_notices.reset(token)
        if notices and request.path.endswith("/scale") and response.status == 200:
            return web.json_response({"ok": False, "msg": notices[-1]})
        return response

    return middleware
