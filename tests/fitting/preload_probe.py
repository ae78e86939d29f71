"""Run in a fresh worker process by tests/fitting/test_preload.py: what a worker can observe
of its process before and after importing modules. Imports nothing of afhub at the top, so
the modules under test are imported here for the first time."""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import threading
from typing import Any

_PR_GET_PDEATHSIG = 2
_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGPIPE")


def pdeathsig() -> int:
    """The signal this process gets when its parent dies (0: none), Linux only."""
    value = ctypes.c_int(0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_PDEATHSIG) failed")
    return value.value


def observe() -> dict[str, Any]:
    """What an import could change in a process: the parent-death signal, signal handlers,
    threads, environment, working directory, umask."""
    umask = os.umask(0)
    os.umask(umask)
    return {
        "pdeathsig": pdeathsig(),
        "signals": {name: repr(signal.getsignal(getattr(signal, name))) for name in _SIGNALS},
        "threads": sorted(t.name for t in threading.enumerate()),
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "umask": umask,
    }


def import_and_observe(names: tuple[str, ...]) -> dict[str, Any]:
    """Import ``names`` in this process; what was seen before and after, and which of them
    were already imported (the check means something only when none was)."""
    already = [name for name in names if name in sys.modules]
    before = observe()
    for name in names:
        importlib.import_module(name)
    return {"already": already, "before": before, "after": observe()}
