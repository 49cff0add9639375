"""The engine host: the engine and what it is built from (fences, campaigns, beacon registry), driven
from one dedicated thread; batches of pings and sightings go in through it."""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from beacons.scans import scans_from_json
from proximity.batch import PingBatch
from proximity.engine import BatchResult
from proximity.errors import ValidationError
from proximity.journal import Journal
from proximity.service.backends import Backends
from proximity.service.config import ServiceConfig
from proximity.service.metrics import ServiceMetrics

SOURCE = "<request body>"


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
        self.fences: list[Any] = []
        self.fences_loaded = False
        self.registry: Any = None
        self.campaigns: Any = None
        self.tracker: Any = None
        self.engine: Any = None
        #: called on the engine thread with each campaign Decision, each accepted PingBatch, each accepted
        #: ScanBatch and its body (the console's counters, positions and fleet)
        self.decision_listeners: list[Callable[[Any], None]] = []
        self.ping_listeners: list[Callable[[Any], None]] = []
        self.scan_listeners: list[Callable[[Any, Any], None]] = []
        self.store = self.backends.store  # created once: survives reloads
        self.limiter, self.outbox = self.backends.limiter, self.backends.outbox
        self._rebuild()

    # -- plumbing

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.backends.close()

    def _on_decision(self, decision: Any) -> None:
        for verdict in getattr(decision, "verdicts", ()):
            if verdict.outcome == "blocked":
                self.metrics.cap_blocks.labels(verdict.campaign_id, verdict.cap or "cap").inc()
        for listener in self.decision_listeners:
            listener(decision)

    def _rebuild(self) -> None:
        from geofence import FenceIndex
        from proximity.engine import Engine, EngineConfig

        index = FenceIndex(self.fences)
        if self.engine is None:
            settings = {"max_future_skew_s": self.config.max_skew_s, **self.config.engine_settings()}
            self.engine = Engine(index, store=self.store, tracker=self.tracker, rules=self.campaigns,
                                 config=EngineConfig(**settings))
            return
        self.engine.set_index(index)
        if self.campaigns is not None:
            self.campaigns.replace(self.campaigns.campaigns, self.fences)

    # -- configuration

    def validate(self, kind: str, text: str, media_type: str, source: str) -> Any:
        """Parse and check one document; raises a located ``ValueError`` and changes nothing when bad."""
        if kind == "fences":
            from geofence import load_geojson

            if not text.lstrip().startswith("{"):
                raise ValidationError("fences must be a GeoJSON FeatureCollection object", source=source,
                                      line=1, col=1)
            try:
                return load_geojson(text)
            except RecursionError:
                raise ValidationError("malformed JSON: nested too deeply", source=source) from None
        if kind == "campaigns":
            from campaigns import loads_campaigns

            if "json" in media_type:
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValidationError(f"malformed JSON: {exc.msg}", source=source, line=exc.lineno,
                                          col=exc.colno) from None
                text = json.dumps(doc, indent=1)  # JSON is YAML: positions stay meaningful
            return loads_campaigns(text, source=source, fences=self.fences if self.fences_loaded else None)
        if kind == "beacons":
            from beacons import load_registry

            return load_registry(text if text.endswith("\n") else text + "\n")
        raise ValidationError(f"unknown configuration kind {kind!r}", field="kind")

    def apply(self, kind: str, parsed: Any) -> None:
        if kind == "fences":
            self.fences = list(parsed)
            self.fences_loaded = True
            self._rebuild()
        elif kind == "campaigns":
            if self.campaigns is None:
                from campaigns import CampaignRules

                self.campaigns = CampaignRules(parsed, self.fences, limiter=self.limiter, outbox=self.outbox,
                                               on_decision=self._on_decision)
            else:
                self.campaigns.replace(parsed, self.fences)
            self.engine.set_rules(self.campaigns)
        elif kind == "beacons":
            from beacons import ProximityTracker

            self.registry = parsed
            self.tracker = ProximityTracker(parsed, **self.config.tracker_settings())
            self.engine.tracker = self.tracker

    def count(self, kind: str, parsed: Any) -> int:
        if kind == "campaigns":
            return len(getattr(parsed, "campaigns", ()) or ())
        if kind == "beacons":
            return len(getattr(parsed, "beacons", ()) or ())
        return len(parsed)

    # -- batches (called on the engine thread)

    def _journal(self, key: str | None) -> Journal | None:
        return None if key is None else Journal(key, ttl_s=self.config.idempotency_ttl_s)

    def process_pings(self, rows: list[Any], now: float,
                      journal: str | None = None) -> tuple[BatchResult, int, list[ValidationError]]:
        """JSON rows -> the engine: ``(result, accepted, rejected)``, each rejected row named by its request row
        (the bad rows found by ``PingBatch.from_json``, then those the engine refused)."""
        batch, errors = PingBatch.from_json(rows, source=SOURCE)
        if not len(batch):
            return BatchResult(), 0, errors
        result = self.engine.process_pings(batch, journal=self._journal(journal))
        for listener in self.ping_listeners:
            listener(batch)
        return result, len(batch) - len(result.rejected), _by_row(errors, result.rejected)

    def process_scans(self, doc: Mapping[str, Any], now: float,
                      journal: str | None = None) -> tuple[BatchResult, int, list[ValidationError]]:
        """A scan body -> the engine, row by row as for pings (a bad or future entry is refused on its own)."""
        scan, errors = scans_from_json(doc, source=SOURCE)
        if self.tracker is None:
            raise ValidationError("no beacon registry is loaded: PUT /v1/beacons first", field="sightings")
        result = (self.engine.process_sightings(scan.sightings, journal=self._journal(journal))
                  if len(scan.sightings) else BatchResult())
        for listener in self.scan_listeners:  # after the engine took them (heartbeats too)
            listener(scan, doc)
        return result, len(scan.sightings) - len(result.rejected), _by_row(errors, result.rejected)

    def warm_up(self) -> None:
        """Load the compiled kernels (match, presence, state) with a throwaway engine on one fence, before the
        worker takes connections: loading them on a first batch holds the interpreter for a second or two,
        which stalls the event loop (``/healthz`` of a just restarted worker) as well."""
        from geofence import FenceIndex, circle_fence
        from proximity.engine import Engine, EngineConfig
        from proximity.store import MemoryStore

        engine = Engine(FenceIndex([circle_fence("warm-up", 0.0, 0.0, 50.0)]), store=MemoryStore(),
                        config=EngineConfig(max_future_skew_s=None))
        batch = PingBatch.from_arrays(["warm-up"] * 2, [0.0, 0.01], [0.0, 0.0], 5.0, [1.0, 2.0])
        engine.process_pings(batch)
        engine.advance(1e6)

    def advance(self, now: float) -> Any:
        return self.engine.advance(now)

    def device_state(self, device_id: str) -> dict[str, Any]:
        state = self.engine.device_state(device_id)
        return dict(state) if isinstance(state, Mapping) else {"state": state}

    def forget(self, device_id: str) -> Any:
        """Erase a device: presence state (engine store) and its per-device cap history (limiter)."""
        result = self.engine.forget(device_id)
        forget = getattr(self.limiter, "forget", None)
        if callable(forget):
            forget(device_id)
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
    seen: set[tuple[int | None, str | None]] = set()
    out: list[ValidationError] = []
    for e in sorted((e for g in groups for e in g), key=lambda e: e.row if e.row is not None else -1):
        if (e.row, e.field) not in seen:
            seen.add((e.row, e.field))
            out.append(e)
    return out


__all__ = ["EngineHost"]
