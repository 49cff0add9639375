"""Safe retries: a batch's first response is kept per ``batch_id`` and replayed for a repeat.

:class:`MemoryIdempotency` (one process) and :class:`RedisIdempotency` (shared by
every worker, so a retry that lands on another worker is replayed too) answer
``claim``; :func:`idempotent` runs a handler's work once per key.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proximity.service.errors import ApiError, redis_unavailable
from proximity.service.metrics import ServiceMetrics


class IdempotencyStore:
    """Responses kept per batch_id (interface). ``claim`` answers one of:

    - ``("new", None)``: first time; the caller processes then calls ``complete`` (or ``release``);
    - ``("pending", None)``: another request with this id is being processed;
    - ``("done", (status, body))``: processed before; replay it.
    """

    async def claim(self, key: str) -> tuple[str, tuple[int, bytes] | None]:
        raise NotImplementedError

    async def complete(self, key: str, status: int, body: bytes) -> None:
        raise NotImplementedError

    async def release(self, key: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class MemoryIdempotency(IdempotencyStore):
    """In the process: at most ``max_entries`` responses, each for ``ttl`` seconds."""

    def __init__(self, ttl: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[int, bytes] | None]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[key]

    async def claim(self, key: str) -> tuple[str, tuple[int, bytes] | None]:
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            self._entries[key] = (now + self.ttl, None)
            return "new", None
        return ("pending", None) if entry[1] is None else ("done", entry[1])

    async def complete(self, key: str, status: int, body: bytes) -> None:
        self._entries[key] = (self._clock() + self.ttl, (status, body))
        self._entries.move_to_end(key)

    async def release(self, key: str) -> None:
        self._entries.pop(key, None)


class RedisIdempotency(IdempotencyStore):
    """In Redis, so a retry that lands on another worker is replayed too.

    ``<prefix>:idem:<hash>`` holds ``pending`` (set with NX and a short expiry
    while processing) and then ``<status> <body>`` for ``ttl`` seconds.
    """

    PENDING = b"pending"

    def __init__(self, client: Any, prefix: str, ttl: float, pending_ttl: float = 60.0) -> None:
        self._client = client
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self.pending_ms = max(1, int(pending_ttl * 1000))

    def _key(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    async def claim(self, key: str) -> tuple[str, tuple[int, bytes] | None]:
        with redis_unavailable("idempotency store"):
            return await self._claim(self._key(key))

    async def _claim(self, k: str) -> tuple[str, tuple[int, bytes] | None]:
        if await self._client.set(k, self.PENDING, nx=True, px=self.pending_ms):
            return "new", None
        value = await self._client.get(k)
        if value is None:  # expired in between: try once more
            if await self._client.set(k, self.PENDING, nx=True, px=self.pending_ms):
                return "new", None
            value = await self._client.get(k)
        if value is None or value == self.PENDING:
            return "pending", None
        status, _, body = bytes(value).partition(b" ")
        return "done", (int(status), body)

    async def complete(self, key: str, status: int, body: bytes) -> None:
        with redis_unavailable("idempotency store"):
            await self._client.set(self._key(key), str(status).encode() + b" " + body, px=self.ttl_ms)

    async def release(self, key: str) -> None:
        with redis_unavailable("idempotency store"):
            await self._client.delete(self._key(key))


async def idempotent(store: IdempotencyStore, metrics: ServiceMetrics, scope: str, batch_id: str | None,
                     work: Callable[[], Awaitable[web.Response]]) -> web.Response:
    """Run ``work`` once per (``scope``, ``batch_id``); replay its response for repeats (``scope`` names the
    endpoint and the key, so two keys never see each other's responses)."""
    if batch_id is None:
        return await work()
    digest = hashlib.sha256(f"{scope}\0{batch_id}".encode()).hexdigest()[:40]
    state, stored = await store.claim(digest)
    if state == "done" and stored is not None:
        metrics.replays.inc()
        status, body = stored
        return web.Response(body=body, status=status, content_type="application/json",
                            headers={"Idempotent-Replay": "true"})
    if state == "pending":
        raise ApiError(409, f"batch_id {batch_id!r} is being processed by another request; retry shortly",
                       field="batch_id", reason="in_progress", headers={"Retry-After": "1"})
    try:
        response = await work()
    except BaseException:
        with contextlib.suppress(Exception):
            await store.release(digest)
        raise
    if response.status < 500 and response.body is not None:
        await store.complete(digest, response.status, bytes(response.body))  # type: ignore[arg-type]
    else:
        await store.release(digest)
    return response


__all__ = ["IdempotencyStore", "MemoryIdempotency", "RedisIdempotency", "idempotent"]
