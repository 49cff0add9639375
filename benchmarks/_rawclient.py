"""A lean HTTP/1.1 client for the load generators: keep-alive connections, one request in flight on each.

aiohttp's client costs ~0.2-0.3 ms of CPU a request. Driving a worker at a few thousand small requests per
second on a 2-core machine, that is most of a core taken from the server under test, so the "half load"
latency was measured on a saturated machine. This client writes each request as one prebuilt buffer
(request line, fixed headers, ``Content-Length``, body) and reads the answer with a ``Content-Length`` body
(what aiohttp's server sends for a JSON answer): a status, a few header lines, the body. Anything else
(a chunked answer, a closed connection) raises :class:`RawClientError`, counted as an error by the caller.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit


class RawClientError(Exception):
    """The server closed the connection or answered in a form this client does not read."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._answer()

    def _answer(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        try:
            status = int(head[9:12])
            at = head.index(b"\r\ncontent-length:") + 17
            length = int(head[at : head.index(b"\r\n", at) if b"\r\n" in head[at:] else len(head)])
        except ValueError:
            self.closed = True
            waiter.set_exception(RawClientError(f"an answer without Content-Length: {head[:200]!r}"))
            return
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        if b"\r\nconnection: close" in head:
            self.closed = True
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(RawClientError(f"the server closed the connection ({exc})"))


class RawClient:
    """POSTs to one URL over up to ``connections`` keep-alive connections (more requests than that wait)."""

    def __init__(self, url: str, headers: dict[str, str], connections: int = 64) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/"
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()
        self._idle: deque[_Conn] = deque()
        self._open = 0
        self._limit = connections
        self._free = asyncio.Condition()

    async def _take(self) -> _Conn:
        async with self._free:
            while True:
                while self._idle:
                    conn = self._idle.popleft()
                    if not conn.closed:
                        return conn
                    self._open -= 1
                if self._open < self._limit:
                    self._open += 1
                    break
                await self._free.wait()
        try:
            _t, conn = await asyncio.get_running_loop().create_connection(_Conn, self.host, self.port)
        except OSError:
            async with self._free:
                self._open -= 1
                self._free.notify()
            raise
        return conn

    async def _give(self, conn: _Conn) -> None:
        async with self._free:
            if conn.closed:
                self._open -= 1
                if conn.transport is not None:
                    conn.transport.close()
            else:
                self._idle.append(conn)
            self._free.notify()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """``(status, body)`` of one POST of ``body``."""
        conn = await self._take()
        try:
            conn.waiter = asyncio.get_running_loop().create_future()
            assert conn.transport is not None
            conn.transport.write(b"%b%d\r\n\r\n%b" % (self._head, len(body), body))
            return await conn.waiter
        except BaseException:
            conn.closed = True
            raise
        finally:
            conn.waiter = None
            await self._give(conn)

    async def close(self) -> None:
        async with self._free:
            while self._idle:
                conn = self._idle.popleft()
                if conn.transport is not None:
                    conn.transport.close()
            self._open = 0


def quiet_collector() -> None:
    """For a load generator's measured phase (bounded in time, so in memory): no garbage collection pauses.

    A generator keeps every request's task and answer of a phase (tens of thousands); Python's full
    collections walk them all, and a pause of the generator delays reading every answer in flight: an open
    loop at a few thousand requests a second measured p99 35-66 ms that way against 10-19 ms without, with the
    server's own histograms under 10 ms. What exists is frozen (never walked again) and collection stops
    until the process ends."""
    gc.collect()
    gc.freeze()
    gc.disable()


class InFlight:
    """An open loop's requests in flight: each task is held until it is done, then dropped.

    Gathering every task of a phase at its end (tens of thousands) walked them all in one step of the
    generator's loop, 20-80 ms during which no answer in flight was read: the last requests of every phase
    measured that stall (a 1-ping phase at 4,400 requests/s ended with 10-20 answers at 78-86 ms, every
    run). Waiting only for those still in flight costs nothing."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every request started is answered (an exception of one is raised here)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)


__all__ = ["InFlight", "RawClient", "RawClientError", "quiet_collector"]
