"""Life cycle shared by afhub's hub-managed services.

A service started by the hub must not outlive it: when the hub is killed (SIGKILL, a
crash) its children are re-parented, and a service left behind would hold its port so
that the restarted hub's new service cannot start. Each service therefore watches its
parent and exits when it changes. In Kubernetes (one service per pod) the parent is the
container's init and never changes, so the watch is harmless there.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from tornado.ioloop import IOLoop, PeriodicCallback

log = logging.getLogger("afhub.services")


def parent_is_gone(parent: int) -> bool:
    """True once this process's parent is no longer ``parent``."""
    return os.getppid() != parent


def stop_with_the_hub(name: str, check_seconds: float = 1.0) -> PeriodicCallback:
    """Stop the current tornado loop when the parent process (the hub) goes away, and on
    SIGTERM/SIGINT, without a traceback."""
    parent = os.getppid()
    loop = IOLoop.current()

    def stop(reason: str) -> None:
        log.info("%s stops: %s", name, reason)
        loop.stop()

    def check() -> None:
        if parent_is_gone(parent):
            stop("the hub that started it is gone")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.asyncio_loop.add_signal_handler(sig, stop, f"signal {sig.name}")
    watch = PeriodicCallback(check, check_seconds * 1000)
    watch.start()
    return watch


def run_until_stopped(name: str) -> None:
    """Run the tornado loop until the hub goes away or a signal asks to stop; exit 0."""
    stop_with_the_hub(name)
    IOLoop.current().start()
    sys.exit(0)
