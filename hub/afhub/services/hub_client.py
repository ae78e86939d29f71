"""A small async client of JupyterHub's REST API, for afhub's hub-managed services.

It reads the environment every hub-managed service gets (``JUPYTERHUB_API_URL``,
``JUPYTERHUB_API_TOKEN``) and does only what afhub's services need.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


class HubAPIError(RuntimeError):
    """The hub answered with an error; the message has the status and the hub's reason."""


class HubClient:
    def __init__(self, api_url: str | None = None, token: str | None = None):
        self.api_url = (api_url or os.environ["JUPYTERHUB_API_URL"]).rstrip("/") + "/"
        self.token = token or os.environ["JUPYTERHUB_API_TOKEN"]
        self.http = AsyncHTTPClient()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        has_body = body is not None or method in ("POST", "PUT", "PATCH")
        request = HTTPRequest(
            self.api_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body if body is not None else {}) if has_body else None,
            allow_nonstandard_methods=True,
            request_timeout=30,
        )
        try:
            response = await self.http.fetch(request)
        except HTTPClientError as exc:
            detail = exc.response.body.decode(errors="replace")[:300] if exc.response else ""
            raise HubAPIError(f"{method} {path}: {exc.code} {detail}") from None
        return json.loads(response.body) if response.body else None

    async def users(self) -> list[dict]:
        return await self.request("GET", "users?include_stopped_servers=false")

    async def running_servers(self) -> set[tuple[str, str]]:
        """(user, server name) of every server that runs or is starting."""
        result = set()
        for user in await self.users():
            for name, server in (user.get("servers") or {}).items():
                if server.get("ready") or server.get("pending") == "spawn":
                    result.add((user["name"], name))
        return result

    async def stop_server(self, user: str, server_name: str = "") -> None:
        path = f"users/{quote(user, safe='')}/servers/{quote(server_name, safe='')}"
        await self.request("DELETE", path, {"remove": False})

    async def groups(self) -> dict[str, set[str]]:
        return {g["name"]: set(g["users"]) for g in await self.request("GET", "groups")}

    async def create_group(self, name: str) -> None:
        await self.request("POST", f"groups/{quote(name, safe='')}")

    async def delete_group(self, name: str) -> None:
        await self.request("DELETE", f"groups/{quote(name, safe='')}")

    async def add_group_users(self, name: str, users: list[str]) -> None:
        await self.request("POST", f"groups/{quote(name, safe='')}/users", {"users": users})

    async def remove_group_users(self, name: str, users: list[str]) -> None:
        await self.request("DELETE", f"groups/{quote(name, safe='')}/users", {"users": users})
