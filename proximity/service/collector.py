"""The worker's garbage collector: set for a server once it is warm, and measured on ``/metrics``.

CPython's cyclic collector runs a young collection whenever the number of container objects
(lists, dicts, class instances) created and not yet freed passes 700. A worker answering many
small requests at once holds each one's parsed body, future, task and response while it is in
flight: with 64 requests in flight that count passes 700 about 150 times a second, and each
young collection walks what is young (0.3 ms each, measured with the callbacks below on a
2-core AMD EPYC VM; 4-7 % of the worker's CPU under a load of single-ping requests). Almost all of
those objects are freed by their reference counts a moment later, so the walks find nothing:
raising the young threshold to :data:`YOUNG_THRESHOLD` left 1-2 young collections per 4 s of the
same load, and no full collection during a benchmark's phase. Full collections are what makes the
latency's tail: each one walks every container object that is alive (the caps and pending exposures
of a memory worker grow with its devices: 2 ms at the start of a run, 15 ms a minute later), and
with Python's defaults they came about once a second under that load.

:func:`settle_collector` is called once a worker is warm (:func:`proximity.service.app.serve_forever`):
what exists then (modules, fences, campaigns, the engine) moves out of the collector's sight
(``gc.freeze``) and the young threshold goes up. The older generations keep Python's own ratios
(a middle collection every 10 young ones, a full one every 10 middle ones at most), so garbage in
reference cycles is still collected, only later.

:class:`CollectorWatch` times every collection from ``gc.callbacks`` into the worker's metrics
(``proximity_gc_collections_total``, ``proximity_gc_seconds_total`` and the pause histogram
``proximity_gc_pause_seconds``, by generation). A collection starts inside whatever allocation
triggered it, possibly while that thread holds a metric's lock, so the callback takes no lock: it
uses the metrics' unlocked updates (the collector runs one collection at a time, under the GIL, so
the callback is the only writer of those series).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from proximity.service.metrics import ServiceMetrics

#: the young generation's threshold once a worker is warm (Python's default: 700; see the module)
YOUNG_THRESHOLD = 10_000


def settle_collector(young: int = YOUNG_THRESHOLD) -> None:
    """Collect, freeze what is alive (it lives as long as the worker), and raise the young threshold to
    ``young`` (the older generations keep their thresholds)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


class CollectorWatch:
    """Times each garbage collection of this process into ``metrics`` while installed."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._collections = [metrics.gc_collections.labels(str(g)) for g in range(3)]
        self._seconds = [metrics.gc_seconds.labels(str(g)) for g in range(3)]
        self._pauses = [metrics.gc_pause.labels(str(g)) for g in range(3)]
        self._started = 0.0
        self.installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        g = min(int(info.get("generation", 2)), 2)
        self._collections[g].inc_unlocked(1.0)
        self._seconds[g].inc_unlocked(took)
        self._pauses[g].observe_unlocked(took)

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._callback)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._callback)
            self.installed = False


__all__ = ["YOUNG_THRESHOLD", "CollectorWatch", "settle_collector"]
