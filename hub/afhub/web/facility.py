"""The hub-side services as the pages reach them: over HTTP, with the viewer's own OAuth
token (never the pages service's token), so a page shows and does exactly what the REST
API allows that person."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

#: how long a page waits for a service's answer
TIMEOUT = 20.0


class ServiceRefused(Exception):
    """A service answered 4xx/5xx (or not at all): the status and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Endpoints:
    """Where the services' REST APIs are (URLs ending with ``/``)."""

    facility: str
    fitting: str
    gateway: str


def group_url(path: str, part: str = "", user: str | None = None) -> str:
    """``groups/<path>[/-/<part>[/<user>]]``, each segment quoted."""
    url = "groups/" + "/".join(quote(segment, safe="") for segment in path.split("/"))
    if part:
        url += "/-/" + part
    if user is not None:
        url += "/" + quote(user, safe="")
    return url


class ServiceClient:
    """Calls one service's API as the viewer."""

    def __init__(self, base: str, token: str, what: str) -> None:
        self.base = base
        self.token = token
        self.what = what

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """The JSON answer (``None`` for 204); :class:`ServiceRefused` otherwise."""
        url = self.base + path + (f"?{urlencode(query)}" if query else "")
        request = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {self.token}", "Accept": "application/json"},
            body=json.dumps(body)
            if body is not None
            else (b"" if method in ("POST", "PUT", "PATCH") else None),
            request_timeout=TIMEOUT,
            allow_nonstandard_methods=True,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            raise ServiceRefused(exc.code, _message(exc, self.what)) from None
        except OSError:
            raise ServiceRefused(502, f"{self.what} cannot be reached; try again") from None
        if response.code == 204 or not response.body:
            return None
        return json.loads(response.body)

    async def get(self, path: str, **query: str) -> Any:
        return await self.call("GET", path, query=query or None)


def _message(exc: HTTPClientError, what: str) -> str:
    """The service's own message of a refusal (``{"error": ...}``), else a line naming it."""
    body = exc.response.body if exc.response is not None else b""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        return message
    if exc.code == 599:
        return f"{what} did not answer in time; try again"
    return f"{what} answered {exc.code}"
