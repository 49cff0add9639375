"""The worker's background loops: time passing (``engine.advance`` every ``advance_interval_s``) and
offer delivery (the outbox drained to the dispatchers: the live feed, a webhook, a JSONL file)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxbase.tasks import cancel_and_wait
from proximity.service.config import ServiceConfig
from proximity.service.host import EngineHost
from proximity.service.metrics import ServiceMetrics
from proximity.service.render import Rendered, render

log = logging.getLogger("proximity.service.loops")

#: advance calls in one pass at most (with ``advance_max_devices`` each, the devices a pass can run)
MAX_ADVANCE_CALLS = 100
#: seconds between two advance calls of a pass: the requests read meanwhile go to their engine calls first
ADVANCE_GAP_S = 0.002


class Loops:
    """Runs the advance and delivery loops of one worker; ``publish`` hands an advance's result to the feed,
    ``feed_offer`` an offer taken out of the outbox."""

    def __init__(self, config: ServiceConfig, host: EngineHost, metrics: ServiceMetrics,
                 publish: Callable[[Rendered], Awaitable[None]], feed_offer: Callable[[Any], Awaitable[None]]) -> None:
        self.config = config
        self.host = host
        self.metrics = metrics
        self.publish = publish
        self.feed_offer = feed_offer
        self._tasks: list[asyncio.Task[None]] = []
        self._delivery: Any = None

    def start(self) -> None:
        self.host.dispatchers(self.feed_offer)  # a bad dispatch setting fails the start, not the first offer
        self._tasks.append(asyncio.create_task(self._advance_loop(), name="engine-advance"))
        self._tasks.append(asyncio.create_task(self._deliver_loop(), name="offer-delivery"))

    async def stop(self) -> None:
        stuck = await cancel_and_wait(self._tasks, timeout=5.0)  # bounded: the shutdown goes on regardless
        if stuck:
            log.warning("%d background loops did not stop within 5 s", len(stuck))
        self._tasks = []

    async def close(self) -> None:
        """After the last flush: close the dispatchers (webhook sessions, files)."""
        if self._delivery is not None:
            with contextlib.suppress(Exception):
                await self._delivery.dispatcher.aclose()

    async def _advance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.advance_interval_s)
            await self.advance_pass()

    async def advance_pass(self) -> int:
        """Time passes to now: due devices ``advance_max_devices`` at a time, with :data:`ADVANCE_GAP_S` between
        the calls for the requests read meanwhile (a wave of thousands of due exits ran in one call of hundreds
        of milliseconds, and every request of the worker waited for it). A call runs where the coalesced ping
        calls run (:meth:`~proximity.service.host.EngineHost.run_here`: on the loop when the engine thread is
        idle; on the engine thread it took turns with the loop for the GIL, and a call of 15-25 ms of CPU took
        100-250 ms under load). At most :data:`MAX_ADVANCE_CALLS` calls a pass; what is left goes in the next.
        Returns the calls made."""
        calls = 0
        while calls < MAX_ADVANCE_CALLS:
            if calls:
                await asyncio.sleep(ADVANCE_GAP_S)
            calls += 1
            try:
                started = time.perf_counter()
                result = await self.host.run_here(self.host.advance, time.time(), self.config.advance_max_devices)
                self.metrics.engine_latency.labels("advance").observe(time.perf_counter() - started)
                await self.publish(render(result))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("engine.advance failed: %s", exc)
                break
            if not self.host.due_left:
                break
        return calls

    async def deliver_once(self) -> int:
        """One delivery pass; returns how many offers it claimed."""
        from campaigns.dispatch import DeliveryWorker

        if self._delivery is None:
            self._delivery = DeliveryWorker(self.host.outbox, self.host.dispatchers(self.feed_offer),
                                            consumer=f"{socket.gethostname()}-{os.getpid()}")
        report = await self._delivery.run_once()
        name = getattr(self._delivery.dispatcher, "name", "dispatch")
        for result in ("delivered", "already_delivered", "dead", "duplicate_acks"):
            n = getattr(report, result, 0)
            if n:
                self.metrics.dispatch.labels(name, result).inc(n)
        return int(report.claimed)

    async def _deliver_loop(self) -> None:
        while True:
            try:
                claimed = await self.deliver_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("offer delivery pass failed: %s", exc)
                claimed = 0
            if not claimed:
                await asyncio.sleep(0.2)

    async def flush_outbox(self) -> None:
        """Deliver every offer that is due (graceful shutdown); held ones stay in the outbox."""
        while await self.deliver_once():
            pass


__all__ = ["Loops"]
