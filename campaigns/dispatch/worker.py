"""The delivery loop: claim offers from an outbox, deliver them, ack them; exactly once per sink.

How one offer reaches each sink once:

1. ``claim`` is a lease with a fencing token; it never hands out an offer already marked delivered;
2. while a batch is being delivered, a heartbeat renews its leases every ``claim_idle_s / 3``; an
   entry whose lease was lost (taken over by another worker after this one stalled) and whose
   delivery has not started is skipped;
3. ``ack`` marks the offer delivered and releases the claim atomically. When the ack fails (Redis
   refused or silent), the entry is kept and its ack retried first on the next passes; the offer id
   is remembered, so a reclaim of it by this worker is acked without a second send;
4. what is left (an ack lost for good, or a worker killed between its send and its ack, so that
   another worker sends the offer again) is deduplicated by the sinks on the offer id: the JSONL
   sink checks its file, the live feed its recent ids, the webhook sends ``Idempotency-Key``.

A synchronous outbox other than the in-memory one (a blocking Redis client) is called in a worker
thread, so the event loop never waits on Redis; an :class:`~campaigns.AsyncRedisOutbox` is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from campaigns.dispatch.base import DeliveryReport, Dispatcher
from campaigns.errors import DeliveryError
from campaigns.outbox import MemoryOutbox, OutboxEntry
from proxbase.tasks import cancel_and_wait

log = logging.getLogger(__name__)
Key = tuple[int, str]  # (shard, entry id): one outbox entry


class DeliveryWorker:
    """Delivers what ``outbox`` holds through ``dispatcher`` (see the module docstring).

    A :class:`DeliveryError` moves the entry to dead letters with the attempts it took; any other
    exception is logged and leaves the entry claimed, so after the outbox's ``claim_idle_s`` another
    worker (or this one) picks it up again. ``remember`` bounds the offer ids kept in memory.
    """

    def __init__(
        self,
        outbox: Any,
        dispatcher: Dispatcher,
        *,
        consumer: str | None = None,
        batch: int = 100,
        concurrency: int = 16,
        clock: Callable[[], float] | None = None,
        remember: int = 100_000,
    ) -> None:
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.concurrency = concurrency
        self.clock = clock
        self.remember = remember
        self.total = DeliveryReport()
        self._unacked: OrderedDict[str, OutboxEntry] = OrderedDict()  # delivered, ack not yet written
        self._recent: OrderedDict[str, None] = OrderedDict()  # offer ids delivered by this worker
        self._inline = isinstance(outbox, MemoryOutbox)
        # a blocking outbox with ``ack_many`` (called in a worker thread) gets its acks in batches (:meth:`_ack_one`):
        # the acks waiting for the next ``ack_many`` call, and the task making those calls
        self._batch_acks = (not self._inline and hasattr(outbox, "ack_many")
                            and not inspect.iscoroutinefunction(getattr(outbox, "ack", None)))
        self._acks: list[tuple[OutboxEntry, asyncio.Future[bool]]] = []
        self._ack_task: asyncio.Task[None] | None = None

    async def _call(self, name: str, *args: Any, **kw: Any) -> Any:
        fn = getattr(self.outbox, name)
        if inspect.iscoroutinefunction(fn):
            return await fn(*args, **kw)
        if self._inline:
            return fn(*args, **kw)
        return await asyncio.to_thread(fn, *args, **kw)

    def _delivered(self, offer_id: str) -> None:
        self._recent[offer_id] = None
        self._recent.move_to_end(offer_id)
        while len(self._recent) > self.remember:
            self._recent.popitem(last=False)

    async def _ack_one(self, entry: OutboxEntry) -> bool:
        """``outbox.ack(entry)``. A blocking outbox with ``ack_many`` (Redis) is called in a worker thread: there
        the acks asked for while one call is on its way go together in the next, so a pass's acks take a few
        thread hand-offs and round trips instead of one each (each hand-off takes turns with the event loop
        for the GIL: a burst of offers delayed every request the worker was answering meanwhile)."""
        if not self._batch_acks:
            return bool(await self._call("ack", entry))
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks.append((entry, done))
        if self._ack_task is None:
            self._ack_task = asyncio.create_task(self._ack_batches(), name="offer-acks")
        return await done

    async def _ack_batches(self) -> None:
        batch: list[tuple[OutboxEntry, asyncio.Future[bool]]] = []
        try:
            await asyncio.sleep(0)  # the deliveries finishing now add their acks to the first call
            while self._acks:
                batch, self._acks = self._acks, []
                try:
                    got = list(await self._call("ack_many", [entry for entry, _ in batch]))
                except Exception as exc:  # the store away: every ack of the call failed
                    got = [exc] * len(batch)
                for (_entry, done), answer in zip(batch, got, strict=True):
                    if done.done():
                        continue
                    if isinstance(answer, Exception):
                        done.set_exception(answer)
                    else:
                        done.set_result(bool(answer))
                batch = []
        finally:
            self._ack_task = None
            for _entry, done in batch + self._acks:  # (cancelled: the worker is stopping) nobody waits forever
                done.cancel()
            self._acks = []

    async def _ack(self, entry: OutboxEntry, report: DeliveryReport) -> None:
        try:
            first = await self._ack_one(entry)
        except Exception as exc:  # Redis refused, timed out, a slot without a master: ack again later
            self._unacked[entry.offer.offer_id] = entry
            report.ack_failures += 1
            log.warning("ack of offer %s failed (%s); retried on the next pass", entry.offer.offer_id, exc)
            return
        self._unacked.pop(entry.offer.offer_id, None)
        if first:
            report.delivered += 1
        else:
            report.duplicate_acks += 1

    async def _one(self, entry: OutboxEntry, sem: asyncio.Semaphore, lost: set[Key],
                   started: set[Key], finished: set[Key], report: DeliveryReport) -> None:
        async with sem:
            key = (entry.shard, entry.entry_id)
            if key in lost:
                report.lost_leases += 1
                return
            started.add(key)
            try:
                await self._deliver(entry, report)
            finally:
                finished.add(key)

    async def _deliver(self, entry: OutboxEntry, report: DeliveryReport) -> None:
        try:
            attempts = await self.dispatcher.deliver(entry.offer)
        except DeliveryError as exc:
            report.dead += 1
            report.attempts += exc.attempts
            try:
                await self._call("dead", entry, str(exc), exc.attempts)
            except Exception:
                log.exception("offer %s: could not move it to dead letters; it stays claimed",
                              entry.offer.offer_id)
            return
        except Exception:
            # Not a delivery outcome (a bug, a crash of the target's client): leave the entry
            # claimed; after the outbox's claim_idle_s it is delivered again (same offer id).
            log.exception("delivering offer %s failed; it stays in the outbox", entry.offer.offer_id)
            report.errors += 1
            return
        report.attempts += attempts
        self._delivered(entry.offer.offer_id)
        await self._ack(entry, report)

    async def _heartbeat(self, entries: list[OutboxEntry], lost: set[Key], started: set[Key],
                         finished: set[Key]) -> None:
        """Renew the leases of ``entries`` until cancelled; record the ones lost."""
        idle = float(getattr(self.outbox, "claim_idle_s", 30.0))
        while True:
            await asyncio.sleep(max(0.05, idle / 3))
            live = [e for e in entries if (e.shard, e.entry_id) not in lost | finished]
            if not live or not hasattr(self.outbox, "renew"):
                return
            try:
                held = await self._call("renew", live)
            except Exception as exc:
                log.warning("renewing %d offer claims failed: %s", len(live), exc)
                continue
            for e, ok in zip(live, held, strict=True):
                key = (e.shard, e.entry_id)
                if not ok and key not in finished:  # (an ack may have landed while the renew ran)
                    lost.add(key)
                    if key in started:
                        log.warning("offer %s: lease lost while it was being delivered", e.offer.offer_id)

    async def run_once(self, now: float | None = None) -> DeliveryReport:
        """One pass: ack what earlier passes could not, claim up to ``batch`` entries, deliver them."""
        report = DeliveryReport()
        for entry in list(self._unacked.values()):
            await self._ack(entry, report)
            if entry.offer.offer_id in self._unacked:  # still failing: the store is away, try later
                self.total.add(report)
                return report
        t = now if now is not None else (self.clock() if self.clock else None)
        entries = await self._call("claim", self.consumer, self.batch, now=t)
        report.claimed = len(entries)
        fresh = []
        for e in entries:
            if e.offer.offer_id in self._recent:  # sent by this worker, its ack lost: ack, do not send
                report.already_delivered += 1
                await self._ack(e, report)
            else:
                fresh.append(e)
        sem = asyncio.Semaphore(self.concurrency)
        lost: set[Key] = set()
        started: set[Key] = set()
        finished: set[Key] = set()
        beat = asyncio.create_task(self._heartbeat(fresh, lost, started, finished))
        try:
            await asyncio.gather(*(self._one(e, sem, lost, started, finished, report) for e in fresh))
        finally:
            await cancel_and_wait([beat])
        self.total.add(report)
        return report

    async def run(self, stop: asyncio.Event, *, interval_s: float = 0.2) -> DeliveryReport:
        """Deliver until ``stop`` is set (idle passes wait ``interval_s``; a failing store backs off)."""
        wait = interval_s
        while not stop.is_set():
            try:
                report = await self.run_once()
                wait = interval_s
            except Exception as exc:
                log.warning("delivery pass failed: %s", exc)
                report = DeliveryReport()
                wait = min(5.0, wait * 2)
            if report.claimed == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        return self.total
