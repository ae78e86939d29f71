"""The gateway's proxy ends each watch of its routes after 60 s and starts a new one; the
gateway learns of an ended watch only when the next route change is written to it. Each
ended watch was an aiohttp traceback ("Cannot write to closing transport") at the first
cluster after a quiet time (issue 13, noise). A real aiohttp server and a client that ends
its watch, with and without the gateway's middleware."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from afhub.services.gateway.middleware import ROUTES_PATH, json_answers


async def watch_ended_then_route_changed(middlewares: list) -> None:
    changed, written = asyncio.Event(), asyncio.Event()

    async def routes(request: web.Request) -> web.StreamResponse:
        # as dask_gateway_server.proxy.core's watch: a stream, one line per change
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await changed.wait()
        try:
            await response.write(b'{"events": []}\n')
        finally:
            written.set()
        return response

    app = web.Application(middlewares=middlewares)
    app.router.add_get(ROUTES_PATH, routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {ROUTES_PATH}?watch=1 HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the stream has begun
        writer.close()  # the proxy's client timeout ends the watch
        await writer.wait_closed()
        await asyncio.sleep(0.2)
        changed.set()  # the next cluster's route
        await asyncio.wait_for(written.wait(), 5)
        await asyncio.sleep(0.2)  # the answer is finished (or the error logged)
    finally:
        await runner.cleanup()


def server_errors(caplog, middlewares: list) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
        asyncio.run(watch_ended_then_route_changed(middlewares))
    return [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"]


def test_an_ended_watch_is_not_logged_as_an_error(caplog):
    # without the gateway's middleware: the traceback of the issue
    assert server_errors(caplog, []) == ["Error handling request from 127.0.0.1"]
    # with it: nothing
    assert server_errors(caplog, [json_answers(logging.getLogger("test.gateway"))]) == []
