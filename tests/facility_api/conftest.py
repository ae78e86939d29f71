"""Run the facility API in a thread, next to a stand-in for the hub's token check.

The stand-in answers ``GET /hub/api/user`` the way JupyterHub does (the user model for a
known token, 403 otherwise), so the service's real ``HubOAuth`` code path identifies the
callers. End-to-end tests through a real hub live with the facility tests.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import requests
from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from afhub.services.facility_api.app import make_app
from afhub.stores.facade import Stores
from tests.facility import free_port
from tests.support.databases import fresh_sqlite, sqlite_template

PREFIX = "/services/facility/"


class FakeHubUserHandler(web.RequestHandler):
    def get(self):
        tokens = self.settings["fake_hub_tokens"]
        header = self.request.headers.get("Authorization", "")
        token = header.split(" ", 1)[1] if " " in header else ""
        model = tokens.get(token)
        if model is None:
            self.set_status(403)
            self.finish(json.dumps({"status": 403, "message": "invalid token"}))
            return
        self.finish(json.dumps(model))


class ServiceUnderTest:
    def __init__(self, stores: Stores):
        self.stores = stores
        self.tokens: dict[str, dict] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PREFIX}"
        self._loop: IOLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(asyncio.new_event_loop())
        hub_auth = HubOAuth(
            api_url=f"http://127.0.0.1:{self.port}/hub/api/",
            api_token="service-token",
            oauth_client_id="service-facility",
            base_url=PREFIX,
            hub_prefix="/hub/",
            cache_max_age=0,
        )
        app = make_app(self.stores, prefix=PREFIX, hub_auth=hub_auth, cookie_secret=b"x" * 32)
        app.settings["fake_hub_tokens"] = self.tokens
        app.add_handlers(r".*", [(r"/hub/api/user", FakeHubUserHandler)])
        server = HTTPServer(app)
        server.listen(self.port, "127.0.0.1")
        self._loop = IOLoop.current()
        self._ready.set()
        self._loop.start()
        server.stop()

    def start(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self):
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
        self._thread.join(10)

    def client(self, token: str | None) -> Client:
        """A client sending ``token`` (``None``: no Authorization header)."""
        return Client(self.url, token)

    def user(self, name: str, *, admin: bool = False) -> Client:
        token = f"token-of-{name}"
        self.tokens[token] = {
            "kind": "user",
            "name": name,
            "admin": admin,
            "groups": [],
            "scopes": ["access:services"],
        }
        return Client(self.url, token)


class Client:
    def __init__(self, base: str, token: str | None):
        self.base = base
        self.token = token

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        return requests.request(
            method, self.base + path.lstrip("/"), headers=headers, timeout=30, **kwargs
        )


@pytest.fixture(scope="session")
def _template(tmp_path_factory):
    with sqlite_template(tmp_path_factory.mktemp("api-template")) as path:
        yield path


@pytest.fixture
def service(tmp_path, _template):
    stores = Stores.open(fresh_sqlite(_template, tmp_path), migrate=False)
    running = ServiceUnderTest(stores).start()
    yield running
    running.stop()
    stores.close()
