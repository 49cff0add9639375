"""Connections a worker takes: at most ``max_connections`` at once, each bounded in time.

- **Headers**: the runner's idle timeout is ``header_timeout_s`` (aiohttp's ``keepalive_timeout``,
  which runs from the moment a connection opens or its previous answer was sent until a request's
  line and headers are complete): a client that trickles its headers, or opens a connection and
  sends nothing, is disconnected after it; an idle keep-alive connection too.
- **Body**: :func:`proximity.service.codec.read_body` gives a body ``body_timeout_s`` to arrive
  (408 and the connection closed after it).
- **Connections**: a worker serving ``max_connections`` connections (a connection counts until
  the request it carries is finished) answers a new one at once with a canned 503 (``Retry-After:
  1``, ``Connection: close``, JSON body ``reason: too_many_connections``) and closes it, without
  parsing it or running any handler; every other worker sharing the socket keeps accepting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from proximity.service.config import ServiceConfig

_BODY = json.dumps({"error": "too many connections to this worker; retry after Retry-After",
                    "reason": "too_many_connections"}).encode()
#: the whole answer to a connection over the limit (written before its request is read)
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_BODY)) + _BODY
#: how long a refused connection is kept half-open for its request to be read and dropped (closing at
#: once with unread bytes would reset it, and the client could lose the 503)
LINGER_S = 1.0
#: the kernel's queue of connections not yet accepted (:func:`proximity.service.app.bind_socket`'s)
LISTEN_BACKLOG = 1024


class Busy(asyncio.Protocol):
    """A connection over the limit: the 503, a half-close, what the client sends is dropped, then close."""

    def __init__(self, on_refused: Callable[[], None]) -> None:
        self.on_refused = on_refused
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(BUSY)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        self.on_refused()

    def data_received(self, data: bytes) -> None:
        pass  # the request of a refused connection is not read

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


def limited(server: web.Server, max_connections: int, on_refused: Callable[[], None]) -> Callable[[], Any]:
    """A protocol factory: ``server``'s request handler while it has fewer than ``max_connections``
    connections, else :class:`Busy`."""

    def factory() -> asyncio.Protocol:
        if len(server.connections) >= max_connections:
            return Busy(on_refused)
        return server()

    return factory


class GuardedSite(web.SockSite):
    """A :class:`aiohttp.web.SockSite` whose connections go through :func:`limited`."""

    def __init__(self, runner: web.BaseRunner, sock: Any, config: ServiceConfig,
                 on_refused: Callable[[], None] = lambda: None) -> None:
        super().__init__(runner, sock)
        self.config = config
        self.on_refused = on_refused

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert isinstance(server, web.Server)
        factory = limited(server, self.config.max_connections, self.on_refused)
        # asyncio accepts as many queued connections per wake-up as its ``backlog``: on a socket shared by
        # workers, whichever woke first took a whole burst of new connections (128 opened at once went 79 to
        # 49 between two workers), and kept that share of the load for as long as they lived. One a wake-up:
        # the workers that are free take turns, and a busy one (in an engine call) leaves them to the others.
        shared = self.config.workers > 1
        self._server = await asyncio.get_running_loop().create_server(factory, sock=self._sock,
                                                                      backlog=1 if shared else self._backlog)
        if shared:
            self._sock.listen(LISTEN_BACKLOG)  # (create_server set the kernel's queue to 1 too: as long as before)


__all__ = ["BUSY", "Busy", "GuardedSite", "limited"]
