"""Kernels that act as their viewer: the token handed over at page view, the kernel's
environment, and who may talk to which kernel."""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass
from typing import Any

import requests
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyterhub.singleuser.extension import JupyterHubAuthorizer
from tornado import web
from traitlets import Dict


@dataclass(frozen=True)
class Viewer:
    """The person a page view is for, with their own OAuth token (never the service's)."""

    name: str
    token: str


#: the viewer of the page view being rendered: set by :func:`prelaunch`, read by
#: :meth:`ViewerKernelManager.start_kernel` in the same request's task
VIEWER: contextvars.ContextVar[Viewer | None] = contextvars.ContextVar("afhub_viewer", default=None)

#: what a kernel keeps of the service's environment; everything else (the service's API
#: token, the hub's addresses, the facility database's URL, ...) stays out of it
KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
#: what Voila adds for the page (CGI-style request variables and its own ``VOILA_*``)
REQUEST_PREFIXES = ("VOILA_", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_")
#: the services' public URLs, passed from the service's environment to kernels
SERVICE_URLS = ("AFHUB_FACILITY_URL", "AFHUB_FITTING_URL")


def kernel_environment(env: dict[str, str], viewer: Viewer) -> dict[str, str]:
    """A kernel's environment: the harmless part of ``env``, the services' URLs and the
    viewer's name and token (``JUPYTERHUB_API_TOKEN``, so ``FitClient()`` works as is)."""
    kept = {k: v for k, v in env.items() if k in KEPT or k.startswith(REQUEST_PREFIXES)}
    kept.update({k: os.environ[k] for k in SERVICE_URLS if k in os.environ})
    kept["JUPYTERHUB_USER"] = viewer.name
    kept["JUPYTERHUB_API_TOKEN"] = viewer.token
    return kept


def prelaunch(handler: web.RequestHandler, notebook: Any, cwd: str) -> None:  # noqa: ARG001
    """Voila's ``prelaunch_hook``: remember the viewer and their OAuth token (from the
    request's OAuth cookie) for the kernel this page view starts."""
    user = handler.current_user
    hub_auth = handler.identity_provider.hub_auth
    token = hub_auth.get_token(handler)
    if user is None or not token:
        raise web.HTTPError(403, "a dashboard is shown only to a person logged in to the hub")
    viewer = Viewer(name=user.username, token=token)
    refuse_unless_allowed(handler, notebook, viewer)
    VIEWER.set(viewer)


def refuse_unless_allowed(handler: web.RequestHandler, notebook: Any, viewer: Viewer) -> None:
    """403 for the page itself when the facility API refuses the viewer the resource the
    notebook names in its metadata (``afhub.access_check``: ``path``, default ``params``
    and the page's query arguments passed on, ``from_query``), so that a person who may not
    see a dashboard gets no page and no kernel."""
    check = (notebook.metadata.get("afhub") or {}).get("access_check")
    if not check:
        return
    params = dict(check.get("params") or {})
    for name in check.get("from_query") or ():
        value = handler.get_query_argument(name, None)
        if value is not None:
            params[name] = value
    url = os.environ.get("AFHUB_FACILITY_URL", "").rstrip("/") + "/api/" + check["path"]
    headers = {"Authorization": f"token {viewer.token}"}
    try:
        response = requests.get(url, params=params, headers=headers, timeout=15)
    except requests.RequestException:
        raise web.HTTPError(502, "the facility API did not answer; try again") from None
    if response.status_code in (401, 403):
        try:
            reason = str(response.json().get("error"))
        except ValueError:
            reason = "not allowed"
        # Voila's error page shows the status line: the reason is the API's message
        raise web.HTTPError(403, reason, reason=" ".join(reason.split())[:300])


class ViewerKernelManager(AsyncMappingKernelManager):
    """Starts a kernel only for a page view, in its viewer's name; remembers whose it is."""

    owners = Dict(help="kernel id -> the name of the viewer it was started for")

    async def start_kernel(self, *, kernel_id: str | None = None, path: str | None = None, **kw):
        viewer = VIEWER.get()
        if viewer is None:
            raise web.HTTPError(403, "kernels start only for a dashboard's page view")
        kw["env"] = kernel_environment(kw.get("env") or {}, viewer)
        kernel_id = await super().start_kernel(kernel_id=kernel_id, path=path, **kw)
        self.owners[kernel_id] = viewer.name
        return kernel_id

    def remove_kernel(self, kernel_id: str) -> Any:
        self.owners.pop(kernel_id, None)
        return super().remove_kernel(kernel_id)

    def owner(self, kernel_id: str | None) -> str | None:
        return self.owners.get(kernel_id) if kernel_id else None


#: what the dashboards never serve to anyone: files and notebooks through the REST API,
#: sessions, terminals (a viewer could read or change the dashboards, or run a shell)
REFUSED = frozenset({"contents", "files", "sessions", "terminals"})


class ViewerAuthorizer(JupyterHubAuthorizer):
    """The hub's access check, then: a kernel (its model, channels, interrupt) only for
    its own viewer; no kernel listing or starting through the REST API; nothing else
    written; no files, sessions or terminals."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        if not super().is_authorized(handler, user, action, resource):
            return False
        if resource in REFUSED:
            return False
        if resource == "kernels":
            # one's own kernel only: its model, its channels (no listing, no other's)
            kernel_id = getattr(handler, "kernel_id", None) or handler.path_kwargs.get("kernel_id")
            owner = handler.kernel_manager.owner(kernel_id)
            return owner is not None and owner == user.username
        return action == "read"
