"""The ports a local facility listens on, and the check that they are free before it starts.

Every port is a setting of :class:`afhub.settings.FacilitySettings` (a trait named ``port``
or ``*_port``, each with its ``AFHUB_*_PORT`` variable and a default derived from
``port_base``). ``afhub up`` checks them all before anything starts or prints, so that a
second facility on busy ports stops with one line naming the port and the setting that moves
it, instead of starting half of itself and dying with a proxy traceback.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from afhub.settings import FacilitySettings, environment_variable

#: the setting that moves every port at once
PORT_BASE_VARIABLE = "AFHUB_PORT_BASE"


@dataclass(frozen=True)
class FacilityPort:
    """One port the facility listens on: the setting, its variable, the address, the port."""

    setting: str
    variable: str
    host: str
    port: int

    def describe(self) -> str:
        return f"{self.port} ({self.variable})"


def port_settings() -> list[tuple[str, str]]:
    """``(setting, variable)`` of every port setting: ``port`` and ``*_port``, not
    ``port_base`` (nothing listens on it)."""
    names = FacilitySettings.class_trait_names(config=True)
    return [
        (name, environment_variable(FacilitySettings, name) or name)
        for name in names
        if name == "port" or name.endswith("_port")
    ]


def facility_ports(settings: FacilitySettings) -> list[FacilityPort]:
    """Every port of these settings, lowest first. The public proxy listens on
    ``settings.ip``; everything else on the loopback address."""
    ports = [
        FacilityPort(name, variable, settings.ip if name == "port" else "127.0.0.1", port)
        for name, variable in port_settings()
        for port in [getattr(settings, name)]
    ]
    return sorted(ports, key=lambda p: p.port)


def cannot_listen(host: str, port: int) -> str | None:
    """Why nothing could listen on ``host:port`` now (``None``: it could). Bound as the hub,
    the proxy and tornado bind (``SO_REUSEADDR``), so a port in ``TIME_WAIT`` counts as free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


def running_process(pid_file: Path) -> int | None:
    """The process named in ``pid_file`` if it is running (``None``: no file, or it ended)."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


#: the ports of the proxy, which the hub replaces at start when its previous run left it
#: (a hub that crashed or was killed leaves its proxy, and the users' servers, running)
PROXY_PORTS = ("port", "proxy_api_port")


def unusable_ports(settings: FacilitySettings) -> list[tuple[FacilityPort, str]]:
    """The facility's ports that cannot be listened on, each with the reason (a port given
    to two settings is refused at the second). The proxy's ports are not checked while the
    proxy this facility's previous hub left is running: the hub stops it (by its PID file,
    ``proxy.pid``) and starts its own."""
    left_proxy = running_process(settings.home_path / "proxy.pid") is not None
    found = []
    first: dict[int, FacilityPort] = {}
    for port in facility_ports(settings):
        other = first.setdefault(port.port, port)
        reason = f"also given to {other.variable}" if other is not port else None
        if reason is None and not (left_proxy and port.setting in PROXY_PORTS):
            reason = cannot_listen(port.host, port.port)
        if reason is not None:
            found.append((port, reason))
    return found


def services_left_behind(settings: FacilitySettings) -> list:
    """The hub services of this facility that a killed hub left running: processes with
    ``JUPYTERHUB_SERVICE_NAME`` whose hub (``JUPYTERHUB_API_URL``) is this facility's. Each
    stops within seconds once it sees its hub gone (the services' parent watch)."""
    import psutil

    hub = f"//127.0.0.1:{settings.hub_port}/"
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        try:
            environ = process.environ()
        except (psutil.Error, OSError):
            continue
        if environ.get("JUPYTERHUB_SERVICE_NAME") and hub in environ.get("JUPYTERHUB_API_URL", ""):
            found.append(process)
    return found


def wait_for_services_left_behind(settings: FacilitySettings, timeout: float = 15.0) -> None:
    """Give the services a killed hub of this facility left the time to stop before the
    ports are checked (a hub restarted at once after a crash found their ports in use)."""
    import psutil

    left = services_left_behind(settings)
    if left:
        psutil.wait_procs(left, timeout=timeout)


def running_hub_message(settings: FacilitySettings) -> str | None:
    """One line when a hub of this facility runs already (its PID file, ``jupyterhub.pid``,
    names a running process); ``None`` otherwise."""
    pid = running_process(settings.home_path / "jupyterhub.pid")
    if pid is None:
        return None
    return (
        f"this facility ({settings.home}) already runs: its hub is process {pid}; stop it "
        "first (Ctrl-C where it runs), or give a second one its own AFHUB_HOME and "
        "AFHUB_PORT_BASE"
    )


def unusable_ports_message(unusable: list[tuple[FacilityPort, str]], port_base: int) -> str:
    """One line: which ports, why, and the settings that move them."""
    if len(unusable) == 1:
        ((port, reason),) = unusable
        return (
            f"port {port.port} on {port.host} is {reason} ({port.setting}): set "
            f"{port.variable} to a free port, or {PORT_BASE_VARIABLE} (now {port_base}) to "
            "move every port; is another afhub running?"
        )
    listed = ", ".join(f"{port.describe()} {reason}" for port, reason in unusable)
    return (
        f"{len(unusable)} ports cannot be used: {listed}; is another afhub running? Start "
        f"this one with another {PORT_BASE_VARIABLE} (now {port_base}), e.g. "
        f"{PORT_BASE_VARIABLE}={port_base + 1000}, or set each variable"
    )
