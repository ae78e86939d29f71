"""Life cycle shared by afhub's hub-managed services: the one parent watch.

A service started by the hub must not outlive it: when the hub is killed (SIGKILL, a
crash) its children are re-parented, and a service left behind would hold its port so
that the restarted hub's new service cannot start. Each service therefore watches its
parent (:class:`ParentWatch`) and exits when it changes. In Kubernetes (one service per
pod) the parent is the container's init and never changes, so the watch is harmless there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable

from tornado.ioloop import IOLoop, PeriodicCallback

log = logging.getLogger("afhub.services")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ParentWatch:
    """The process that started this one (the hub), remembered at creation."""

    def __init__(self) -> None:
        self.parent = os.getppid()

    @property
    def gone(self) -> bool:
        """True once this process's parent is no longer the one that started it."""
        return os.getppid() != self.parent

    async def wait(
        self,
        seconds: float = math.inf,
        *,
        step: float = 1.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Wait ``seconds``; return sooner once ``stop`` is set or, within ``step``
        seconds, once the parent is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        step = min(step, seconds)
        while not self.gone and loop.time() < deadline:
            if stop is None:
                await asyncio.sleep(step)
                continue
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), step)


def on_stop_signals(callback: Callable[..., object], *args: object) -> None:
    """Call ``callback(*args)`` on SIGTERM and SIGINT (how the hub stops its services)."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, callback, *args)


def stop_with_the_hub(name: str, check_seconds: float = 1.0) -> PeriodicCallback:
    """Stop the current tornado loop when the parent process (the hub) goes away, and on
    SIGTERM/SIGINT, without a traceback."""
    watch = ParentWatch()
    loop = IOLoop.current()

    def stop(reason: str) -> None:
        log.info("%s stops: %s", name, reason)
        loop.stop()

    def check() -> None:
        if watch.gone:
            stop("the hub that started it is gone")

    for sig in STOP_SIGNALS:
        loop.asyncio_loop.add_signal_handler(sig, stop, f"signal {sig.name}")
    periodic = PeriodicCallback(check, check_seconds * 1000)
    periodic.start()
    return periodic


def exit_process(status: int = 0) -> None:
    """Leave now with ``status``, once a service has stopped cleanly: logs and output
    flushed, the interpreter's tear-down (modules, objects, ``atexit``) skipped. Only for
    a process whose work is closed (its stores, its pools, its children)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def run_until_stopped(name: str, on_stop: Callable[[], object] | None = None) -> None:
    """Run the tornado loop until the hub goes away or a signal asks to stop; then
    ``on_stop()`` (close what the service holds: its stores' connections) and exit 0."""
    stop_with_the_hub(name)
    IOLoop.current().start()
    if on_stop is not None:
        on_stop()
    exit_process(0)
