"""A real local afhub facility for tests: JupyterHub, configurable-http-proxy, servers.

``Facility`` runs ``python -m afhub up`` in a temporary ``AFHUB_HOME`` on free ports, the
same way ``make up`` does, and offers helpers to log in, start and stop servers and talk to
the hub's REST API. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import psutil
import requests
import yaml

from afhub.hubconfig.ports import port_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


#: the lowest port :func:`free_ports` hands out; the ports below the kernel's ephemeral range
#: (``ip_local_port_range``) are shared out among the pytest-xdist workers
FIRST_PORT = 10_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _port_span() -> range:
    """This pytest-xdist worker's own share of the ports below the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (_ephemeral_low() - FIRST_PORT) // max(workers, 1)
    start = FIRST_PORT + int(worker or 0) * size
    return range(start, start + size)


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on right now (all
    bound at once: ports picked one after the other can repeat, and a facility given the
    same port twice refuses to start).

    The ports lie below the kernel's ephemeral range, in this test worker's own share of it:
    a port a facility is given stays free until its service binds it, where a port from the
    ephemeral range (``bind(0)``) could meanwhile be taken by anything else that binds port
    0, such as a Jupyter kernel picking its ZeroMQ ports (a dashboards service once found its
    port held by another facility's kernel and exited).
    """
    span, sockets, ports = _port_span(), [], []
    try:
        while len(ports) < count:
            port = random.choice(span)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
            ports.append(port)
        return ports
    finally:
        for s in sockets:
            s.close()


class Facility:
    """One local facility, started and stopped by the test that owns it."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str] | None = None,
        config: dict | None = None,
        up_args: Sequence[str] = (),
    ):
        self.home = Path(home)
        self.up_args = tuple(up_args)  # options of `afhub up`, e.g. ("--demo",)
        self.home.mkdir(parents=True, exist_ok=True)
        # every port setting gets a free port, new ones included: a port left at its
        # AFHUB_PORT_BASE default would be shared by two facilities of one test run
        variables = [variable for _setting, variable in port_settings()]
        ports = free_ports(8 + len(variables))
        (
            self.port,
            self.hub_port,
            self.proxy_api_port,
            self.api_port,
            self.fitting_port,
            self.gateway_port,
            self.gateway_proxy_port,
            self.pages_port,
        ) = ports[:8]
        self.other_ports = dict(zip(variables, ports[8:], strict=True))
        self.extra_env = dict(env or {})
        self.config = config
        self.process: subprocess.Popen | None = None
        self.log_path = self.home / "facility-output.log"
        self._log_file = None

    # -- addresses --

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def hub_url(self) -> str:
        return urljoin(self.url, "hub/")

    @property
    def api_url(self) -> str:
        return urljoin(self.url, "hub/api/")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AFHUB_", "JUPYTERHUB_"))}
        env.update(
            AFHUB_HOME=str(self.home),
            AFHUB_PORT=str(self.port),
            AFHUB_HUB_PORT=str(self.hub_port),
            AFHUB_PROXY_API_PORT=str(self.proxy_api_port),
            AFHUB_API_PORT=str(self.api_port),
            AFHUB_FITTING_PORT=str(self.fitting_port),
            AFHUB_GATEWAY_PORT=str(self.gateway_port),
            AFHUB_GATEWAY_PROXY_PORT=str(self.gateway_proxy_port),
            AFHUB_PAGES_PORT=str(self.pages_port),
            AFHUB_PROXY_COMMAND=str(
                PROJECT_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
            ),
            PYTHONUNBUFFERED="1",
        )
        env.update({k: str(port) for k, port in self.other_ports.items() if k not in env})
        env.update(self.extra_env)
        return env

    # -- life cycle --

    #: what answers once the facility is up: the hub, and the proxy's routes to the hub
    #: services with HTTP (the hub answers before the proxy routes to its services, so a
    #: first request to a service could otherwise get the hub's 404)
    READY_PATHS = (
        "hub/health",
        "services/facility/api/openapi.yaml",
        "services/fitting/api/openapi.yaml",
        "services/dask-gateway/api/health",
        "services/afhub/health",
    )

    def ready_paths(self) -> tuple[str, ...]:
        """READY_PATHS, or only the hub's health where the test's configuration replaces the
        hub's services with its own (then afhub's services are not there to route to)."""
        if "services" in (self.config or {}).get("JupyterHub", {}):
            return self.READY_PATHS[:1]
        return self.READY_PATHS

    def _answers(self, path: str) -> bool:
        try:
            return requests.get(urljoin(self.url, path), timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or busy starting
            return False

    def start(self, timeout: float = 150) -> Facility:
        if self.config is not None:
            (self.home / "afhub.yaml").write_text(yaml.safe_dump(self.config))
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "afhub", "up", *self.up_args],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop(timeout=10)  # its services may still run: leave nothing behind
                raise RuntimeError(f"facility exited at start:\n{tail}")
            if all(self._answers(path) for path in self.ready_paths()):
                return self
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop(timeout=10)  # a failed start must not leave a hub and its services running
        raise RuntimeError(f"facility not up after {timeout} s:\n{tail}")

    def _tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 90) -> None:
        """Stop as Ctrl-C does (SIGINT); whatever is left after ``timeout`` is killed
        (and listed in ``leftover``). The hub stops its services and servers at once
        (:mod:`afhub.hubconfig.hubapp`): a few seconds."""
        self._signal_and_reap(signal.SIGINT, timeout)

    def kill(self) -> None:
        """SIGKILL the hub alone, as a crash would (its servers and proxy keep running)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def _signal_and_reap(self, sig: int, timeout: float) -> None:
        procs = self._tree()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        _gone, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.leftover = [p for p in alive]

    def cleanup_orphans(self) -> None:
        """Kill servers and proxies of this facility's home left by a SIGKILLed hub (a
        server is known by its ``HOME``, under the facility's: it has no ``AFHUB_HOME``)."""
        homes = str(self.home / "homes") + os.sep
        for proc in psutil.process_iter(["pid", "environ", "cmdline"]):
            try:
                environ = proc.info.get("environ") or {}
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                continue
            ours = environ.get("AFHUB_HOME") == str(self.home)
            if (ours or environ.get("HOME", "").startswith(homes)) and proc.pid != os.getpid():
                proc.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"

    # -- accounts and sessions --

    @property
    def admin_password(self) -> str:
        return (self.home / "admin-password").read_text().strip()

    def afhub(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the ``afhub`` CLI against this facility."""
        return subprocess.run(
            [sys.executable, "-m", "afhub", *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def add_user(self, name: str) -> str:
        """Create a local account with ``afhub users add``; returns its password."""
        out = self.afhub("users", "add", name).stdout
        return out.strip().rsplit(" ", 1)[-1]

    def login(self, username: str, password: str, next_url: str | None = None) -> HubSession:
        """Log in through the login form, as a browser does."""
        session = HubSession(self)
        response = session.login(username, password, next_url=next_url)
        if response.status_code != 302:
            raise AssertionError(f"login of {username} failed: {response.status_code}")
        return session

    def admin_token(self) -> str:
        """An API token of the admin account (made through the REST API)."""
        session = self.login("admin", self.admin_password)
        return session.new_token("tests")


class HubSession(requests.Session):
    """A browser-like session with the hub: cookies plus the XSRF header."""

    def __init__(self, facility: Facility):
        super().__init__()
        self.facility = facility
        self.username: str | None = None

    @property
    def xsrf(self) -> str | None:
        return self.cookies.get("_xsrf", path="/hub/")

    def login(self, username: str, password: str, next_url: str | None = None):
        login_url = urljoin(self.facility.hub_url, "login")
        params = {"next": next_url} if next_url is not None else None
        self.get(login_url, params=params, timeout=10)
        response = self.post(
            login_url,
            params=params,
            data={"username": username, "password": password, "_xsrf": self.xsrf},
            allow_redirects=False,
            timeout=30,
        )
        if response.status_code == 302:
            self.username = username
        return response

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A hub REST call authenticated with the session cookie."""
        headers = kwargs.pop("headers", {})
        headers.setdefault("X-XSRFToken", self.xsrf or "")
        kwargs.setdefault("timeout", 30)
        return self.request(
            method, urljoin(self.facility.api_url, path.lstrip("/")), headers=headers, **kwargs
        )

    def new_token(self, note: str) -> str:
        response = self.api("POST", f"users/{self.username}/tokens", json={"note": note})
        response.raise_for_status()
        return response.json()["token"]

    def start_server(
        self, server_name: str = "", options: dict | None = None, timeout: float = 90
    ) -> dict:
        """Start the user's (named) server through the REST API and wait until ready."""
        path = f"users/{self.username}/servers/{server_name}"
        response = self.api("POST", path, json=options or {})
        if response.status_code not in (201, 202):
            raise AssertionError(f"spawn refused: {response.status_code} {response.text}")
        return self.wait_for_server(server_name, timeout)

    def wait_for_server(self, server_name: str = "", timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{self.username}").json()
            server = model.get("servers", {}).get(server_name)
            if server and server.get("ready"):
                return server
            if server is None and model.get("pending") is None and time.monotonic() > deadline:
                break
            time.sleep(0.25)
        raise AssertionError(f"server of {self.username} not ready after {timeout} s")

    def stop_server(self, server_name: str = "", timeout: float = 60) -> None:
        response = self.api("DELETE", f"users/{self.username}/servers/{server_name}")
        if response.status_code not in (202, 204):
            raise AssertionError(f"stop refused: {response.status_code} {response.text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{self.username}").json()
            if server_name not in model.get("servers", {}):
                return
            time.sleep(0.25)
        raise AssertionError(f"server of {self.username} still running after {timeout} s")


def run_in_kernel(base_url: str, username: str, token: str, code: str, timeout: float = 60) -> str:
    """Start a kernel in the user's server, run ``code``, return its stdout; delete it."""
    import websocket

    server = urljoin(base_url, f"user/{username}/")
    headers = {"Authorization": f"token {token}"}
    response = requests.post(urljoin(server, "api/kernels"), headers=headers, json={}, timeout=30)
    response.raise_for_status()
    kernel_id = response.json()["id"]
    ws_url = urljoin(server, f"api/kernels/{kernel_id}/channels").replace("http", "ws", 1)
    ws = websocket.create_connection(
        ws_url, header=[f"Authorization: token {token}"], timeout=timeout
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": username,
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                    },
                }
            )
        )
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                output.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError(f"kernel error: {msg['content']['evalue']}")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(output)
        raise AssertionError("kernel gave no answer in time")
    finally:
        ws.close()
        requests.delete(urljoin(server, f"api/kernels/{kernel_id}"), headers=headers, timeout=30)
