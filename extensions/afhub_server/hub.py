"""Calls from a user's server to the hub's services, with the server's own token.

The token is ``$JUPYTERHUB_API_TOKEN``, the one JupyterHub gave this server: it holds only
the scopes ``Spawner.server_token_scopes`` grants (``afhub.hubconfig.extension``), never more
than the person whose server this is. The services' URLs come from the environment the hub
sets (``AFHUB_FACILITY_URL``, ``AFHUB_FITTING_URL``), else from the hub's public URL
(``JUPYTERHUB_PUBLIC_HUB_URL``).

HTTP only: this module imports neither JupyterHub nor the facility's database.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

#: a service's name -> the environment variable with its base URL
SERVICE_URLS = {"facility": "AFHUB_FACILITY_URL", "fitting": "AFHUB_FITTING_URL"}
#: seconds a call to a hub service may take
TIMEOUT = 20.0


class HubServiceError(Exception):
    """A hub service refused a call (``status`` 4xx, its message) or could not be reached
    (``status`` 503, a sentence saying so)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def service_url(service: str, environ: dict[str, str] | None = None) -> str:
    """The base URL of a hub service (ends with ``/``)."""
    env = os.environ if environ is None else environ
    explicit = env.get(SERVICE_URLS[service], "")
    if explicit:
        return explicit.rstrip("/") + "/"
    root = env.get("JUPYTERHUB_PUBLIC_HUB_URL", "").rstrip("/").removesuffix("/hub")
    if not root:
        raise HubServiceError(503, f"this server does not know where the {service} service is")
    return f"{root}/services/{service}/"


def _message(body: bytes, reason: str) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return reason
    if isinstance(document, dict):
        return str(document.get("error") or document.get("message") or reason)
    return reason


async def get_json(service: str, path: str, params: dict[str, str] | None = None) -> Any:
    """``GET <service>/api/<path>`` as this server's owner; the JSON answer.

    Raises :class:`HubServiceError`: the service's own status and message for a 4xx, 503
    with a sentence when the service cannot be reached or fails (5xx)."""
    url = service_url(service) + "api/" + path
    if params:
        url += "?" + urlencode(params)
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    request = HTTPRequest(
        url,
        headers={"Authorization": f"token {token}", "Accept": "application/json"},
        request_timeout=TIMEOUT,
        connect_timeout=TIMEOUT,
        follow_redirects=False,
    )
    try:
        response = await AsyncHTTPClient().fetch(request)
    except HTTPClientError as exc:
        body = exc.response.body if exc.response is not None else b""
        if exc.response is not None and 400 <= exc.code < 500:
            raise HubServiceError(exc.code, _message(body, exc.message)) from None
        raise HubServiceError(
            503, f"the facility's {service} service is not answering right now; try again soon"
        ) from None
    except OSError:
        raise HubServiceError(
            503, f"the hub's {service} service cannot be reached from this server; try again soon"
        ) from None
    try:
        return json.loads(response.body)
    except ValueError:
        raise HubServiceError(
            503, f"the facility's {service} service answered something that is not JSON"
        ) from None
