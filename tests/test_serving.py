"""The front door: uvicorn with limits on request heads, slow requests and open connections.

Every test talks raw HTTP over loopback sockets to a real uvicorn server, as an attacker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from coinslot import serving
from coinslot.settings import Settings

LIMITS = serving.Limits(max_head_bytes=4096, request_timeout_s=0.5, max_connections=8)
bodies_cut: list[str] = []  # what the app saw of requests whose client stopped mid-body


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    try:
        body = await Request(scope, receive).body()
    except ClientDisconnect:
        bodies_cut.append(scope["path"])
        return
    reply = b"%s %d" % (scope["path"].encode(), len(body))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(reply))]})
    await send({"type": "http.response.body", "body": reply})


@contextlib.asynccontextmanager
async def running(limits: serving.Limits = LIMITS) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(app, http=serving.protocol(limits), log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def answer(reader: asyncio.StreamReader) -> bytes:
    """All the server sends until it closes the connection (at most 5 s)."""
    return await asyncio.wait_for(reader.read(), 5)


async def get(port: int, path: str = "/ok") -> bytes:
    reader, writer = await connect(port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    try:
        return await answer(reader)
    finally:
        writer.close()


async def test_requests_within_the_limits_are_served_also_kept_alive_and_pipelined() -> None:
    async with running() as port:
        reader, writer = await connect(port)
        big_body = b"x" * 100_000  # bodies are the app's to limit, not the head's
        writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(big_body), big_body))
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        replies = await answer(reader)
        writer.close()
    assert replies.count(b"HTTP/1.1 200 OK") == 3
    assert replies.endswith(b"/b 0") and b"/big 100000" in replies and b"/a 0" in replies


@pytest.mark.parametrize("header_bytes", [5_000, 50_000_000])
async def test_a_head_over_the_limit_is_refused_early_without_stalling_others(header_bytes: int) -> None:
    async with running() as port:
        reader, writer = await connect(port)
        refused_task = asyncio.create_task(answer(reader))  # the client reads while it sends, as browsers do
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while sent < header_bytes and not refused_task.done():
                chunk = b"a" * min(64 * 1024, header_bytes - sent)
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0)
                sent += len(chunk)
            writer.write(b"\r\n\r\n")
        refused = await refused_task
        others = await get(port)
        writer.close()
    assert refused.startswith(b"HTTP/1.1 431 ")
    assert b"exceed 4096 bytes" in refused
    assert sent < 2_000_000  # the answer came long before the 50 MB were sent
    assert others.startswith(b"HTTP/1.1 200 OK")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (b"", b"408"),  # a connection that never says anything
        (b"GET /slow HTTP/1.1\r\nHost: x\r\nX-A: ", b"408"),  # headers that never end
        (b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789", None),  # a body that never ends
    ],
    ids=["silent", "partial-headers", "partial-body"],
)
async def test_a_request_not_complete_in_time_is_closed(sent: bytes, status: bytes | None) -> None:
    bodies_cut.clear()
    async with running() as port:
        reader, writer = await connect(port)
        writer.write(sent)
        started = time.monotonic()
        closed = await answer(reader)
        waited = time.monotonic() - started
        served = await get(port)
        writer.close()
    assert 0.4 < waited < 3
    if status is None:  # the app was reading the body when the time ran out: it learns the client is gone
        assert bodies_cut == ["/slow"]
    else:
        assert closed.startswith(b"HTTP/1.1 " + status)
    assert served.startswith(b"HTTP/1.1 200 OK")


async def test_a_kept_alive_connection_gets_the_time_afresh_for_each_request() -> None:
    async with running() as port:
        reader, writer = await connect(port)
        for n in range(3):
            await asyncio.sleep(LIMITS.request_timeout_s * 0.6)  # 3 x 0.6 > one timeout, each within it
            writer.write(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            assert (await asyncio.wait_for(reader.readuntil(b"/%d 0" % n), 5)).startswith(b"HTTP/1.1 200 OK")
        writer.close()


async def test_connections_past_the_limit_are_refused_at_once_and_admitted_again_later() -> None:
    limits = serving.Limits(max_head_bytes=4096, request_timeout_s=5, max_connections=4)
    async with running(limits) as port:
        held = [await connect(port) for _ in range(4)]
        reader, writer = await connect(port)
        started = time.monotonic()
        refused = await answer(reader)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in refused.lower()
        assert time.monotonic() - started < 1
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        assert (await get(port)).startswith(b"HTTP/1.1 200 OK")


def test_the_limits_come_from_settings() -> None:
    settings = Settings.from_env(
        {"COINSLOT_MAX_HEAD_BYTES": "8192", "COINSLOT_REQUEST_TIMEOUT": "2.5", "COINSLOT_MAX_CONNECTIONS": "50"},
        env_file=None,
    )
    assert serving.Limits.of(settings) == serving.Limits(8192, 2.5, 50)
    assert serving.Limits.of(Settings()) == serving.Limits(16 * 1024, 10.0, 1000)
