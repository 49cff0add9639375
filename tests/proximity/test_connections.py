"""A worker's connections are bounded: a client that trickles its headers, or announces a body and never
sends it, is cut after the configured timeout (``header_timeout_s``, ``body_timeout_s``); one connection
over ``max_connections`` gets a 503 at once and is closed, the others keep being served.

Each test serves a real worker (``make_runner`` + ``listen``, as ``serve_forever`` does) on 127.0.0.1 and
talks to it with raw asyncio sockets; every wait is bounded (``asyncio.wait_for``) so a server that never
cuts the connection fails the test instead of hanging it. No timing is asserted beyond "cut before the
bound": the bounds are many times the configured timeouts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from proximity.service import bind_socket, create_app, make_runner
from proximity.service.app import listen
from proximity.service.config import ServiceConfig
from tests.proximity.test_server import KEYS, SDK

BOUND_S = 20.0  # a connection not cut within this is a failure (the timeouts below are 0.5 s)


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    runners: list[web.AppRunner] = []

    async def start(**settings: object) -> int:
        cfg = ServiceConfig(demo=True, rate_limit=0, **settings)  # type: ignore[arg-type]
        runner = make_runner(create_app(cfg, keys=KEYS, warm_on_start=False), cfg)
        await runner.setup()
        sock = bind_socket("127.0.0.1", 0)
        await listen(runner, sock, cfg)
        runners.append(runner)
        return int(sock.getsockname()[1])

    yield start
    for runner in runners:
        await runner.cleanup()


async def _closed_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes = b"") -> bytes:
    """Everything the server sends until it closes the connection, sending ``trickle`` a byte per 0.1 s
    meanwhile (a slowloris client); fails when the server keeps it open past ``BOUND_S``."""

    async def drip() -> None:
        for i in range(len(trickle)):
            writer.write(trickle[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        return await asyncio.wait_for(reader.read(), BOUND_S)  # read() returns at EOF (or on a reset)
    finally:
        dripping.cancel()
        writer.close()


async def test_trickled_headers_are_cut_after_header_timeout(serve) -> None:
    port = await serve(header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # 400 bytes of headers at 10 bytes/s would take 40 s: the server must cut it after 0.5 s
    headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 400 + b"\r\n\r\n"
    answer = await _closed_after(reader, writer, trickle=headers)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_a_connection_that_sends_nothing_is_cut_after_header_timeout(serve) -> None:
    port = await serve(header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _closed_after(reader, writer) == b""


async def test_an_announced_body_never_sent_gets_408_after_body_timeout(serve) -> None:
    port = await serve(header_timeout_s=60, body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/pings HTTP/1.1\r\nHost: x\r\nX-API-Key: {SDK}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 5000\r\n\r\n{\"pings\": [".encode())
    await writer.drain()
    answer = await _closed_after(reader, writer)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b'"field":"body"' in answer and b"within 0.5 s" in answer


async def test_a_connection_over_max_connections_gets_503_at_once_and_others_are_served(serve) -> None:
    port = await serve(max_connections=2, header_timeout_s=60)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await asyncio.sleep(0.2)  # both accepted and counted
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    answer = await _closed_after(reader, writer)  # answered and closed without waiting for the others
    assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
    assert b"Retry-After: 1" in answer and b'"reason": "too_many_connections"' in answer
    # the connections within the limit are served as usual
    r0, w0 = held[0]
    w0.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await w0.drain()
    assert (await asyncio.wait_for(r0.readuntil(b"\r\n"), BOUND_S)).startswith(b"HTTP/1.1 200")
    # one closed: a new connection is served again
    for _, w in held:
        w.close()
    for _ in range(100):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await _closed_after(reader, writer)
        if answer.startswith(b"HTTP/1.1 200"):
            break
        await asyncio.sleep(0.05)  # the closed connections' handlers are still finishing
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


async def test_refused_connections_are_counted_in_metrics(serve) -> None:
    port = await serve(max_connections=1, header_timeout_s=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)  # served: it holds the one slot
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    assert (await _closed_after(r2, w2)).startswith(b"HTTP/1.1 503")
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    body = await _closed_after(reader, writer)
    assert b'proximity_rejected_requests_total{reason="too_many_connections"} 1' in body, body[-2000:]


@pytest.mark.parametrize("setting", ["header_timeout_s", "body_timeout_s", "max_connections"])
def test_the_settings_are_checked(setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        ServiceConfig(**{setting: 0})


def _listen_queue(port: int) -> int:
    """How many connections wait to be accepted on the listening socket on ``port`` (``/proc/net/tcp``: a
    listening socket's rx_queue)."""
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no listening socket on port {port}")


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize("workers", [1, 2])
async def test_a_worker_sharing_its_socket_accepts_one_connection_a_wake_up(workers: int) -> None:
    """With workers sharing the socket, each wake-up takes one queued connection (a burst of connections is
    split between the workers that are free, not taken whole by the first one awake); alone, a worker takes
    the whole queue at once. The kernel's queue stays long either way."""
    from proximity.service.guard import GuardedSite

    cfg = ServiceConfig(demo=True, rate_limit=0)
    site_cfg = dataclasses.replace(cfg, workers=workers, redis="redis://127.0.0.1:1/0" if workers > 1 else None)
    runner = make_runner(create_app(cfg, keys=KEYS, warm_on_start=False), cfg)
    await runner.setup()
    sock = bind_socket("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    clients: list[socket.socket] = []
    try:
        site = GuardedSite(runner, sock, site_cfg)
        await site.start()
        for _ in range(10):  # queued by the kernel before the loop runs again
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(c)
        assert _listen_queue(port) == 10  # (so the kernel's queue is still long: not create_server's 1)
        for _ in range(20):
            await asyncio.sleep(0)
            waiting = _listen_queue(port)
            if waiting < 10:
                break
        assert waiting == (9 if workers > 1 else 0)
        for _ in range(200):  # and the others on the following wake-ups
            await asyncio.sleep(0)
            if _listen_queue(port) == 0:
                break
        assert _listen_queue(port) == 0
        server = runner.server
        assert server is not None
        for _ in range(200):  # every accepted one handed to a request handler before the worker stops
            await asyncio.sleep(0)
            if len(server.connections) == len(clients):
                break
        assert len(server.connections) == len(clients)
    finally:
        for c in clients:
            c.close()
        await runner.cleanup()
