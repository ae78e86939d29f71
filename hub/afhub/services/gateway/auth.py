"""JupyterHub token authentication for the gateway, with 401s that say what is wrong.

Upstream's ``JupyterHubAuthenticator`` answers a token the hub rejects with HTTP 500
("Permission failure verifying user's JupyterHub API token") and crashes on an
``Authorization`` header without a scheme. Here every token problem is a 401 whose
message says what to do; only an unreachable hub is a 502.

Accepted: ``Authorization: jupyterhub TOKEN`` (what ``dask_gateway.JupyterHubAuth``
sends), ``Authorization: token TOKEN`` and, for opening a dashboard in a browser,
``?token=TOKEN`` (the gateway then sets its own short-lived cookie).
"""

from __future__ import annotations

from aiohttp import web
from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.models import User

MISSING = (
    "authentication required: send your JupyterHub token as 'Authorization: jupyterhub "
    "TOKEN' (inside a facility server, dask_gateway.Gateway() does this)"
)
INVALID = (
    "the JupyterHub token is not valid (unknown, expired or revoked): use the token of "
    "your server (JUPYTERHUB_API_TOKEN) or create a new one on the hub's token page"
)


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


class AfhubHubAuthenticator(JupyterHubAuthenticator):
    """``JupyterHubAuthenticator`` with 401s for bad tokens and a query-token for
    dashboards."""

    def get_token(self, request: web.Request) -> str | None:
        parsed = parse_authorization(request.headers.get("Authorization"))
        if parsed is not None and parsed[0] in ("jupyterhub", "token", "bearer"):
            return parsed[1]
        token = request.query.get("token", "").strip()
        return token or None

    async def authenticate(self, request: web.Request) -> User:
        token = self.get_token(request)
        if token is None:
            raise unauthorized(MISSING)
        try:
            resp = await self.session.get(
                f"{self.jupyterhub_api_url}/user",
                headers={"Authorization": f"token {token}"},
                ssl=self.ssl_context,
            )
        except OSError:
            self.log.error("Cannot reach JupyterHub at %s", self.jupyterhub_api_url)
            raise web.HTTPBadGateway(reason="the hub cannot be reached; try again") from None
        if resp.status in (401, 403, 404):
            raise unauthorized(INVALID)
        if resp.status >= 400:
            self.log.error("JupyterHub answered %s verifying a token", resp.status)
            raise web.HTTPBadGateway(reason="the hub could not verify the token; try again")
        data = await resp.json()
        username = data["name"]
        if data.get("kind") != "user" or ":" in username:
            username = f"{data.get('kind')}:{username}"
        if self.use_service_access_scopes:
            wanted = {"access:services", f"access:services!service={self.jupyterhub_service_name}"}
            if not wanted & set(data.get("scopes", [])):
                raise unauthorized(
                    f"this token may not use the {self.jupyterhub_service_name!r} service: "
                    f"it lacks the scope access:services!service={self.jupyterhub_service_name}"
                )
        return User(username, groups=data.get("groups", []), admin=data.get("admin", False))
