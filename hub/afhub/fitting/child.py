"""A fit process started by a Dask worker task: ``python -m afhub.fitting.child FD [MODULE...]``.

``FD`` is one end of a socket pair inherited from the worker; the process imports the
``MODULE`` arguments, says it is ready, then runs ``(fn, args, kwargs)`` jobs and sends back
``(ok, value)`` exactly as a :class:`~afhub.fitting.runner.KillablePool` worker does (it runs
the same loop). The worker kills it (SIGKILL) at a task's wall-clock limit or on
cancellation; it exits by itself when the worker that started it goes away.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing.connection import Connection


def _exit_with_parent(interval: float = 0.5) -> None:
    """Exit as soon as the process that started this one is gone (a Dask worker that dies,
    or is closed, leaves no fit running)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def main(argv: list[str]) -> None:
    from afhub.fitting.runner import _worker_main

    _exit_with_parent()
    conn = Connection(int(argv[1]))
    try:
        _worker_main(conn, tuple(argv[2:]))
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv)
