"""JupyterHub authentication for the gateway: tokens in headers, browsers through the hub.

Upstream's ``JupyterHubAuthenticator`` answers a token the hub rejects with HTTP 500
("Permission failure verifying user's JupyterHub API token"), crashes on an
``Authorization`` header without a scheme, and after any authenticated request sets a
cookie (``Path=/``, no ``HttpOnly``, no ``SameSite``) that then authenticates the whole
gateway API, so a cross-site ``text/plain`` POST could create or scale a cluster as the
victim. Here:

- **The API** (``/api/v1/...``) accepts only ``Authorization: jupyterhub TOKEN`` (what
  ``dask_gateway.JupyterHubAuth`` sends), ``token TOKEN`` or ``bearer TOKEN``. A cookie
  never authenticates it, so a cross-site request (which cannot set that header) is
  anonymous; verified tokens are remembered by their SHA-256 for ``cache_max_age``
  seconds, never by a cookie.
- **Tokens in URLs** (``?token=``, ``?access_token=``) are refused everywhere with a 400
  that says what to send instead: a link that carries a token lets whoever opens it act
  as the token's owner, and it lands in browser history and access logs.
- **Dashboards in a browser** identify the *viewer* through the hub's OAuth (the gateway
  is the hub's OAuth client ``service-dask-gateway``): a page load without a dashboard
  session is redirected to the hub, which logs the viewer in and sends them back with a
  one-time code; the gateway then sets a session cookie that is ``HttpOnly``,
  ``SameSite=Lax``, ``Path`` limited to ``{prefix}clusters/`` and ``Secure`` over https,
  accepted by the dashboard routes only. The dashboard handler serves a cluster only to
  its owner (see :mod:`.backend`).
- every token problem is a 401 whose message says what to do; only an unreachable hub
  is a 502.

Usernames are the hub's names unchanged (``github:octocat`` stays ``github:octocat``, the
name under which the facility database knows the user); upstream prefixed any name with a
colon as ``user:github:octocat``. Tokens of services are refused: the gateway serves
users.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections import OrderedDict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web
from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.models import User
from traitlets import Integer, Unicode, default

from afhub.services.kit.bodies import CREDENTIAL_PARAMETERS

MISSING = (
    "authentication required: send your JupyterHub token as 'Authorization: jupyterhub "
    "TOKEN' (inside a facility server, dask_gateway.Gateway() does this)"
)
INVALID = (
    "the JupyterHub token is not valid (unknown, expired or revoked): use the token of "
    "your server (JUPYTERHUB_API_TOKEN) or create a new one on the hub's token page"
)
URL_CREDENTIALS_REFUSED = (
    "tokens in URLs are refused (a link with a token acts as its owner for whoever opens "
    "it, and URLs end up in logs and browser history): send 'Authorization: jupyterhub "
    "TOKEN'; in a browser open the dashboard link without a token and log in to the hub"
)
NOT_A_USER = "the Dask gateway serves users: this token belongs to a service, not a user"
DASHBOARD_LOGIN = (
    "log in to the hub to see this dashboard: open it in a browser (you are sent to the "
    "hub's login), or send your JupyterHub token as 'Authorization: jupyterhub TOKEN'"
)
#: query parameters that carry credentials (refused in requests, scrubbed from logs; the
#: OAuth ``code`` is taken on the OAuth callback only)
SECRET_PARAMETERS = frozenset(CREDENTIAL_PARAMETERS)
_PAGE_KEY = re.compile(r"/~[A-Za-z0-9_-]+")
#: the dashboard session cookie (the API never reads a cookie)
SESSION_COOKIE = "afhub-dask-dashboard"
#: the OAuth state cookie (binds the hub's answer to the browser that asked)
STATE_COOKIE = "afhub-dask-oauth-state"
#: how many verified tokens / sessions / pending logins are remembered at most
MAX_ENTRIES = 10_000


def unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(headers={"WWW-Authenticate": "jupyterhub"}, reason=message)


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """``(scheme, credential)`` of an ``Authorization`` header, ``None`` when malformed."""
    if header is None:
        return None
    scheme, _, credential = header.strip().partition(" ")
    if not scheme or not credential.strip():
        return None
    return scheme.lower(), credential.strip()


def has_secret_parameter(query) -> bool:
    """Whether a request's query (a multidict) carries a credential (``?token=``, ...)."""
    return any(key.lower() in SECRET_PARAMETERS for key in query)


def scrub_url(path_qs: str) -> str:
    """``path_qs`` with the values of credential parameters and dashboard page keys
    (``/~KEY/``) replaced by ``[secret]`` (for access logs: a refused ``?token=`` must not
    land in a log either)."""
    path_qs = _PAGE_KEY.sub("/~[secret]", path_qs)
    parts = urlsplit(path_qs)
    if not parts.query:
        return path_qs
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    cleaned = [(k, "[secret]" if k.lower() in SECRET_PARAMETERS else v) for k, v in pairs]
    return urlunsplit(parts._replace(query=urlencode(cleaned, safe="[]")))


def hub_username(model: dict) -> str:
    """The name the facility knows the token's owner by: the hub's name, unchanged.
    Raises a 401 for service tokens."""
    if model.get("kind", "user") != "user":
        raise unauthorized(NOT_A_USER)
    return str(model["name"])


class _Expiring:
    """A bounded map whose entries expire ``max_age`` seconds after they were put."""

    def __init__(self, max_age: float, size: int = MAX_ENTRIES) -> None:
        self.max_age = max_age
        self.size = size
        self._items: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def get(self, key: str):
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] + self.max_age < time.monotonic():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: str, value) -> None:
        self._items[key] = (time.monotonic(), value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def pop(self, key: str):
        item = self._items.pop(key, None)
        return None if item is None else item[1]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AfhubHubAuthenticator(JupyterHubAuthenticator):
    """``JupyterHubAuthenticator`` with header-only API tokens, 401s that say what is
    wrong, and dashboards identified through the hub's OAuth."""

    service_prefix = Unicode(
        help="The gateway's public path prefix (``$JUPYTERHUB_SERVICE_PREFIX``).", config=True
    )
    oauth_client_id = Unicode(help="``$JUPYTERHUB_CLIENT_ID``.", config=True)
    oauth_redirect_uri = Unicode(help="``$JUPYTERHUB_OAUTH_CALLBACK_URL``.", config=True)
    hub_prefix = Unicode(help="The hub's public path (``$JUPYTERHUB_BASE_URL`` + hub/).")
    session_max_age = Integer(
        600,
        help="""Seconds a dashboard session is trusted before the gateway asks the hub again
        whether the viewer's OAuth token is still valid.""",
        config=True,
    )
    secure_cookies = Unicode(
        "auto",
        help="""``Secure`` flag of the gateway's cookies: ``auto`` (when the hub's public URL
        or the request is https), ``true`` or ``false``.""",
        config=True,
    )

    @default("service_prefix")
    def _d_service_prefix(self) -> str:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/dask-gateway/")
        return prefix if prefix.endswith("/") else prefix + "/"

    @default("oauth_client_id")
    def _d_client_id(self) -> str:
        return os.environ.get("JUPYTERHUB_CLIENT_ID", "service-dask-gateway")

    @default("oauth_redirect_uri")
    def _d_redirect_uri(self) -> str:
        return os.environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL") or (
            self.service_prefix + "oauth_callback"
        )

    @default("hub_prefix")
    def _d_hub_prefix(self) -> str:
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        return (base if base.endswith("/") else base + "/") + "hub/"

    # -- set-up ------------------------------------------------------------------------------

    async def setup(self, app: web.Application) -> None:
        await super().setup(app)
        self._tokens = _Expiring(self.cache_max_age)
        self._sessions = _Expiring(24 * 3600)
        self._logins = _Expiring(600)
        self._pages = _Expiring(self.session_max_age * 6)
        app.router.add_get("/oauth_callback", self._oauth_callback)

    # -- API: tokens in the Authorization header only ------------------------------------------

    def get_token(self, request: web.Request) -> str | None:
        parsed = parse_authorization(request.headers.get("Authorization"))
        if parsed is not None and parsed[0] in ("jupyterhub", "token", "bearer"):
            return parsed[1]
        return None

    async def authenticate_and_handle(self, request: web.Request, handler):
        """Upstream's entry point for every user-authenticated API route, without its
        cookie: the ``Authorization`` header on every request (cached by digest)."""
        request["user"] = await self.authenticate(request)
        return await handler(request)

    async def authenticate(self, request: web.Request) -> User:
        if has_secret_parameter(request.query):
            raise web.HTTPBadRequest(reason=URL_CREDENTIALS_REFUSED)
        token = self.get_token(request)
        if token is None:
            raise unauthorized(MISSING)
        return await self.user_for_token(token)

    async def user_for_token(self, token: str) -> User:
        key = _digest(token)
        user = self._tokens.get(key) if hasattr(self, "_tokens") else None
        if user is not None:
            return user
        user = self._user_from_model(await self._hub_user(token))
        if hasattr(self, "_tokens"):
            self._tokens.put(key, user)
        return user

    async def _hub_user(self, token: str) -> dict:
        try:
            resp = await self.session.get(
                f"{self.jupyterhub_api_url}/user",
                headers={"Authorization": f"token {token}"},
                ssl=self.ssl_context,
            )
        except OSError:
            self.log.error("Cannot reach JupyterHub at %s", self.jupyterhub_api_url)
            raise web.HTTPBadGateway(reason="the hub cannot be reached; try again") from None
        async with resp:
            if resp.status in (401, 403, 404):
                raise unauthorized(INVALID)
            if resp.status >= 400:
                self.log.error("JupyterHub answered %s verifying a token", resp.status)
                raise web.HTTPBadGateway(reason="the hub could not verify the token; try again")
            return await resp.json()

    def _user_from_model(self, data: dict) -> User:
        username = hub_username(data)
        if self.use_service_access_scopes:
            name = self.jupyterhub_service_name
            wanted = {"access:services", f"access:services!service={name}"}
            if not wanted & set(data.get("scopes", [])):
                raise unauthorized(
                    f"this token may not use the {name!r} service: it lacks the scope "
                    f"access:services!service={name}"
                )
        user = User(username, groups=data.get("groups", []), admin=data.get("admin", False))
        user.started_by = started_by_server(username, data.get("scopes", []))
        return user

    # -- dashboards: the viewer's own credentials ----------------------------------------------

    async def dashboard_user(self, request: web.Request) -> User:
        """The viewer of a dashboard: the ``Authorization`` header, else the dashboard
        session cookie set after the hub's OAuth. A browser page load without either is
        redirected to the hub's login; anything else is a 401."""
        if has_secret_parameter(request.query):
            raise web.HTTPBadRequest(reason=URL_CREDENTIALS_REFUSED)
        if self.get_token(request) is not None:
            return await self.authenticate(request)
        session = request.cookies.get(SESSION_COOKIE)
        entry = self._sessions.get(session) if session else None
        if entry is not None:
            access_token, user, checked = entry
            if checked + self.session_max_age >= time.monotonic():
                return user
            try:
                user = self._user_from_model(await self._hub_user(access_token))
            except web.HTTPUnauthorized:
                self._sessions.pop(session)
            else:
                self._sessions.put(session, (access_token, user, time.monotonic()))
                return user
        if request.method in ("GET", "HEAD") and _is_page_load(request):
            raise self._login_redirect(request)
        raise unauthorized(DASHBOARD_LOGIN)

    # -- the subresources of a dashboard page ----------------------------------------------------

    def grant_page(self, cluster_name: str, username: str) -> str:
        """A key for the subresources of one dashboard page the owner just opened.

        The page runs in an opaque origin (``Content-Security-Policy: sandbox``), so to
        the browser its scripts, styles and websockets are cross-site requests and carry
        no ``SameSite`` cookie. They are addressed under ``clusters/NAME/~KEY/`` instead
        (the page's relative URLs resolve there): the key reads that cluster's dashboard
        and nothing else, for as long as a dashboard session lasts; a page load under it
        still needs the owner's own login (:meth:`page_grant` callers check)."""
        key = secrets.token_urlsafe(24)
        self._pages.put(key, (cluster_name, username))
        return key

    def page_grant(self, key: str) -> tuple[str, str] | None:
        """``(cluster name, owner)`` of a page key, ``None`` when unknown or expired."""
        return self._pages.get(key) if key else None

    def _login_redirect(self, request: web.Request) -> web.HTTPFound:
        state = secrets.token_urlsafe(24)
        browser = secrets.token_urlsafe(24)
        # back to the page asked for: a path under the gateway's prefix, nothing else
        next_url = self.service_prefix + request.path_qs.lstrip("/")
        self._logins.put(state, (browser, next_url))
        query = urlencode(
            {
                "client_id": self.oauth_client_id,
                "redirect_uri": self.oauth_redirect_uri,
                "response_type": "code",
                "state": state,
            }
        )
        response = web.HTTPFound(f"{self.hub_prefix}api/oauth2/authorize?{query}")
        self._set_cookie(
            request, response, STATE_COOKIE, browser, self.service_prefix + "oauth_callback", 600
        )
        return response

    async def _oauth_callback(self, request: web.Request) -> web.StreamResponse:
        state = request.query.get("state", "")
        code = request.query.get("code", "")
        login = self._logins.pop(state) if state else None
        browser = request.cookies.get(STATE_COOKIE)
        if login is None or not code or browser is None or login[0] != browser:
            raise web.HTTPBadRequest(
                reason="this login link is not valid or has expired (it only works once, in "
                "the browser that asked for it): open the dashboard link again"
            )
        access_token = await self._token_for_code(code)
        user = self._user_from_model(await self._hub_user(access_token))
        session = secrets.token_urlsafe(32)
        self._sessions.put(session, (access_token, user, time.monotonic()))
        response = web.HTTPFound(login[1])
        self._set_cookie(
            request,
            response,
            SESSION_COOKIE,
            session,
            self.service_prefix + "clusters/",
            self.session_max_age * 6,
        )
        response.del_cookie(STATE_COOKIE, path=self.service_prefix + "oauth_callback")
        raise response

    async def _token_for_code(self, code: str) -> str:
        data = {
            "client_id": self.oauth_client_id,
            "client_secret": self.jupyterhub_api_token,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.oauth_redirect_uri,
        }
        try:
            resp = await self.session.post(
                f"{self.jupyterhub_api_url}/oauth2/token", data=data, ssl=self.ssl_context
            )
        except OSError:
            raise web.HTTPBadGateway(reason="the hub cannot be reached; try again") from None
        async with resp:
            if resp.status >= 400:
                self.log.warning("The hub refused an OAuth code (HTTP %s)", resp.status)
                raise web.HTTPBadRequest(
                    reason="the hub did not accept this login (expired or used code): open "
                    "the dashboard link again"
                )
            return str((await resp.json())["access_token"])

    def _set_cookie(self, request, response, name, value, path, max_age) -> None:
        response.set_cookie(
            name,
            value,
            path=path,
            max_age=int(max_age),
            httponly=True,
            samesite="Lax",
            secure=self._secure(request),
        )

    def _secure(self, request: web.Request) -> bool:
        if self.secure_cookies in ("true", "false"):
            return self.secure_cookies == "true"
        forwarded = request.headers.get("X-Forwarded-Proto", "").lower()
        public = os.environ.get("JUPYTERHUB_PUBLIC_URL", "") or os.environ.get(
            "JUPYTERHUB_PUBLIC_HUB_URL", ""
        )
        return request.secure or forwarded == "https" or public.startswith("https:")


def is_document(request: web.Request) -> bool:
    """A browser loading a page (top-level or frame), not a subresource or API call."""
    dest = request.headers.get("Sec-Fetch-Dest")
    if dest is not None:
        return dest in ("document", "iframe", "frame", "embed", "object")
    return _is_page_load(request)


def _is_page_load(request: web.Request) -> bool:
    """A browser navigating (not a script, not the API client): the only requests sent
    to the hub's login page."""
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in request.headers.get("Accept", "")


def started_by_server(username: str, scopes) -> str | None:
    """The name of the user's server a token belongs to ('' for the default server), or
    ``None`` for a token of no single server (a token made on the token page).

    A server's own token (``JUPYTERHUB_API_TOKEN`` in it) holds the scope
    ``access:servers!server=USER/NAME`` of that server only (the hub's
    ``server_token_scopes``); a token that reaches all the user's servers does not."""
    prefix = f"access:servers!server={username}/"
    servers = {scope[len(prefix) :] for scope in scopes or () if scope.startswith(prefix)}
    if len(servers) != 1 or any(
        scope == "access:servers" or scope.startswith("access:servers!user")
        for scope in scopes or ()
    ):
        return None
    return servers.pop()
