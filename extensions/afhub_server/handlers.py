"""The REST handlers under ``/afhub/api/`` in a person's server, one per resource.

Authenticated and authorized exactly as the server's own API handlers (jupyter_server's
``APIHandler``, tornado's ``@web.authenticated``, jupyter_server's ``@authorized``): only
the server's owner (and whoever JupyterHub lets reach this server) gets an answer. Each
handler calls a hub service with the server's own token (:mod:`afhub_server.hub`); a 4xx of
the service passes through with its message, an unreachable service is a 503.

- ``GET /afhub/api/quota``: my groups, the group this server is charged to with what is
  left of each limit, and any warning or pending stop with its time;
- ``GET /afhub/api/fits``: my fit jobs (the fitting service's ``jobs``);
- ``GET /afhub/api/contributions``: my provider's contributions (the facility API's
  ``contributions``, which answers 403 to anyone who is not a provider's contact).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from afhub_server.hub import HubServiceError, get_json
from afhub_server.summary import quota_summary

#: the resource name jupyter_server's authorizer is asked about
AUTH_RESOURCE = "afhub"
#: query arguments passed on to the services (everything else is refused)
FITS_ARGUMENTS = ("state", "limit")
CONTRIBUTIONS_ARGUMENTS = ("provider", "period", "since", "until", "top")


class AfhubHandler(APIHandler):
    """Errors as ``{"error": message, "status": code}``, like the hub services."""

    auth_resource = AUTH_RESOURCE

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = "internal error; the server's log has the details"
        exc = (kwargs.get("exc_info") or (None, None))[1]
        if isinstance(exc, HubServiceError):
            status_code, message = exc.status, exc.message
            self.set_status(status_code)
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message or exc.reason or "request refused"
        elif status_code == 404:
            message = "no such API path"
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": message, "status": status_code}))

    def passed_arguments(self, allowed: tuple[str, ...]) -> dict[str, str]:
        """The query arguments a service is given; an unknown one is a 400. A bare number
        is JupyterLab's cache buster (``ServerConnection.makeRequest``), not an argument."""
        names = {name for name in self.request.arguments if not name.isdigit()}
        unknown = sorted(names - set(allowed))
        if unknown:
            raise web.HTTPError(
                400,
                f"unknown query argument(s): {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed) or 'none'}",
            )
        return {name: self.get_query_argument(name) for name in names}

    def send(self, payload: object) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))


def charged_group(me: dict) -> str | None:
    """The group this server is charged to: ``$AFHUB_CHARGED_GROUP``, set by the hub at
    admission, else the person's default group (what the hub charges by default)."""
    return os.environ.get("AFHUB_CHARGED_GROUP") or me.get("default_group")


class QuotaHandler(AfhubHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.passed_arguments(())
        me = await get_json("facility", "users/me")
        group = charged_group(me)
        if not group:
            raise HubServiceError(
                404, "this server is charged to no group and you have no default group"
            )
        quota = await get_json("facility", f"groups/{quote(group, safe='/')}/-/quota")
        server_name = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        self.send(quota_summary(me, quota, group, server_name))


class FitsHandler(AfhubHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send(await get_json("fitting", "jobs", self.passed_arguments(FITS_ARGUMENTS)))


class ContributionsHandler(AfhubHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        arguments = self.passed_arguments(CONTRIBUTIONS_ARGUMENTS)
        self.send(await get_json("facility", "contributions", arguments))


def handlers(base_url: str) -> list[tuple[str, type[AfhubHandler]]]:
    """The routes, under the server's base URL (``/user/<name>/``)."""
    prefix = base_url.rstrip("/") + "/afhub/api/"
    return [
        (prefix + "quota", QuotaHandler),
        (prefix + "fits", FitsHandler),
        (prefix + "contributions", ContributionsHandler),
    ]
