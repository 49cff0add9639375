"""A cuttable TCP proxy for fault tests: put it between a client and a real server (Redis, an HTTP
service) and break the link on command.

    with FaultProxy("127.0.0.1", 6379) as proxy:
        client = redis.Redis(port=proxy.port, socket_timeout=0.5)
        proxy.refuse()      # new connections refused, open ones reset
        proxy.blackhole()   # connections accepted, bytes silently dropped both ways (clients time out)
        proxy.cut()         # every open connection reset now; new ones pass
        proxy.cut_after(n)  # pass n more bytes (both directions together), then reset mid-stream
        proxy.restore()     # forward again (open blackholed connections are reset, as a timeout would)

The proxy runs its own event loop in a daemon thread, so synchronous tests, async tests and tests
driving subprocesses use it alike; every method is thread-safe and returns once the change is in
effect. ``stats`` counts connections accepted and bytes forwarded. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

MODES = ("pass", "refuse", "blackhole")


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode = "pass"
        self.stats = {"connections": 0, "bytes": 0, "resets": 0}
        self._cut_budget: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    # -- control (any thread) ----------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._do(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._do(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def refuse(self) -> None:
        self._do(self._set("refuse"))

    def blackhole(self) -> None:
        self._do(self._set("blackhole"))

    def restore(self) -> None:
        self._do(self._set("pass"))

    def cut(self) -> None:
        self._do(self._reset_all())

    def cut_after(self, n_bytes: int) -> None:
        """Forward ``n_bytes`` more (in either direction), then reset every open connection."""
        self._call(lambda: setattr(self, "_cut_budget", n_bytes))

    # -- inside the proxy's loop -------------------------------------------------------------

    def _do(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _call(self, fn: Callable[[], Any]) -> None:
        async def run() -> None:
            fn()

        self._do(run())

    async def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._reset_all()

    async def _set(self, mode: str) -> None:
        old, self.mode = self.mode, mode
        if mode == "refuse":
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            await self._reset_all()
        elif old == "blackhole":
            await self._reset_all()
        if mode != "refuse" and self._server is None:
            await self._listen()

    async def _reset_all(self) -> None:
        for a, b in list(self._conns):
            for w in (a, b):
                w.transport.abort()
            self.stats["resets"] += 1
        self._conns.clear()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            c_writer.transport.abort()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            return
        self.stats["connections"] += 1
        pair = (c_writer, s_writer)
        self._conns.add(pair)
        await asyncio.gather(self._pipe(c_reader, s_writer, pair), self._pipe(s_reader, c_writer, pair),
                             return_exceptions=True)
        self._conns.discard(pair)
        for w in pair:
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: Any) -> None:
        while True:
            data = await reader.read(65536)
            if not data or pair not in self._conns:
                break
            if self.mode == "blackhole":
                continue  # dropped on the floor: the other side waits until its own timeout
            if self._cut_budget is not None:
                if len(data) >= self._cut_budget:
                    writer.write(data[: self._cut_budget])
                    await writer.drain()
                    self._cut_budget = None
                    await self._reset_all()
                    break
                self._cut_budget -= len(data)
            writer.write(data)
            self.stats["bytes"] += len(data)
            await writer.drain()
        for w in pair:
            w.transport.abort()
