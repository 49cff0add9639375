"""The engine host: the engine and what it is built from (fences, campaigns, beacon registry), driven
from one dedicated thread; batches of pings and sightings go in through it."""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from proximity.engine import BatchResult
from proximity.errors import ValidationError
from proximity.service.backends import Backends
from proximity.service.config import ServiceConfig
from proximity.service.metrics import ServiceMetrics


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

    def _journal(self, key: str | None) -> Any:
        if key is None:
            return None
        from proximity.journal import Journal

        return Journal(key, ttl_s=self.config.idempotency_ttl_s)

    def process_pings(self, rows: list[Any], now: float,
                      journal: str | None = None) -> tuple[Any, int, list[BaseException]]:
        from proximity.batch import PingBatch

        errors: list[BaseException] = []
        batch = columns_of(rows)
        if batch is None:
            batch, found = PingBatch.from_rows(rows, source="<request body>", errors="collect")
            errors.extend(found)
        if not len(batch):
            return BatchResult(), 0, errors
        result = self.engine.process_pings(batch, journal=self._journal(journal))
        refused = list(getattr(result, "rejected", ()) or ())
        if refused:
            good_rows = _good_rows(len(rows), errors)
            for r in refused:
                errors.append(ValidationError(str(r.get("reason", "refused")), source="<request body>",
                                              field=r.get("field"), row=int(good_rows[int(r["row"])])))
            errors.sort(key=lambda e: getattr(e, "row", 0) or 0)
        return result, len(batch) - len(refused), errors

    def process_scans(self, doc: Mapping[str, Any], now: float,
                      journal: str | None = None) -> tuple[Any, int, list[BaseException]]:
        import numpy as np

        from beacons.scans import parse_scans_body

        scan = parse_scans_body(doc, source="<request body>")
        sightings = scan.sightings
        errors: list[BaseException] = []
        n = len(sightings.ts)
        if n:
            future = sightings.ts > now + self.config.max_skew_s
            if future.any():
                i = int(np.flatnonzero(future)[0])
                raise ValidationError(
                    f"ts is beyond the clock-skew limit of {self.config.max_skew_s:g} s in the future; check the "
                    "gateway clock", source="<request body>", field="ts", row=i)
        if self.tracker is None:
            raise ValidationError("no beacon registry is loaded: PUT /v1/beacons first", field="sightings")
        if not n:
            return BatchResult(), 0, errors
        return self.engine.process_sightings(sightings, journal=self._journal(journal)), n, errors

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
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


_REQUIRED = ("device_id", "lon", "lat", "accuracy_m", "ts")
_REQUIRED_OF = operator.itemgetter(*_REQUIRED)
_NUMBER_TYPES = {int, float}


def columns_of(rows: Sequence[Any]) -> Any:
    """The common case, fast: every row exactly ``{device_id, lon, lat, accuracy_m, ts}`` with JSON numbers.

    Builds the columns with list comprehensions and lets
    ``PingBatch.from_arrays`` validate them vectorially. Returns ``None`` for
    anything else (optional fields, numeric strings, ISO times, any bad row), and
    the caller takes ``PingBatch.from_rows``, which names every bad row: both
    paths accept and refuse exactly the same rows (a property test checks it).
    """
    from proximity.batch import PingBatch

    try:
        if set(map(type, rows)) != {dict} or set(map(len, rows)) != {5}:
            return None
        ids, *cols = zip(*map(_REQUIRED_OF, rows), strict=True)  # rows -> columns, in C
    except (KeyError, TypeError, ValueError):
        return None
    for col in cols:
        if not set(map(type, col)) <= _NUMBER_TYPES:
            return None
    try:
        return PingBatch.from_arrays(ids, *cols, source="<request body>")
    except (ValueError, OverflowError):
        return None


def _good_rows(n_rows: int, errors: Sequence[BaseException]) -> list[int]:
    """Row numbers (in the request) of the rows that survived ``from_rows``, in order."""
    bad = {getattr(e, "row", None) for e in errors}
    return [i for i in range(n_rows) if i not in bad]




__all__ = ["EngineHost", "columns_of"]
