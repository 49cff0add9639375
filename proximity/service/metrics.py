"""A tiny Prometheus metrics registry: counters, gauges and histograms with labels.

No client library is needed: :meth:`Registry.render` writes the Prometheus text
exposition format (version 0.0.4) that ``GET /metrics`` serves.

    registry = Registry()
    pings = registry.counter("proximity_pings_total", "Pings accepted.", ["endpoint"])
    pings.labels("pings").inc(500)
    latency = registry.histogram("proximity_request_seconds", "Request latency.", ["route"])
    latency.labels("/v1/pings").observe(0.004)
    text = registry.render()

Metrics are per process: with several workers, scrape each one (or sum in
PromQL); ``proximity_process_info`` carries the worker's pid to tell them apart.
Label values are escaped as the format requires (backslash, quote, newline).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: Latency buckets in seconds, from 0.5 ms to 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


#: Garbage collection pause buckets in seconds, from 0.1 ms to 1 s.
GC_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (``+Inf``, ``-Inf``, ``NaN``, integers without ``.0``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for metric {name!r}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names for metric {name!r}: {labelnames}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], object] = {}

    def _key(self, values: Sequence[object], kw: dict[str, object]) -> tuple[str, ...]:
        if kw:
            if values:
                raise ValueError("pass label values by position or by name, not both")
            if set(kw) != set(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(kw)}")
            values = [kw[n] for n in self.labelnames]
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes {len(self.labelnames)} label values, got {len(values)}")
        return tuple(str(v) for v in values)

    def _child(self, values: Sequence[object], kw: dict[str, object], make: Callable[[], object]) -> object:
        """The child of these label values, made by ``make`` the first time (under the lock)."""
        if not kw:  # the hot path: label values by position, already strings (a tuple of them is the key)
            child = self._children.get(values)  # type: ignore[call-overload]
            if child is not None:
                return child
        key = self._key(values, kw)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = make()
        return child

    def _label_text(self, key: tuple[str, ...], extra: Sequence[tuple[str, str]] = ()) -> str:
        pairs = [*zip(self.labelnames, key, strict=True), *extra]
        if not pairs:
            return ""
        return "{" + ",".join(f'{n}="{_escape_label(v)}"' for n, v in pairs) + "}"

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class _Value:
    __slots__ = ("_lock", "value")

    def __init__(self, lock: threading.Lock) -> None:
        self.value = 0.0
        self._lock = lock


class CounterChild(_Value):
    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0 or math.isnan(amount):
            raise ValueError(f"a counter only goes up (got {amount})")
        with self._lock:
            self.value += amount

    def inc_unlocked(self, amount: float) -> None:
        """:meth:`inc` without the lock, for the one writer that cannot take it (a garbage collector callback,
        see :mod:`proximity.service.collector`): only where nothing else writes this series."""
        self.value += amount


class GaugeChild(_Value):
    __slots__ = ()

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value -= amount


class HistogramChild:
    __slots__ = ("_lock", "bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...], lock: threading.Lock) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above every bound (+Inf)
        self.count = 0
        self.sum = 0.0
        self._lock = lock

    def observe(self, value: float) -> None:
        if math.isnan(value):
            raise ValueError("cannot observe NaN")
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[i] += 1
            self.count += 1
            self.sum += value

    def observe_unlocked(self, value: float) -> None:
        """:meth:`observe` without the lock (as :meth:`CounterChild.inc_unlocked`: for a sole writer that cannot
        take it); a scrape during it may see the count before the sum."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value


class _ValueMetric(_Metric):
    """A metric whose children hold one number (counters and gauges)."""

    child_type: type[_Value] = _Value

    def _value_child(self, values: Sequence[object], kw: dict[str, object]) -> Any:
        return self._child(values, kw, lambda: self.child_type(threading.Lock()))

    def value(self, *values: object) -> float:
        child = self._children.get(self._key(values, {}))
        return 0.0 if child is None else child.value  # type: ignore[attr-defined]

    def samples(self) -> list[str]:
        return [f"{self.name}{self._label_text(k)} {format_value(c.value)}"  # type: ignore[attr-defined]
                for k, c in sorted(self._children.items())]


class Counter(_ValueMetric):
    kind = "counter"
    child_type = CounterChild

    def labels(self, *values: object, **kw: object) -> CounterChild:
        return self._value_child(values, kw)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)


class Gauge(_ValueMetric):
    kind = "gauge"
    child_type = GaugeChild

    def labels(self, *values: object, **kw: object) -> GaugeChild:
        return self._value_child(values, kw)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.labels().dec(amount)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Iterable[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"histogram {name!r} needs strictly increasing buckets, got {bounds}")
        if math.isinf(bounds[-1]):
            bounds = bounds[:-1]
        self.bounds = bounds

    def labels(self, *values: object, **kw: object) -> HistogramChild:
        return self._child(values, kw, lambda: HistogramChild(self.bounds, threading.Lock()))  # type: ignore[return-value]

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def samples(self) -> list[str]:
        out: list[str] = []
        for key, child in sorted(self._children.items()):
            h: HistogramChild = child  # type: ignore[assignment]
            with h._lock:
                counts, total, count = list(h.counts), h.sum, h.count
            cumulative = 0
            for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += n
                le = format_value(bound) if math.isinf(bound) else repr(bound)
                out.append(f"{self.name}_bucket{self._label_text(key, [('le', le)])} {cumulative}")
            out.append(f"{self.name}_sum{self._label_text(key)} {format_value(total)}")
            out.append(f"{self.name}_count{self._label_text(key)} {count}")
        return out


class Registry:
    """A set of metrics rendered together; names are unique."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name!r} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, labelnames))  # type: ignore[return-value]

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Iterable[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return self._add(Histogram(name, help, labelnames, buckets))  # type: ignore[return-value]

    def get(self, name: str) -> _Metric:
        return self._metrics[name]

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._metrics):
            metric = self._metrics[name]
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


#: The content type of :meth:`Registry.render`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    """The service's metrics, created once per app on a registry of their own."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.requests = r.counter(
            "proximity_http_requests_total", "HTTP requests answered, by route and status.", ["route", "status"]
        )
        self.latency = r.histogram(
            "proximity_http_request_seconds", "HTTP request latency, by route.", ["route"]
        )
        self.pings = r.counter("proximity_pings_total", "Ping rows, by outcome (accepted|rejected).", ["outcome"])
        self.sightings = r.counter(
            "proximity_sightings_total", "Sighting rows of /v1/scans, by outcome (accepted|rejected).", ["outcome"]
        )
        self.scans = r.counter("proximity_scans_total", "Scan batches accepted, by gateway (ids the beacon registry lists; any other under \"unregistered\").", ["gateway"])
        self.events = r.counter("proximity_events_total", "Presence events, by kind and source.", ["kind", "source"])
        self.offers = r.counter("proximity_offers_total", "Offers issued, by campaign.", ["campaign"])
        self.cap_blocks = r.counter(
            "proximity_cap_blocks_total", "Offers a cap blocked, by campaign and cap.", ["campaign", "cap"]
        )
        self.withheld = r.counter(
            "proximity_offers_withheld_total",
            "Offers not issued, by campaign and reason (stale: the event older than max_event_age; template_empty: "
            "a placeholder without a value).", ["campaign", "reason"])
        self.dispatch = r.counter(
            "proximity_dispatch_total", "Offer dispatch attempts, by dispatcher and result.", ["dispatcher", "result"]
        )
        self.engine_latency = r.histogram(
            "proximity_engine_batch_seconds", "Engine time per batch, by kind (pings|scans|advance).", ["kind"]
        )
        self.rejected = r.counter(
            "proximity_rejected_requests_total", "Requests refused, by reason.", ["reason"]
        )
        self.ping_calls = r.counter(
            "proximity_ping_engine_calls_total", "Engine calls for /v1/pings requests (requests coalesced per call: "
            "proximity_coalesced_requests_total / this).")
        self.coalesced = r.counter("proximity_coalesced_requests_total", "/v1/pings requests the coalescer ran.")
        self.coalesce_wait = r.histogram(
            "proximity_coalesce_wait_seconds", "Time a /v1/pings request waited in the coalescer for its engine "
            "call to start (behind the call running when it came).")
        self.ping_call = r.histogram(
            "proximity_ping_engine_call_seconds", "Wall time of one engine call for /v1/pings requests, by where it "
            "ran (loop: on the event loop's thread; thread: on the engine thread, the hand-offs included).",
            ["where"])
        self.replays = r.counter("proximity_idempotent_replays_total", "Responses replayed for a repeated batch_id.")
        self.reloads = r.counter(
            "proximity_reloads_total", "Configuration reloads, by kind and result (ok|error).", ["kind", "result"]
        )
        self.config_version = r.gauge(
            "proximity_config_version", "Version of the loaded configuration, by kind.", ["kind"]
        )
        self.ws_clients = r.gauge("proximity_feed_clients", "Open /v1/events WebSocket connections.")
        self.ws_dropped = r.counter(
            "proximity_feed_dropped_total", "Live feed messages dropped for slow WebSocket clients."
        )
        self.in_flight = r.gauge("proximity_in_flight_requests", "Requests being handled.")
        self.gc_collections = r.counter(
            "proximity_gc_collections_total", "Garbage collections of this process, by generation (0: young, 2: full).",
            ["generation"])
        self.gc_seconds = r.counter(
            "proximity_gc_seconds_total", "Time spent in garbage collections, by generation.", ["generation"])
        self.gc_pause = r.histogram(
            "proximity_gc_pause_seconds", "Each garbage collection's pause (the event loop stands still meanwhile), "
            "by generation.", ["generation"], GC_BUCKETS)
        self.info = r.gauge("proximity_process_info", "Always 1; labels tell the worker apart.", ["pid", "version"])


__all__ = [
    "CONTENT_TYPE",
    "GC_BUCKETS",
    "LATENCY_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "ServiceMetrics",
    "format_value",
]
