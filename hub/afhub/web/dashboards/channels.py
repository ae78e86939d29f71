"""Kernel channels that never wait on ZeroMQ's wake-up alone.

A dashboard's page view waits for its kernel's reply (nbclient awaits the shell channel
with no timeout). ``zmq.asyncio`` learns that a reply came from the socket's ``zmq.FD``,
which is edge-triggered: anything that reads the socket's state consumes the edge, and
if it does so before the event loop acts on it, the waiting future is never woken. On the
shared 2-core machine this happened to about one page view in ten: the reply sat in the
socket (``zmq.EVENTS`` said POLLIN), the page's poll future stayed pending and the page
never finished (``docs/dashboards.md``, "A page view that never finished").

:class:`WakefulKernelClient` waits in slices of :data:`POLL_SLICE_SECONDS`: each slice
ends by asking the socket itself (``zmq_poll``), which sees a waiting reply whether or
not the file descriptor said so. A missed wake-up now costs at most one slice.
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type

#: the longest a message may wait in a socket unnoticed (a missed wake-up)
POLL_SLICE_SECONDS = 0.5


def next_wait(deadline: float | None, now: float, slice_seconds: float) -> float:
    """Seconds to poll next: a slice, or what is left before ``deadline`` (never below 0);
    ``deadline`` None waits without end, one slice at a time."""
    if deadline is None:
        return slice_seconds
    return max(0.0, min(slice_seconds, deadline - now))


class WakefulChannel(AsyncZMQSocketChannel):
    """:class:`AsyncZMQSocketChannel` whose :meth:`get_msg` polls in slices, so that a
    message that arrived without waking the event loop is read at the next slice."""

    slice_seconds = POLL_SLICE_SECONDS

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        """The next message; :class:`queue.Empty` when none came within ``timeout``
        seconds (None: wait until one comes)."""
        assert self.socket is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = next_wait(deadline, time.monotonic(), self.slice_seconds)
            if await self.socket.poll(int(wait * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty


class WakefulKernelClient(AsyncKernelClient):
    """The kernel client of the dashboards' page views (and of the prepared kernels'
    hand-over): every ZeroMQ channel a :class:`WakefulChannel`."""

    shell_channel_class = Type(WakefulChannel)
    iopub_channel_class = Type(WakefulChannel)
    stdin_channel_class = Type(WakefulChannel)
    control_channel_class = Type(WakefulChannel)
