"""The engine host: the engine and what it is built from (fences, campaigns, beacon registry), driven
from one dedicated thread; batches of pings and sightings go in through it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from beacons import BeaconRegistry, ProximityTracker, load_registry
from beacons.scans import scans_from_json
from campaigns import CampaignRules, CampaignSet, Decision, loads_campaigns
from geofence import Fence, FenceIndex, load_geojson
from proximity.batch import PingBatch
from proximity.engine import BatchResult, Engine, EngineConfig
from proximity.errors import ValidationError
from proximity.journal import Journal
from proximity.presence import compile_sort
from proximity.service.backends import Backends
from proximity.service.config import ServiceConfig
from proximity.service.metrics import ServiceMetrics

SOURCE = "<request body>"
#: with Redis state, a ping call slower than this (seconds, wall) ... (:meth:`EngineHost.run_here`)
INLINE_SLOW_S = 0.25
#: ... or failed keeps the calls on the engine thread for this long (seconds)
INLINE_CALM_S = 30.0


def _parse_parts(parts: Sequence[list[Any] | PingBatch], base: np.ndarray) -> tuple[PingBatch, list[ValidationError]]:
    """The parts' pings as one batch and their bad rows, rows numbered from each part's ``base``: JSON rows are
    read together by ``PingBatch.from_json``, batches (read already, every row good) are stacked with them."""
    lists = [(i, p) for i, p in enumerate(parts) if not isinstance(p, PingBatch)]  # the parts of JSON rows
    where = [i for i, _p in lists]
    rows = lists[0][1] if len(lists) == 1 else [r for _i, p in lists for r in p]
    if len(where) == len(parts):
        return PingBatch.from_json(rows, source=SOURCE)
    if len(parts) == 1:
        return parts[0], []  # type: ignore[return-value]
    at = base.tolist()
    pieces = [dataclasses.replace(p, row=p.row + at[i]) for i, p in enumerate(parts) if isinstance(p, PingBatch)]
    errors: list[ValidationError] = []
    if where:  # read as one list, then renumbered to their parts' places
        found, errors = PingBatch.from_json(rows, source=SOURCE)
        first = np.zeros(len(where), np.int64)
        np.cumsum([len(p) for _i, p in lists[:-1]], out=first[1:])
        shift = base[where] - first
        pieces.append(dataclasses.replace(found, row=found.row + shift[np.searchsorted(first, found.row, "right") - 1]))
        for e in errors:
            if e.row is not None:
                e.row += int(shift[np.searchsorted(first, e.row, "right") - 1])
    batch = PingBatch.concat(pieces)
    return batch.take(np.argsort(batch.row, kind="stable")), errors  # in request order, as from_json gives


class EngineHost:
    """The engine and what it is built from; every engine call runs on one dedicated thread.

    One thread keeps the engine's state single-writer (aiohttp handlers run
    concurrently) while the event loop stays free for other requests when a
    Redis round trip or a big batch takes a while. Fences, campaigns and the
    beacon registry are replaced through :meth:`apply` on that same thread, so
    a batch never sees half a reload. The presence state store is created once
    and survives reloads.
    """

    def __init__(self, config: ServiceConfig, metrics: ServiceMetrics, backends: Backends | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.backends = backends if backends is not None else Backends.from_config(config)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="proximity-engine",
                                            initializer=_limit_kernel_threads, initargs=(config.engine_threads,))
        self.fences: list[Fence] = []
        self.fences_loaded = False
        self.registry: BeaconRegistry | None = None
        self.campaigns: CampaignRules | None = None
        self.tracker: ProximityTracker | None = None
        self.engine: Any = None
        #: called on the engine thread with each campaign Decision, each accepted PingBatch, each accepted
        #: ScanBatch and its body (the console's counters, positions and fleet)
        self.decision_listeners: list[Callable[[Any], None]] = []
        self.ping_listeners: list[Callable[[Any], None]] = []
        self.scan_listeners: list[Callable[[Any, Any], None]] = []
        self.store = self.backends.store  # created once: survives reloads
        self.limiter, self.outbox = self.backends.limiter, self.backends.outbox
        self.live: Any = None  # campaigns.live.LiveConversions, once campaigns are loaded
        self._undecided: list[Any] = []  # advance events whose campaign decisions failed (decided next pass)
        #: calls given to the engine thread (written on the event loop only) and calls it finished (written on
        #: the engine thread only): it is idle when they are equal (see :meth:`run_here`)
        self._submitted = 0
        self._finished = 0
        #: :meth:`run_here` runs on the calling thread when it can (``inline_calls``); with Redis state, only from
        #: ``_calm_from`` on (monotonic seconds): ``INLINE_CALM_S`` after the last slow or failed call
        self.inline = config.inline_calls
        self._calm_from = 0.0
        self._inline_threads = False
        self._rebuild()

    # -- plumbing

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the engine thread."""
        self._submitted += 1
        try:
            work = self._executor.submit(self._counted, functools.partial(fn, *args))
        except BaseException:  # (the executor is shut down: nothing was queued)
            self._submitted -= 1
            raise
        work.add_done_callback(self._never_ran)
        return await asyncio.wrap_future(work)

    def _counted(self, call: Callable[[], Any]) -> Any:
        """(engine thread) ``call()``, then one more call finished: counted when the engine thread is done with
        it, also when whoever awaited it was cancelled meanwhile."""
        try:
            return call()
        finally:
            self._finished += 1

    def _never_ran(self, work: Future[Any]) -> None:
        """A call cancelled before the engine thread took it (its awaiting task was cancelled: the cancel comes
        from the event loop's thread) will never be counted finished: it no longer counts as given."""
        if work.cancelled():
            self._submitted -= 1

    @property
    def busy(self) -> bool:
        """Whether the engine thread has calls queued or running (event loop only)."""
        return self._submitted != self._finished

    @property
    def runs_here(self) -> bool:
        """Whether :meth:`run_here` would run a call on the calling thread now."""
        return self.inline and not self.busy and time.monotonic() >= self._calm_from

    async def run_here(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the calling (event-loop) thread when the engine thread has nothing to do, else on
        the engine thread (:meth:`run`).

        With the state in Redis a call makes round trips, and on the loop it holds the loop for them: so it
        runs there only while Redis is calm, no call (here or on the engine thread) slower than
        ``INLINE_SLOW_S`` or failed for ``INLINE_CALM_S``. A Redis that black-holes packets then holds the
        loop once, for one call's socket timeout, and not again until it has answered fast for that long.

        The engine stays single-writer: the engine thread runs only what :meth:`run` gave it, and
        :attr:`busy` says whether it has anything (counted when the engine thread finishes a call, not when
        its awaiting task is cancelled). Running a short call
        where it is asked for saves two thread hand-offs, and each costs far more than the call's own CPU
        when the threads take turns with the GIL: the engine thread's wake-up of the loop
        (``call_soon_threadsafe`` writes to a socket, so it gives the GIL away and waits to take it back),
        and the loop's socket writes while the engine thread holds the GIL (up to the 5 ms switch interval
        each)."""
        here = self.runs_here
        if here and not self._inline_threads:
            _limit_kernel_threads(self.config.engine_threads)  # numba's thread count is per calling thread
            self._inline_threads = True
        if self.config.redis is None:
            return fn(*args) if here else await self.run(fn, *args)
        started = time.monotonic()
        calm = False
        try:
            out = fn(*args) if here else await self.run(fn, *args)
            calm = time.monotonic() - started <= INLINE_SLOW_S
            return out
        finally:
            if not calm:  # slow, failed or cancelled: the next calls go to the engine thread for a while
                self._calm_from = time.monotonic() + INLINE_CALM_S

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.backends.close()

    def _on_decision(self, decision: Decision) -> None:
        for verdict in decision.verdicts:
            if verdict.outcome == "blocked":
                self.metrics.cap_blocks.labels(verdict.campaign_id, verdict.cap or "cap").inc()
            elif verdict.outcome in ("stale", "template_empty"):
                self.metrics.withheld.labels(verdict.campaign_id, verdict.outcome).inc()
        for listener in self.decision_listeners:
            listener(decision)

    def _on_decisions(self, decisions: list[Decision]) -> None:
        """One engine call's decisions: their exposures recorded in one go (report counters)."""
        if self.live is not None:
            self.live.on_decisions(decisions)

    def _visits(self, result: BatchResult) -> BatchResult:
        """Let the batch's events claim the exposures waiting for a visit (report counters)."""
        if self.live is not None and getattr(result, "events", None):
            self.live.on_events(result.events)
        return result

    def campaign_report(self, campaign_id: str, min_exposed: int) -> dict[str, Any] | None:
        """One campaign's report from the counters (``None``: no such campaign is loaded)."""
        from campaigns.counters import report_from_counts

        spec = self.live.specs.get(campaign_id) if self.live is not None else None
        if spec is None or self.backends.counters is None:
            return None
        return report_from_counts(spec, self.backends.counters.counts(campaign_id), min_exposed=min_exposed)

    def _rebuild(self) -> None:
        index = FenceIndex(self.fences)
        if self.engine is None:
            settings = {"max_future_skew_s": self.config.max_skew_s, **self.config.engine_settings()}
            self.engine = Engine(index, store=self.store, config=EngineConfig(**settings))
            return
        self.engine.set_index(index)
        if self.campaigns is not None:
            self.campaigns.replace(self.campaigns.campaigns, self.fences)
            if self.live is not None:
                self.live.replace(self.campaigns.campaigns, self.campaigns.fences)

    # -- configuration

    def validate(self, kind: str, text: str, media_type: str, source: str) -> Any:
        """Parse and check one document; raises a located ``ValueError`` and changes nothing when bad."""
        if kind == "fences":
            if not text.lstrip().startswith("{"):
                raise ValidationError("fences must be a GeoJSON FeatureCollection object", source=source,
                                      line=1, col=1)
            try:
                return load_geojson(text)
            except RecursionError:
                raise ValidationError("malformed JSON: nested too deeply", source=source) from None
        if kind == "campaigns":
            if "json" in media_type:
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValidationError(f"malformed JSON: {exc.msg}", source=source, line=exc.lineno,
                                          col=exc.colno) from None
                text = json.dumps(doc, indent=1)  # JSON is YAML: positions stay meaningful
            return loads_campaigns(text, source=source, fences=self.fences if self.fences_loaded else None)
        if kind == "beacons":
            return load_registry(text if text.endswith("\n") else text + "\n")
        raise ValidationError(f"unknown configuration kind {kind!r}", field="kind")

    def apply(self, kind: str, parsed: Any) -> None:
        if kind == "fences":
            self.fences = list(parsed)
            self.fences_loaded = True
            self._rebuild()
        elif kind == "campaigns":
            if self.campaigns is None:
                self.campaigns = CampaignRules(parsed, self.fences, limiter=self.limiter, outbox=self.outbox,
                                               on_decision=self._on_decision, on_decisions=self._on_decisions,
                                               batch=self.backends.offers,
                                               clock=None if self.config.replay else self.engine.config.clock)
            else:
                self.campaigns.replace(parsed, self.fences)
            if self.backends.counters is not None and self.backends.pending is not None:
                from campaigns.live import LiveConversions

                if self.live is None:
                    self.live = LiveConversions(self.backends.counters, self.backends.pending, parsed,
                                                self.campaigns.fences)
                else:
                    self.live.replace(parsed, self.campaigns.fences)
            self.engine.set_rules(self.campaigns)
        elif kind == "beacons":
            self.registry = parsed
            self.tracker = ProximityTracker(parsed, **self.config.tracker_settings())
            self.engine.tracker = self.tracker

    def count(self, kind: str, parsed: Any) -> int:
        """How many fences, campaigns or beacons a validated document holds."""
        if isinstance(parsed, CampaignSet):
            return len(parsed.campaigns)
        if isinstance(parsed, BeaconRegistry):
            return len(parsed.beacons)
        return len(parsed)

    # -- kernels

    def warm_up(self) -> float:
        """Compile, or load from the kernel cache, what a request runs; called on the engine thread before the
        worker says it is ready (on a cold cache the first request would wait for the compiler instead).

        A throwaway engine on the loaded fences, with its own memory store and tracker (the live state is
        untouched), takes a ping inside a fence and one outside, a sighting of a registered beacon when a
        registry is loaded, an advance and a forget. Returns the seconds it took.
        """
        import shapely

        from proximity.plain_json import compile_kernels
        from proximity.store import MemoryStore

        start = time.perf_counter()
        compile_kernels()  # the reader of plain ping bodies (the service's ingest reads them before this engine)
        t0 = time.time() - 600.0
        lon, lat = 0.0, 0.0
        if self.fences:
            point = shapely.point_on_surface(self.fences[0].geometry)
            lon, lat = float(point.x), float(point.y)
        tracker = sightings = None
        if self.registry is not None and self.registry.beacons:
            from beacons import ProximityTracker, Sightings

            tracker = ProximityTracker(self.registry, **self.config.tracker_settings())
            sightings = Sightings.from_rows([{"observer": "warm-up", "key": next(iter(self.registry.beacons)),
                                              "rssi": -60.0, "tx_power": -59.0, "ts": t0 + 1.0}])
        # small batches take numpy twins of some kernels (nothing to compile on a first run); a server compiles
        # the kernels now, and they serve every batch after
        self.engine.index.compile()
        compile_sort()
        self.store.compile(self.engine.params)  # what the live store runs (the throwaway engine's is in memory)
        engine = Engine(self.engine.index, store=MemoryStore(), tracker=tracker, config=self.engine.config)
        engine.process_pings(PingBatch.from_rows([
            {"device_id": "warm-up", "ts": t0, "lon": lon, "lat": lat, "accuracy_m": 10.0},
            {"device_id": "warm-up-2", "ts": t0, "lon": lon + 1.0, "lat": lat, "accuracy_m": 10.0}]))
        if sightings is not None:
            engine.process_sightings(sightings)
        engine.advance(t0 + 86400.0)
        engine.forget("warm-up")
        return time.perf_counter() - start

    # -- batches (called on the engine thread)

    def _journal(self, key: str | None) -> Journal | None:
        return None if key is None else Journal(key, ttl_s=self.config.idempotency_ttl_s)

    def process_pings(self, rows: list[Any] | PingBatch, now: float,
                      journal: str | None = None) -> tuple[BatchResult, int, list[ValidationError]]:
        """JSON rows (or a request's pings already read as a batch, see :mod:`proximity.plain_json`) -> the
        engine: ``(result, accepted, rejected)``, each rejected row named by its request row (the bad rows
        found by ``PingBatch.from_json``, then those the engine refused)."""
        return self.process_ping_parts([rows], now, [journal])[0]

    def process_ping_parts(self, parts: Sequence[list[Any] | PingBatch], now: float, journals: Sequence[str | None]
                           ) -> list[tuple[BatchResult, int, list[ValidationError]]]:
        """Several requests' JSON rows (or batches) in one engine call (:meth:`Engine.process_stacked_pings`; the
        parts share no device), each answered as :meth:`process_pings` answers it alone. The rows are parsed in
        one go too: ``PingBatch.from_json`` has a fixed cost that a one-ping request would otherwise pay alone."""
        import proximity.parts as _parts

        base = np.zeros(len(parts), np.int64)
        if len(parts) > 1:
            np.cumsum([len(p) for p in parts[:-1]], out=base[1:])
        batch, errors = _parse_parts(parts, base)
        errors_of = _parts.split_errors(errors, base)
        if not len(batch):
            return [(BatchResult(), 0, e) for e in errors_of]
        # the answer carries the late, duplicate and implausible counts, not a row each (dropped=False); the
        # report counters' writes of all the parts go in one round trip at the end (LiveConversions.together)
        with self.live.together() if self.live is not None else contextlib.nullcontext():
            results = [self._visits(r) for r in self.engine.process_stacked_pings(
                batch, base, [self._journal(j) for j in journals], dropped=False)]
        if self.ping_listeners:  # the pings the engine took (not those it refused, e.g. from the future)
            refused = [e.row + int(base[i]) for i, r in enumerate(results) for e in r.rejected if e.row is not None]
            taken = batch.take(np.flatnonzero(~np.isin(batch.row, refused))) if refused else batch
            for listener in self.ping_listeners:
                listener(taken)
        counts = _parts.counts(_parts.part_of(batch.row, base), len(base))
        return [(r, counts[i] - len(r.rejected), _by_row(errors_of[i], r.rejected)) for i, r in enumerate(results)]

    def process_scans(self, doc: Mapping[str, Any], now: float,
                      journal: str | None = None) -> tuple[BatchResult, int, list[ValidationError]]:
        """A scan body -> the engine, row by row as for pings (a bad or future entry is refused on its own)."""
        scan, errors = scans_from_json(doc, source=SOURCE)
        if self.tracker is None:
            raise ValidationError("no beacon registry is loaded: PUT /v1/beacons first", field="sightings")
        result = (self._visits(self.engine.process_sightings(scan.sightings, journal=self._journal(journal)))
                  if len(scan.sightings) else BatchResult())
        for listener in self.scan_listeners:  # after the engine took them (heartbeats too)
            listener(scan, doc)
        return result, len(scan.sightings) - len(result.rejected), _by_row(errors, result.rejected)

    def scan_warnings(self, gateway_id: str) -> list[str]:
        """What the answer to a scan batch warns about: a ``gateway_id`` the beacon registry does not list."""
        known = getattr(self.registry, "gateways", None) or {}
        if gateway_id in known:
            return []
        return [f"unknown gateway {gateway_id!r}: the beacon registry lists no gateway with this id "
                f"({len(known)} registered); check the agent's --gateway-id"]

    def advance(self, now: float, limit: int | None = None) -> BatchResult:
        """Time passes to ``now``: presence first (due exits saved), then the campaign decisions of its
        events. When the decisions fail (Redis away after the save), the events are kept in this worker and
        decided again, with the next pass's, until that works: decisions are keyed by offer id, so a
        decision that half ran is not taken twice. (A worker killed in between loses them: see the README.)
        With ``limit``, at most that many due devices; :attr:`due_left` says whether others are left."""
        engine, rules = self.engine, self.engine.rules
        engine.rules = None  # the engine thread is the only caller: nothing else sees the engine meanwhile
        try:
            result = self._visits(engine.advance(now, limit))
        finally:
            engine.rules = rules
        events = [*self._undecided, *result.events]
        if rules is not None and events:
            self._undecided = events[-100_000:]  # bounded; emptied as soon as a pass decides them
            devices = engine.store.devices(list(dict.fromkeys(e.device_id for e in events)))
            result.offers = list(rules.decide(events, devices, now))
            engine.counters["offers"] += len(result.offers)
        self._undecided = []
        result.events = events
        return result

    @property
    def due_left(self) -> bool:
        """Whether the last :meth:`advance` given a ``limit`` left due devices for another call."""
        return bool(self.engine.store.due_left)

    def device_state(self, device_id: str) -> dict[str, Any]:
        return self.engine.device_state(device_id)

    def forget(self, device_id: str) -> BatchResult:
        """Erase a device: presence state (engine store), its per-device cap history (limiter) and its
        exposures waiting for a visit (report counters keep only counts per campaign, arm and store)."""
        result = self.engine.forget(device_id)
        self.limiter.forget(device_id)
        if self.backends.pending is not None:
            self.backends.pending.forget(device_id)
        return result

    def set_opt_out(self, device_id: str, flag: bool) -> None:
        self.engine.set_opt_out(device_id, flag)

    def dispatchers(self, hub_publish: Callable[[Any], Awaitable[None]]) -> Any:
        """Where offers go once out of the outbox: the live feed, plus a webhook and/or JSONL file if set."""
        from campaigns.dispatch import Fanout, JsonlSink, Subscribers, WebhookDispatcher

        feed = Subscribers()
        feed.subscribe(hub_publish)
        targets: list[Any] = [feed]
        if self.config.offers_file:
            targets.append(JsonlSink(self.config.offers_file))
        if self.config.webhook_url:
            secret = os.environ.get(self.config.webhook_secret_env)
            if not secret:
                raise ValidationError(f"--webhook-url needs a signing secret in ${self.config.webhook_secret_env}",
                                      field="webhook_secret_env")
            targets.append(WebhookDispatcher(self.config.webhook_url, secret))
        return targets[0] if len(targets) == 1 else Fanout(targets)


def _limit_kernel_threads(n: int) -> None:
    """Let the compiled kernels called from this (the engine) thread use at most ``n`` threads.

    numba's thread count is per calling thread, so this runs as the engine
    thread's initializer. A worker is one core's worth of work; parallel
    kernels on a machine whose cores are busy with other workers and the event
    loop wait on each other at every barrier (see ``ServiceConfig.engine_threads``).
    """
    try:
        import numba
    except ImportError:  # pragma: no cover  (numba is a dependency of geofence)
        return
    numba.set_num_threads(max(1, min(n, int(numba.config.NUMBA_NUM_THREADS))))


def _by_row(*groups: Sequence[ValidationError]) -> list[ValidationError]:
    """The rejected rows of a batch in row order, one error per (row, field)."""
    if not any(groups):
        return []
    seen: set[tuple[int | None, str | None]] = set()
    out: list[ValidationError] = []
    for e in sorted((e for g in groups for e in g), key=lambda e: e.row if e.row is not None else -1):
        if (e.row, e.field) not in seen:
            seen.add((e.row, e.field))
            out.append(e)
    return out


__all__ = ["EngineHost"]
