"""Concurrent ``POST /v1/pings`` requests on one worker share one engine call.

A phone posts 1 to 10 pings at a time; run alone, each request pays the engine's
fixed cost (a hop to the engine thread, the sort, the fence match, the store call,
the campaign set-up) for a handful of pings. :class:`Coalescer` queues the parsed
rows of each request and the engine thread takes them together
(:meth:`proximity.service.host.EngineHost.process_ping_parts`, then
:meth:`proximity.engine.Engine.process_ping_parts`):

- **Adaptive window.** A request that finds the engine idle starts a call as soon as
  the event loop has nothing else ready to run (:meth:`Coalescer._settle`): the
  requests the loop has already read join it, and there is no timer, so a lone
  request is never delayed. While a call runs, arriving requests wait for it and go
  together in the next call, so the window is one engine call long and grows only
  with load. A call takes at most ``max_pings`` pings (a bigger request runs alone).
- **Exact answers.** Each request gets what it would get alone, run in arrival order:
  its events, its offers (the rules run per request, in order), its counts, its
  rejected rows numbered as in its own body, its own ingest journal (its ``batch_id``;
  its idempotency record stays the request's own, see :func:`proximity.service.idempotency.idempotent`).
- **Order per device.** A call never holds two requests with the same device: the
  later one, and every request after it, waits for the next call, so requests are
  applied in arrival order.
- **Isolation.** A request with a malformed body never gets here (it is answered
  400 first); a request with bad rows gets its rejections, its neighbours theirs. If
  a coalesced call fails for a reason other than the shared state being away (a
  bug), each of its requests is run again alone, so only the one that fails, fails.
  When the state store is away every request of the call gets the 503 (a retry with
  the same ``batch_id`` answers what was committed, from its journal).
- **Where a call runs.** With the state in this process (memory), a call runs on the
  event loop's thread whenever the engine thread has nothing queued
  (:meth:`~proximity.service.host.EngineHost.run_here`): handing a call of a few
  hundred microseconds to another thread and back cost more than the call, and the
  two threads taking turns with the GIL made the latency's tail. With Redis state
  too, while Redis is calm (no call slow or failed for ``INLINE_CALM_S``): a call
  on the loop holds the loop for its round trips.
- **Where the time goes.** ``proximity_coalesce_wait_seconds`` (a request's wait for
  its call to start) and ``proximity_ping_engine_call_seconds{where}`` (a call's wall
  time) split a request's latency into queueing and engine time (what is left of
  ``proximity_http_request_seconds`` is parsing, rendering and the loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from proximity.batch import PingBatch
from proximity.engine import BatchResult
from proximity.errors import StoreUnavailable, ValidationError
from proximity.service.bodies import devices_of

log = logging.getLogger("proximity.service.coalesce")

Answer = tuple[BatchResult, int, list[ValidationError]]

#: loop turns a call waits at most for the requests the loop has read to reach the queue (:meth:`Coalescer._settle`)
SETTLE_ROUNDS = 16


@dataclass
class _Part:
    rows: list[Any] | PingBatch  # JSON rows, or a plain body's pings read already (see proximity.plain_json)
    journal: str | None
    devices: frozenset[str]
    future: asyncio.Future[Answer] = field(repr=False)
    queued: float = field(default_factory=time.perf_counter)


class Coalescer:
    """Queues requests' ping rows and runs them through the engine host in shared calls (see the module)."""

    def __init__(self, host: Any, max_pings: int = 500, metrics: Any = None, window_s: float = 0.0) -> None:
        self.host = host
        self.max_pings = max_pings
        self.metrics = metrics
        self.window_s = window_s
        self._queue: deque[_Part] = deque()
        self._queued_pings = 0
        self._task: asyncio.Task[None] | None = None
        #: the mean gap between requests' arrivals (an exponential average, seconds): under :attr:`window_s`,
        #: requests come fast enough that a call waits for the window (see :meth:`_wait`)
        self._gap = self._recent = math.inf
        self._last = -math.inf
        #: engine calls made and requests they answered (``requests / calls`` is the mean coalescing)
        self.calls = 0
        self.requests = 0

    async def submit(self, rows: list[Any] | PingBatch, journal: str | None,
                     devices: Iterable[str] | None = None) -> Answer:
        """``(result, accepted, rejected)`` of these rows (or batch), as ``host.process_pings(rows, now, journal)``
        answers. ``devices``: the device ids the rows name (:func:`~proximity.service.bodies.devices_of`, which
        the request has already read to charge its rate limits; read again when not given)."""
        loop = asyncio.get_running_loop()
        if devices is not None:
            named: Iterable[str] = devices
        elif isinstance(rows, PingBatch):
            named = rows.device_id.tolist()
        else:
            named = devices_of(rows, "device_id")
        part = _Part(rows, journal, frozenset(named), loop.create_future())
        self._recent = part.queued - self._last
        self._gap = self._recent if math.isinf(self._gap) else 0.8 * self._gap + 0.2 * self._recent
        self._last = part.queued
        self._queue.append(part)
        self._queued_pings += len(rows)
        if self._task is None:
            self._task = loop.create_task(self._drain(), name="coalesce")
        return await part.future

    def _take(self) -> list[_Part]:
        """The next call's requests: in arrival order, until one shares a device or the pings would pass
        ``max_pings`` (the first request is always taken)."""
        group = [self._queue.popleft()]
        seen = set(group[0].devices)
        pings = len(group[0].rows)
        while self._queue:
            nxt = self._queue[0]
            if pings + len(nxt.rows) > self.max_pings or not seen.isdisjoint(nxt.devices):
                break
            self._queue.popleft()
            group.append(nxt)
            seen |= nxt.devices
            pings += len(nxt.rows)
        self._queued_pings -= pings
        return group

    async def _wait(self) -> None:
        """Under load, hold the next call until ``window_s`` after its first request came (or the queue holds
        ``max_pings``): requests that come every fraction of a window then share a call, whose fixed cost
        (about 0.3 ms of CPU) would otherwise be paid per request just as the worker gets busy. A request
        that comes after a quiet spell (its gap, or the mean gap, is over the window) never waits."""
        if max(self._gap, self._recent) >= self.window_s or self._queued_pings >= self.max_pings:
            return
        delay = self._queue[0].queued + self.window_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _settle(self) -> None:
        """Yield to the event loop until it has nothing else ready to run, at most :data:`SETTLE_ROUNDS` times
        (or until ``max_pings`` are queued). A loop turn runs the callbacks that were ready when it began, and
        this task's own wake-up comes before the socket reads that the turn's poll found: one ``sleep(0)``
        would start the call before the requests the loop has just read had been parsed and queued, so each
        of them waited for one more call (on the loop thread, a call holds the loop: they were not even read
        until it ended). Letting the loop run dry first puts every request it has already read into this call:
        under load the calls hold more requests (the fixed cost of a call is paid less often), and a request
        that came during a call goes in the next one, not the one after (unless that one is full or holds its
        device). A lone request finds nothing else ready and goes at the first turn, as before; the cap keeps
        a loop that is never idle from holding a call back."""
        ready = getattr(asyncio.get_running_loop(), "_ready", None)  # asyncio's run queue (None: another loop)
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
            if not ready or self._queued_pings >= self.max_pings:
                return

    async def _drain(self) -> None:
        try:
            await self._settle()  # the requests already read join the first call
            while self._queue:
                if self.window_s:
                    await self._wait()
                group = self._take()
                self.calls += 1
                self.requests += len(group)
                started = time.perf_counter()
                where = "loop" if self.host.runs_here else "thread"
                await self._run(group)
                if self.metrics is not None:
                    self.metrics.ping_calls.inc()
                    self.metrics.coalesced.inc(len(group))
                    for p in group:
                        self.metrics.coalesce_wait.observe(started - p.queued)
                    self.metrics.ping_call.labels(where).observe(time.perf_counter() - started)
                if self._queue:  # (a call run on the loop thread never yielded) let the loop read and write
                    await self._settle()
        finally:
            self._task = None
            if self._queue:  # (only when cancelled at shutdown) nothing is left waiting forever
                for part in self._queue:
                    if not part.future.done():
                        part.future.set_exception(StoreUnavailable("the worker is shutting down", retry_after_s=1.0))
                self._queue.clear()
                self._queued_pings = 0

    async def _run(self, group: list[_Part]) -> None:
        host = self.host
        try:
            if len(group) == 1:  # a lone request takes the engine host's one-batch path, as without coalescing
                answers = [await host.run_here(host.process_pings, group[0].rows, time.time(), group[0].journal)]
            else:
                answers = await host.run_here(host.process_ping_parts, [p.rows for p in group], time.time(),
                                         [p.journal for p in group])
        except Exception as exc:
            if len(group) == 1 or isinstance(exc, StoreUnavailable):
                for p in group:
                    _settle(p, exc=exc)
                return
            log.warning("a coalesced call of %d requests failed (%s: %s); running them one by one", len(group),
                        type(exc).__name__, exc)
            for p in group:
                try:
                    _settle(p, await host.run(host.process_pings, p.rows, time.time(), p.journal))
                except Exception as alone:
                    _settle(p, exc=alone)
            return
        for p, answer in zip(group, answers, strict=True):
            _settle(p, answer)


async def process_pings(svc: Any, rows: list[Any] | PingBatch, journal: str | None,
                        devices: Iterable[str] | None = None) -> Answer:
    """A request's rows (naming ``devices``) through the worker's coalescer, or straight to the engine host
    when coalescing is off (``coalesce: false``)."""
    if svc.coalescer is not None:
        return await svc.coalescer.submit(rows, journal, devices)
    return await svc.host.run(svc.host.process_pings, rows, time.time(), journal)


def _settle(part: _Part, answer: Answer | None = None, exc: BaseException | None = None) -> None:
    if part.future.done():  # (its request was cancelled: the rows were processed all the same, as before)
        return
    if exc is not None:
        part.future.set_exception(exc)
    else:
        part.future.set_result(answer)  # type: ignore[arg-type]


__all__ = ["Coalescer", "process_pings"]
