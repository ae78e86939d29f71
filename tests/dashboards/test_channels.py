"""The dashboards' kernel channels read a message whose wake-up was missed.

The missed wake-up is made on purpose: a message is sent to a ``zmq.asyncio`` socket while
a read waits on it, and the socket's ``zmq.EVENTS`` is read before the event loop runs,
which consumes the edge of the socket's file descriptor (what happened, now and then, to
a page view's shell channel; ``afhub.web.dashboards.channels``). Real sockets, real
``jupyter_client`` channels and session; nothing mocked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from queue import Empty

import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from afhub.web.dashboards.channels import WakefulChannel, WakefulKernelClient, next_wait


def test_next_wait_slices_and_stops_at_the_deadline():
    assert next_wait(None, 100.0, 0.5) == 0.5
    assert next_wait(110.0, 100.0, 0.5) == 0.5
    assert next_wait(100.2, 100.0, 0.5) == pytest.approx(0.2)
    assert next_wait(99.0, 100.0, 0.5) == 0.0


async def _read_after_missed_wakeup(channel_class, wait: float) -> tuple[bool, dict | None]:
    """Whether ``channel_class`` read the message within ``wait`` seconds, and the message."""
    sync = zmq.Context()
    address = f"inproc://channel-{uuid.uuid4().hex}"
    peer = sync.socket(zmq.PAIR)
    peer.bind(address)
    sock = zmq.asyncio.Context.shadow(sync.underlying).socket(zmq.PAIR)
    sock.connect(address)
    session = Session(key=b"test")
    channel = channel_class(sock, session)
    reading = asyncio.ensure_future(channel.get_msg())
    try:
        await asyncio.sleep(0.1)  # the read waits on the socket's file descriptor
        assert not reading.done()
        session.send(peer, "execute_reply", {"status": "ok"})
        # no await in between: the event loop has not seen the edge, and this read of
        # EVENTS (which does see the message) consumes it; through a plain socket on the
        # same libzmq socket (zmq.asyncio's own ``get`` reschedules its reads)
        assert zmq.Socket.shadow(sock.underlying).get(zmq.EVENTS) & zmq.POLLIN
        done, _ = await asyncio.wait({reading}, timeout=wait)
        return bool(done), (reading.result() if done else None)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        sock.close(linger=0)
        peer.close(linger=0)
        sync.term()


def test_plain_channel_misses_the_message():
    """The control: jupyter_client's own channel is not woken (the hang this works
    around). Should a new pyzmq fix it, this fails and the workaround may go."""
    read, _ = asyncio.run(_read_after_missed_wakeup(AsyncZMQSocketChannel, wait=2.0))
    assert not read


def test_wakeful_channel_reads_the_message_within_a_slice():
    started = time.monotonic()
    read, msg = asyncio.run(_read_after_missed_wakeup(WakefulChannel, wait=2.0))
    assert read
    assert msg is not None
    assert msg["msg_type"] == "execute_reply"
    assert msg["content"] == {"status": "ok"}
    assert time.monotonic() - started < 0.1 + WakefulChannel.slice_seconds + 1.0


def test_wakeful_channel_gives_up_at_its_timeout():
    async def wait_for_nothing() -> float:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.PAIR)
        sock.bind(f"inproc://nothing-{uuid.uuid4().hex}")
        channel = WakefulChannel(sock, Session(key=b"test"))
        started = time.monotonic()
        try:
            with pytest.raises(Empty):
                await channel.get_msg(timeout=0.3)
            return time.monotonic() - started
        finally:
            sock.close(linger=0)
            ctx.term()

    waited = asyncio.run(wait_for_nothing())
    assert 0.3 <= waited < 1.5


def test_kernel_client_uses_wakeful_channels_for_every_zeromq_channel():
    client = WakefulKernelClient()
    for name in ("shell", "iopub", "stdin", "control"):
        assert getattr(client, f"{name}_channel_class") is WakefulChannel


def test_the_dashboards_server_gives_its_kernels_wakeful_clients():
    """The service's own command line, read as Jupyter Server reads it, gives the kernel
    managers that Jupyter Server makes (``ServerKernelManager``) wakeful clients."""
    from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
    from traitlets.config.loader import KVArgParseConfigLoader

    from afhub.web.dashboards.__main__ import arguments

    options = [a for a in arguments("/nowhere") if "=" in a]  # less flags (--allow-root)
    config = KVArgParseConfigLoader(options).load_config()
    manager = ServerKernelManager(config=config)
    assert manager.client_factory is WakefulKernelClient
    assert isinstance(manager.client(), WakefulKernelClient)
