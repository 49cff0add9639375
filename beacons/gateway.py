"""The store gateway agent: advertisements in, ``POST /v1/scans`` batches out, nothing lost silently.

Pipeline::

    BeaconSource (bleak radio | JSONL replay) -> [--record capture.jsonl]
        -> frames -> sightings {ts, rssi, key, tx_power}
        -> batch (sealed at batch_size sightings or batch_interval_s after its first)
        -> Spool (ordered, bounded, on disk) -> Uplink (HTTP POST) -> removed when acknowledged

Every sealed batch is written to the spool first and sent from there, oldest
first, one at a time, so order holds and a restart of the agent resumes where
it stopped. A batch keeps its ``batch_id`` across retries and restarts; the
server acknowledges a repeat without processing it twice. A batch the server
finds too large (HTTP 413) is split in halves (ids ``<batch_id>/1`` and
``<batch_id>/2``) until it fits. Failed sends retry with exponential backoff and
jitter (``uniform(0.1 * d, d)`` with ``d = min(max, initial * 2**n)``) or after
the server's ``Retry-After``.

Batch ids are ``<gateway_id>:<boot id>:<n>``: the boot id is new at each start
of the agent, so ids never repeat across runs, while a spooled batch keeps the
id it was given.

Counters (:attr:`GatewayAgent.counters`, logged every ``log_every_s`` and at exit), in sightings:
``heard`` (advertisements), ``sightings``, ``unkeyed`` (frames without a beacon
identity: URL, TLM, EID), ``sent``, ``spooled`` (had to wait in the spool
because the server was unreachable), ``dropped`` (spool overflow, oldest first),
``rejected`` (sightings the server refused: the batch as invalid, or entries of it on their own), plus ``batches_sent``,
``retries`` and ``warned`` (batches the server answered with warnings, e.g. an unknown gateway id: each
distinct warning is logged once). The log and the summary give what is left in the spool in batches and
sightings alike.

A 401 or 403 (the key is missing, wrong or lacks the ``gateway`` scope) stops the agent: no spooling, no
retry (the batches stay on disk for a run with the right key); :attr:`GatewayAgent.fatal` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beacons.capture import CaptureRecord, CaptureWriter
from beacons.sources import BeaconSource
from beacons.spool import Spool
from beacons.uplink import SendResult, Uplink
from proxbase.tasks import cancel_and_wait

log = logging.getLogger("beacons.gateway")


@dataclass(frozen=True)
class GatewayConfig:
    gateway_id: str
    batch_size: int = 200
    batch_interval_s: float = 2.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    drain_timeout_s: float = 10.0
    log_every_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.gateway_id:
            raise ValueError("gateway_id must not be empty")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.batch_interval_s > 0:
            raise ValueError(f"batch_interval_s must be > 0, got {self.batch_interval_s}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")


def sightings_of(record: CaptureRecord) -> tuple[list[dict[str, Any]], int]:
    """The scans-body entries for one advertisement, and how many frames had no beacon identity."""
    out: list[dict[str, Any]] = []
    unkeyed = 0
    for frame in record.frames():
        if frame.key is None:
            unkeyed += 1
            continue
        out.append({"ts": record.ts, "rssi": round(record.rssi), "key": frame.key, "tx_power": frame.power_1m})
    return out, unkeyed


class GatewayAgent:
    def __init__(self, source: BeaconSource, uplink: Uplink, spool: Spool, config: GatewayConfig, *,
                 recorder: CaptureWriter | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.source = source
        self.uplink = uplink
        self.spool = spool
        self.config = config
        self.recorder = recorder
        self.clock = clock
        self.rng = rng or random.Random()
        self.counters: Counter[str] = Counter()
        self._boot = uuid.uuid4().hex[:12]
        self._seq = 0
        self._pending: list[dict[str, Any]] = []
        self._pending_since: float | None = None
        self._wake = asyncio.Event()
        self._outage = False
        self._counted_spooled: set[int] = set()
        self._warned: set[str] = set()
        self._stop: asyncio.Event | None = None
        self.fatal: str | None = None
        """Why the agent stopped on its own (the server refused its key), else ``None``."""

    # -- intake (called from the source, on the event loop) ---------------------------------

    def on_advertisement(self, record: CaptureRecord) -> None:
        self.counters["heard"] += 1
        if self.recorder is not None:
            self.recorder.write(record)
        entries, unkeyed = sightings_of(record)
        self.counters["unkeyed"] += unkeyed
        if not entries:
            return
        if not self._pending:
            self._pending_since = asyncio.get_running_loop().time()
        self._pending.extend(entries)
        self.counters["sightings"] += len(entries)
        while len(self._pending) >= self.config.batch_size:
            self._seal(self.config.batch_size)

    def _seal(self, size: int | None = None) -> None:
        if not self._pending:
            return
        size = len(self._pending) if size is None else size
        batch, self._pending = self._pending[:size], self._pending[size:]
        self._pending_since = asyncio.get_running_loop().time() if self._pending else None
        self._seq += 1
        body = {"gateway_id": self.config.gateway_id, "batch_id": f"{self.config.gateway_id}:{self._boot}:{self._seq}",
                "sent_at": self.clock(), "sightings": batch}
        dropped = self.spool.append(body)
        if self._outage and self.spool.last_seq is not None:
            self.counters["spooled"] += len(batch)
            self._counted_spooled.add(self.spool.last_seq)
        if dropped.batches:
            self.counters["dropped"] += dropped.sightings
            log.warning("spool full (%d batches, %d bytes max): dropped the %d oldest batches, %d sightings",
                        self.spool.max_batches, self.spool.max_bytes, dropped.batches, dropped.sightings)
        self._wake.set()

    # -- tasks -------------------------------------------------------------------------------

    async def _flusher(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        tick = min(self.config.batch_interval_s / 4, 0.25)
        while not stop.is_set():
            if self._pending_since is not None and loop.time() - self._pending_since >= self.config.batch_interval_s:
                self._seal()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.backoff_max_s)
        cap = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** min(failures - 1, 30))
        return self.rng.uniform(0.1 * cap, cap)

    async def _deliver(self, body: dict[str, Any]) -> tuple[SendResult, int, int]:
        """Send one batch: ``(result, sightings delivered, sightings rejected)``.

        A batch the server finds too large (413) is split in two halves with the
        derived ids ``<batch_id>/1`` and ``<batch_id>/2`` (deterministic, so a retry
        after a partial success repeats ids the server has seen and deduplicates);
        a rejected part is counted and logged, the other part still goes."""
        sightings = body.get("sightings", [])
        result = await self.uplink.send(body)
        if result.outcome == "delivered":
            if result.warnings:
                self.counters["warned"] += 1
            for warning in result.warnings:
                if warning not in self._warned:
                    self._warned.add(warning)
                    log.warning("server warning for batch %s: %s", body["batch_id"], warning)
            if result.refused:
                log.warning("server refused %d of the %d sightings of batch %s, e.g. %s", result.refused,
                            len(sightings), body["batch_id"], result.detail)
            return result, len(sightings) - result.refused, result.refused
        if result.outcome == "rejected" and result.status == 413 and len(sightings) > 1:
            half = len(sightings) // 2
            sent = rejected = 0
            for i, part in enumerate((sightings[:half], sightings[half:]), start=1):
                r, s, j = await self._deliver({**body, "batch_id": f"{body['batch_id']}/{i}", "sightings": part})
                if r.outcome in ("retry", "unauthorized"):
                    return r, 0, 0
                sent, rejected = sent + s, rejected + j
            return SendResult("delivered", 200), sent, rejected
        if result.outcome == "rejected":
            log.error("server rejected batch %s (%d sightings, HTTP %s): %s", body["batch_id"], len(sightings),
                      result.status, result.detail)
            return result, 0, len(sightings)
        return result, 0, 0

    async def _sender(self, stop: asyncio.Event) -> None:
        failures = 0
        while True:
            item = self.spool.peek()
            if item is None:
                if stop.is_set():
                    return
                self._wake.clear()
                waiter = asyncio.create_task(stop.wait())
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                woken.cancel()
                continue
            seq, body = item
            self.spool.in_flight = seq  # overflow must not drop a batch that may yet be delivered
            try:
                result, sent, rejected = await self._deliver(body)
            finally:
                self.spool.in_flight = None
            if result.outcome == "unauthorized":
                self.fatal = (f"the server refused the gateway key (HTTP {result.status}): check --key (a key with "
                              f"the 'gateway' scope); not retrying, {self._spool_text()} kept for the next run")
                log.error("%s", self.fatal)
                if self._stop is not None:
                    self._stop.set()
                return
            if result.outcome != "retry":
                self.spool.remove(seq)
                self._counted_spooled.discard(seq)
                self.counters["sent"] += sent
                self.counters["rejected"] += rejected
                if sent:
                    self.counters["batches_sent"] += 1
                if self._outage:
                    log.info("server reachable again; %s waiting in the spool", self._spool_text())
                self._outage = False
                failures = 0
                continue
            failures += 1
            self.counters["retries"] += 1
            waiting = self.spool.waiting()
            self._counted_spooled.intersection_update(q for q, _ in waiting)  # forget dropped batches
            for waiting_seq, waiting_n in waiting:  # everything queued now waits for the server
                if waiting_seq not in self._counted_spooled:
                    self._counted_spooled.add(waiting_seq)
                    self.counters["spooled"] += waiting_n
            if not self._outage:
                log.warning("cannot deliver to the server (%s); spooling to disk and retrying",
                            result.detail or f"HTTP {result.status}")
            self._outage = True
            delay = self._backoff(failures, result.retry_after_s)
            await asyncio.sleep(delay)

    async def _reporter(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.log_every_s)
            except TimeoutError:
                self.log_counters()

    def _spool_text(self) -> str:
        n = len(self.spool)
        return f"{n} batch{'es' if n != 1 else ''} ({self.spool.pending_sightings} sightings)"

    def log_counters(self) -> None:
        c = self.counters
        log.info("gateway %s: heard %d, sightings %d, sent %d, spooled %d, dropped %d, rejected %d, "
                 "in spool %s", self.config.gateway_id, c["heard"], c["sightings"], c["sent"],
                 c["spooled"], c["dropped"], c["rejected"], self._spool_text())

    async def run(self, stop: asyncio.Event | None = None) -> Counter[str]:
        """Scan and forward until the source ends or ``stop`` is set; then seal what is pending and
        try to empty the spool for up to ``drain_timeout_s`` (what remains stays on disk for the next run)."""
        stop = stop or asyncio.Event()
        self._stop = stop
        intake_done = asyncio.Event()
        sender_stop = asyncio.Event()
        flusher = asyncio.create_task(self._flusher(intake_done))
        sender = asyncio.create_task(self._sender(sender_stop))
        reporter = asyncio.create_task(self._reporter(intake_done))
        if len(self.spool):
            log.info("resuming with %s from the spool", self._spool_text())
        source_task = asyncio.create_task(self.source.run(self.on_advertisement, stop))
        stop_task = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({source_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await source_task  # re-raises a source failure (no radio, bad capture)
        finally:
            stop_task.cancel()
            intake_done.set()
            await flusher
            await reporter
            self._seal()
            sender_stop.set()
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(sender), self.config.drain_timeout_s)
            except TimeoutError:
                log.warning("stopping with %s still in the spool", self._spool_text())
            await cancel_and_wait([sender])
            await self.uplink.close()
            self.log_counters()
        return self.counters


__all__ = ["GatewayAgent", "GatewayConfig", "sightings_of"]
