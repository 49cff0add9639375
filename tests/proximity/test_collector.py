"""The worker's garbage collector: timed into ``/metrics`` without a lock, settled once warm."""

from __future__ import annotations

import gc
import re
import threading
from pathlib import Path

from aiohttp import web

from proximity.service import create_app
from proximity.service.collector import YOUNG_THRESHOLD, CollectorWatch, settle_collector
from proximity.service.config import ServiceConfig
from proximity.service.metrics import ServiceMetrics
from tests.proximity.test_server import fences_doc, square


def sample(text: str, name: str, generation: str) -> float:
    m = re.search(rf'^{name}\{{generation="{generation}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_metrics_time_every_collection_by_generation(aiohttp_client, tmp_path: Path) -> None:
    fences = tmp_path / "fences.geojson"
    fences.write_text(fences_doc(square("a", 2.35, 48.85)))
    app = create_app(ServiceConfig(fences=str(fences), rate_limit=0))
    client = await aiohttp_client(app)
    before = await (await client.get("/metrics")).text()
    gc.collect()
    gc.collect(0)
    after = await (await client.get("/metrics")).text()
    for gen in ("0", "2"):
        assert sample(after, "proximity_gc_collections_total", gen) >= sample(before, "proximity_gc_collections_total", gen) + 1
        assert sample(after, "proximity_gc_pause_seconds_count", gen) >= sample(before, "proximity_gc_pause_seconds_count", gen) + 1
        assert sample(after, "proximity_gc_seconds_total", gen) > sample(before, "proximity_gc_seconds_total", gen)
    # the pause histogram's buckets end at its count (a collection lands in exactly one bucket)
    inf = re.search(r'^proximity_gc_pause_seconds_bucket\{generation="2",le="\+Inf"\} (\S+)$', after, re.M)
    assert inf and float(inf.group(1)) == sample(after, "proximity_gc_pause_seconds_count", "2")
    await client.close()
    assert not any(getattr(cb, "__self__", None).__class__ is CollectorWatch for cb in gc.callbacks)  # uninstalled


def test_a_collection_while_a_metric_lock_is_held_does_not_deadlock() -> None:
    """A collection starts inside any allocation, possibly while that thread holds the very lock a metric
    takes: the callback must not take it (a locking callback hangs this thread forever)."""
    metrics = ServiceMetrics()
    watch = CollectorWatch(metrics)
    watch.install()
    done = threading.Event()

    def collect_under_the_locks() -> None:
        with metrics.gc_pause.labels("2")._lock, metrics.gc_collections.labels("2")._lock, \
                metrics.gc_seconds.labels("2")._lock:
            gc.collect()
        done.set()

    try:
        threading.Thread(target=collect_under_the_locks, daemon=True).start()
        assert done.wait(30), "the collector's callback waited for a lock its own thread holds"
        assert metrics.gc_collections.value("2") >= 1
        assert metrics.gc_pause.labels("2").count >= 1
    finally:
        watch.uninstall()


def test_settle_collector_freezes_and_raises_only_the_young_threshold() -> None:
    thresholds = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_freeze_count() > 1000  # the modules loaded so far
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_watch_installs_once_and_uninstalls() -> None:
    watch = CollectorWatch(ServiceMetrics())
    watch.install()
    watch.install()
    try:
        assert gc.callbacks.count(watch._callback) == 1
    finally:
        watch.uninstall()
    watch.uninstall()
    assert watch._callback not in gc.callbacks


def test_an_app_without_startup_installs_nothing() -> None:
    app = create_app(ServiceConfig(demo=True))
    assert isinstance(app, web.Application)
    assert not any(getattr(cb, "__self__", None).__class__ is CollectorWatch for cb in gc.callbacks)
