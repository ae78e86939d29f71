"""Kernels that act as their viewer: the token handed over at page view, the kernel's
environment, and who may talk to which kernel."""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyterhub.singleuser.extension import JupyterHubAuthorizer
from tornado import web
from tornado.ioloop import IOLoop
from traitlets import Dict, Integer

from afhub.web.dashboards.pool import KernelPool, handover_code, warmup_code


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


def neutral_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a kernel before it has a viewer (a prepared kernel's): the
    harmless part of ``env`` and the services' URLs; no token, no request."""
    kept = {k: v for k, v in env.items() if k in KEPT}
    kept.update({k: os.environ[k] for k in SERVICE_URLS if k in os.environ})
    return kept


def kernel_environment(env: Mapping[str, str], viewer: Viewer) -> dict[str, str]:
    """A page view's kernel's environment: :func:`neutral_environment`, the request's
    variables in ``env`` and the viewer's name and token (``JUPYTERHUB_API_TOKEN``, so
    ``FitClient()`` works as is)."""
    kept = neutral_environment(env)
    kept.update({k: v for k, v in env.items() if k.startswith(REQUEST_PREFIXES)})
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


#: seconds a prepared kernel may take to start and import what the dashboards import
WARMUP_SECONDS = 120
#: seconds a prepared kernel may take to take on its viewer before the page view starts
#: a kernel of its own
HANDOVER_SECONDS = 10
#: where prepared kernels run: the server's root, the dashboards' folder (``voila-apps/``,
#: where Voila runs the dashboards' notebooks)
POOL_PATH = ""


async def run_code(kernel: Any, code: str, timeout: float, *, wait: bool = False) -> None:
    """Run ``code`` in ``kernel`` silently (nothing on its output channel, nothing in its
    history), after the kernel answers when ``wait``; RuntimeError when the code fails,
    TimeoutError when the kernel does not answer within ``timeout`` seconds."""
    client = kernel.client()
    # S604: ``shell`` is the kernel's shell channel, not a system shell
    client.start_channels(shell=True, iopub=wait, stdin=False, hb=False, control=False)  # noqa: S604
    try:
        async with asyncio.timeout(timeout):
            if wait:
                await client.wait_for_ready()
            msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False)
            reply = await client.get_shell_msg()
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = await client.get_shell_msg()
    finally:
        client.stop_channels()
    content = reply["content"]
    if content["status"] != "ok":
        raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")


class ViewerKernelManager(AsyncMappingKernelManager):
    """Starts a kernel only for a page view, in its viewer's name; remembers whose it is.

    With ``pool_size`` > 0 it keeps that many kernels prepared (:mod:`.pool`): started
    without a viewer, owned by nobody (so :class:`ViewerAuthorizer` lets nobody reach
    them), never culled, shut down with the server. A page view takes one, hands its
    viewer's identity into it and a new one is prepared in its place."""

    owners = Dict(help="kernel id -> the name of the viewer it was started for")
    pool_size = Integer(
        2,
        help="""Kernels kept started and warmed (the dashboards' imports done) ahead of
        page views; each serves one page view of one viewer. 0: none, every page view
        waits for a new kernel.""",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool = KernelPool(self.pool_size)
        self._refill: asyncio.Future | None = None
        if self.pool_size:
            IOLoop.current().add_callback(self.refill_pool)

    async def start_kernel(self, *, kernel_id: str | None = None, path: str | None = None, **kw):
        viewer = VIEWER.get()
        if viewer is None:
            raise web.HTTPError(403, "kernels start only for a dashboard's page view")
        env = kernel_environment(kw.get("env") or {}, viewer)
        prepared = None
        if kernel_id is None and self._poolable(path, kw.get("kernel_name")):
            prepared = await self._take_prepared(env)
        if prepared is None:
            kw["env"] = env
            prepared = await super().start_kernel(kernel_id=kernel_id, path=path, **kw)
        self.owners[prepared] = viewer.name
        return prepared

    def _poolable(self, path: str | None, kernel_name: str | None) -> bool:
        """A prepared kernel fits: the same folder and the default kernel."""
        if not self.pool_size or path is None:
            return False
        if kernel_name not in (None, self.default_kernel_name):
            return False
        return self.cwd_for_path(path) == self.cwd_for_path(POOL_PATH)

    async def _take_prepared(self, env: dict[str, str]) -> str | None:
        """A prepared kernel that now has ``env`` (the viewer's identity, the request's
        variables); None when none is ready. Its place is refilled."""
        while (taken := self.pool.take()) is not None:
            kernel_id, started_with = taken
            self.refill_pool()
            try:
                kernel = self.get_kernel(kernel_id)
                await run_code(kernel, handover_code(started_with, env), HANDOVER_SECONDS)
            except (KeyError, RuntimeError, TimeoutError) as exc:
                self.log.warning("prepared kernel %s refused its viewer: %s", kernel_id, exc)
                await self._shut_down(kernel_id)
                continue
            self.log.info("page view on prepared kernel %s", kernel_id)
            return kernel_id
        self.refill_pool()
        return None

    def refill_pool(self) -> None:
        """Prepare kernels in the background, one at a time (page views rendering at the
        same time keep the other cores), until ``pool_size`` are ready."""
        idle = self._refill is None or self._refill.done()
        if idle and self.pool.shortfall():
            self._refill = asyncio.ensure_future(self._prepare_kernels())

    async def _prepare_kernels(self) -> None:
        while self.pool.shortfall():
            self.pool.preparing = 1
            try:
                kernel_id, env = await self._prepare_kernel()
            except Exception:  # any failure to start: logged; page views start their own
                self.log.exception("a prepared kernel did not start")
                return  # the next page view tries again
            finally:
                self.pool.preparing = 0
            if self.pool.add(kernel_id, env):
                self.log.info("prepared kernel %s ready (%d ready)", kernel_id, len(self.pool))
            else:
                await self._shut_down(kernel_id)

    async def _prepare_kernel(self) -> tuple[str, dict[str, str]]:
        """A kernel started without a viewer that has imported what the dashboards import;
        its id and environment."""
        env = neutral_environment(os.environ)
        kernel_id = await super().start_kernel(path=POOL_PATH, env=env)
        try:
            await run_code(self.get_kernel(kernel_id), warmup_code(), WARMUP_SECONDS, wait=True)
        except BaseException:
            await self._shut_down(kernel_id)
            raise
        return kernel_id, env

    async def _shut_down(self, kernel_id: str) -> None:
        self.pool.discard(kernel_id)
        if kernel_id in self:
            await self.shutdown_kernel(kernel_id, now=True)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if kernel_id in self.pool:  # a prepared kernel waits, idle, for its page view
            return
        await super().cull_kernel_if_idle(kernel_id)

    async def shutdown_all(self, now: bool = False) -> None:
        """Stop preparing kernels, then shut every kernel down, prepared ones included."""
        self.pool.close()
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.gather(self._refill, return_exceptions=True)
        await super().shutdown_all(now=now)

    def remove_kernel(self, kernel_id: str) -> Any:
        self.owners.pop(kernel_id, None)
        self.pool.discard(kernel_id)
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
