"""The delivery loop: claim offers from an outbox, deliver them, ack them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from campaigns.dispatch.base import DeliveryReport, Dispatcher
from campaigns.errors import DeliveryError
from campaigns.outbox import Outbox, OutboxEntry

log = logging.getLogger(__name__)


class DeliveryWorker:
    """Delivers what ``outbox`` holds through ``dispatcher``.

    An entry whose offer was already acked (a worker died between delivering
    and acking, and the entry came back) is acked again without being sent.
    A :class:`DeliveryError` moves the entry to dead letters with the attempts
    it took; any other exception is logged and leaves the entry claimed, so
    after the outbox's ``claim_idle_s`` another worker (or this one) picks it
    up again.
    """

    def __init__(
        self,
        outbox: Outbox,
        dispatcher: Dispatcher,
        *,
        consumer: str | None = None,
        batch: int = 100,
        concurrency: int = 16,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.concurrency = concurrency
        self.clock = clock
        self.total = DeliveryReport()

    async def _one(self, entry: OutboxEntry, sem: asyncio.Semaphore, report: DeliveryReport) -> None:
        async with sem:
            if self.outbox.is_delivered(entry.offer.offer_id):
                self.outbox.ack(entry)
                report.already_delivered += 1
                return
            try:
                attempts = await self.dispatcher.deliver(entry.offer)
            except DeliveryError as exc:
                attempts = exc.attempts
                self.outbox.dead(entry, str(exc), attempts)
                report.dead += 1
                report.attempts += attempts
                return
            except Exception:
                # Not a delivery outcome (a bug, a crash of the target's client): leave the entry
                # claimed; after the outbox's claim_idle_s it is delivered again (same offer id).
                log.exception("delivering offer %s failed; it stays in the outbox", entry.offer.offer_id)
                report.errors += 1
                return
            report.attempts += attempts
            if self.outbox.ack(entry):
                report.delivered += 1
            else:
                report.duplicate_acks += 1
                log.warning("offer %s was acked twice", entry.offer.offer_id)

    async def run_once(self, now: float | None = None) -> DeliveryReport:
        """One pass: claim up to ``batch`` entries and deliver them concurrently."""
        t = now if now is not None else (self.clock() if self.clock else None)
        entries = self.outbox.claim(self.consumer, self.batch, now=t)
        report = DeliveryReport(claimed=len(entries))
        sem = asyncio.Semaphore(self.concurrency)
        await asyncio.gather(*(self._one(e, sem, report) for e in entries))
        self.total.add(report)
        return report

    async def run(self, stop: asyncio.Event, *, interval_s: float = 0.2) -> DeliveryReport:
        """Deliver until ``stop`` is set (idle passes wait ``interval_s``)."""
        while not stop.is_set():
            try:
                report = await self.run_once()
            except Exception:
                log.exception("delivery pass failed")
                report = DeliveryReport()
            if report.claimed == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        return self.total
