"""Dashboards served by the gateway to their cluster's owner only.

The gateway's proxy does not route dashboards straight to the scheduler (upstream serves
them to anyone who knows the URL): the gateway serves a cluster's dashboard only to its
owner as identified by the viewer's own credentials (an ``Authorization`` header, or the
dashboard session the hub's OAuth set up; never a token from the link), only from the
loopback port the backend chose for that scheduler (a scheduler re-reporting its
``dashboard_address`` changes nothing), and with ``Content-Security-Policy: sandbox`` (no
``allow-same-origin``): scripts a scheduler serves run in an opaque origin and cannot read
the hub's pages or call its API with the viewer's cookies.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import psutil
from aiohttp import web
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.models import User

from afhub.services.gateway.auth import SESSION_COOKIE, is_document

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


def _with_query(path: str, request: web.Request) -> str:
    return path + (f"?{request.query_string}" if request.query_string else "")


def _upstream_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    """The scheduler's response headers the viewer gets, with the dashboard's policy."""
    out = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() not in _HOP_BY_HOP and k.lower() not in _DASHBOARD_DROPPED
    }
    location = out.pop("Location", None)
    if location is not None and "//" not in location and "\\" not in location:
        out["Location"] = location  # only a path on this origin
    out.update(DASHBOARD_HEADERS)
    return out


async def _pump(source, sink) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        else:
            break


class DashboardMixin:
    """The dashboard routes of :class:`~afhub.services.gateway.backend.AfhubLocalBackend`
    and the scheduler start that pins each dashboard to a loopback port."""

    def add_dashboard_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/clusters/{cluster_name}", self._dashboard)
        app.router.add_route("*", "/clusters/{cluster_name}/{tail:.*}", self._dashboard)

    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        """A dashboard request. A browser's page load is identified by the viewer's own
        login and sent on to ``clusters/NAME/~KEY/PAGE``, whose relative subresources
        (requested from the sandbox's opaque origin, without cookies) the key admits."""
        auth = request.app["authenticator"]
        name = request.match_info["cluster_name"]
        tail = request.match_info.get("tail", "")
        if tail.startswith("~"):
            return await self._granted_page(request, auth, name, tail)
        request["user"] = await auth.dashboard_user(request)
        if is_document(request) and request.method == "GET":
            self._owned_cluster(request["user"], name)
            key = auth.grant_page(name, request["user"].name)
            location = _with_query(f"{auth.service_prefix}clusters/{name}/~{key}/{tail}", request)
            raise web.HTTPFound(location, headers={"Cache-Control": "no-store"})
        return await self._dashboard_for_owner(request, tail)

    async def _granted_page(self, request, auth, name: str, tail: str) -> web.StreamResponse:
        """A request under ``~KEY/``: the key's grant names the cluster and its owner; a
        page load also needs the viewer's own login, as the owner."""
        key, _, rest = tail[1:].partition("/")
        grant = auth.page_grant(key)
        clean = _with_query(f"{auth.service_prefix}clusters/{name}/{rest}", request)
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
            # streamed: the gateway holds one chunk of a page at a time, whatever its size
            response = web.StreamResponse(
                status=upstream.status, headers=_upstream_headers(upstream)
            )
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
            tasks = [
                asyncio.ensure_future(_pump(server, client)),
                asyncio.ensure_future(_pump(client, server)),
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
