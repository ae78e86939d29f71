"""JupyterHub as a local facility runs it (``python -m afhub.hubconfig.hubapp``, what
``afhub up`` becomes): JupyterHub itself, started and stopped like a service.

- **Started**: once the hub answers (its proxy, its routes and its services are up), it
  prints where to log in, framed, after the start-up log lines rather than before them.
- **Stopped** (SIGINT, SIGTERM): the managed services, the users' servers and the proxy
  stop at the same time (JupyterHub stops its services one after the other, each allowed
  its interrupt timeout, then the servers); the periodic checks stop first, so that none
  looks at a service whose record the stop removed (JupyterHub's service health check then
  failed with ``'NoneType' object has no attribute 'proto'``); a second signal while
  stopping does not start a second clean-up.

The Kubernetes deployment runs plain ``jupyterhub``; nothing here is needed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from jupyterhub import app
from jupyterhub.services.service import Service
from traitlets import Bool

from afhub.settings import load_settings
from afhub.spawners.local import wait_for_exit

#: how a service is stopped: each signal in turn, and how long it has to exit after it
#: (JupyterHub's own: SIGINT and 30 s, SIGTERM and 30 s, SIGKILL, one service at a time)
SERVICE_STOP = ((signal.SIGINT, 5.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0))

#: the width of the frame around the announcement
FRAME = 72


def announcement(login_url: str, home: str, password_file: str, password: str | None) -> str:
    """The framed lines that tell a person the facility is up and how to log in."""
    lines = [f"afhub is up: log in at {login_url}"]
    if password is not None:
        lines.append(f"  user admin, password {password}")
        lines.append(f"  (created now, kept in {password_file}, mode 0600)")
    elif password_file:
        lines.append(f"  user admin, password in {password_file}")
    lines.append(f"  state in {home}; Ctrl-C stops everything")
    rule = "=" * FRAME
    return "\n".join(["", rule, *lines, rule, ""])


async def stop_service(service: Service) -> None:
    """Stop a managed service's process (:data:`SERVICE_STOP`), then let JupyterHub stop
    the service (its record; the process is gone by then)."""
    spawner = service.spawner
    if spawner is not None and spawner.pid:
        for sig, seconds in SERVICE_STOP:
            if await spawner.poll() is not None:
                break
            if sig != signal.SIGINT:
                service.log.warning("Service %s did not stop in time: %s", service.name, sig.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(spawner.pid, sig)
            if await wait_for_exit(spawner, seconds):
                break
    await service.stop()


class JupyterHub(app.JupyterHub):
    """JupyterHub with afhub's start announcement and a prompt, complete stop. Named as
    JupyterHub's own class, so that its log, its log configuration and its configuration
    section stay ``JupyterHub``."""

    announce = Bool(True, help="Print where to log in, framed, once the hub answers.").tag(
        config=True
    )

    show_admin_password = Bool(
        False,
        help="""Print the admin password itself in the announcement (``afhub up`` sets it
        when it has just created the password).""",
    ).tag(config=True)

    _stopping = False

    async def start(self) -> None:
        await super().start()
        if self.announce:
            print(self._announcement(), flush=True)

    def _announcement(self) -> str:
        settings = load_settings()
        password_file, password = "", None
        if settings.authenticator == "local":
            password_file = str(settings.admin_password_path)
            if self.show_admin_password:
                password = settings.admin_password_path.read_text(encoding="utf-8").strip()
        return announcement(
            f"{settings.public_url}hub/login", settings.home, password_file, password
        )

    async def shutdown_cancel_tasks(self, sig=None) -> None:
        if self._stopping:  # a second Ctrl-C: the clean-up already runs
            self.log.warning("Already stopping; this takes a few seconds")
            return
        self._stopping = True
        await super().shutdown_cancel_tasks(sig)

    async def cleanup(self) -> None:
        """Stop the periodic checks, then every managed service and server at once;
        JupyterHub's own clean-up then finds them stopped and finishes (the proxy, the
        database, the PID file)."""
        for periodic in self._periodic_callbacks.values():
            periodic.stop()
        services = [s for s in self._service_map.values() if s.managed]
        stops = [stop_service(service) for service in services]
        if self.cleanup_servers:
            for user in self.users.values():
                stops += [user.stop(name) for name, sp in user.spawners.items() if sp.active]
        self.log.info("Stopping %i services and servers at once", len(stops))
        for result in await asyncio.gather(*stops, return_exceptions=True):
            if isinstance(result, Exception):
                self.log.error("Stopping failed: %s", result)
        await super().cleanup()


def main() -> None:
    """Run the hub until it is stopped; exit 0 after a complete clean-up. The interpreter's
    own tear-down of the hub process (modules, objects, threads: 2-4 s on a busy machine)
    is skipped then: nothing is left to close (every process is stopped, the database
    committed, the log written). A hub that fails to start exits as JupyterHub does."""
    # SIGINT stops the hub and everything it starts, even where whoever started afhub
    # ignores it (a shell's background job, a test runner's worker): an ignored signal is
    # inherited by every process the hub starts, and the accountant and the culler then
    # ignored the hub's SIGINT for JupyterHub's 30 s each (64-77 s for a Ctrl-C)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    JupyterHub.launch_instance()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
