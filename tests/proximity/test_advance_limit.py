"""Time passing a bounded part at a time: ``advance(now, limit)`` runs at most ``limit`` due devices, and calls
until the store's ``due_left`` is false give the events one unbounded call gives (memory, and Redis in its three
modes); a worker's advance pass makes those calls one after the other, the requests' engine calls between them."""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proximity.service.loops as loops
from geofence import FenceIndex
from proximity.engine import Engine, EngineConfig
from proximity.service.config import ServiceConfig
from proximity.service.host import EngineHost
from proximity.service.loops import Loops
from proximity.service.metrics import ServiceMetrics
from proximity.store import MemoryStore
from tests.proximity import _faults as F
from tests.proximity.test_store_presence import CONFIG, FENCES, T0, Open, open_redis, pings  # noqa: F401

#: the test profile, with an idle TTL short enough that a pass also forgets devices
SHORT_TTL = EngineConfig(max_future_skew_s=None, profile="crossing", ttl_s=100.0)


def _key(e: Any) -> tuple[Any, ...]:
    return (e.device_id, e.kind, e.place, e.ts, e.cause)


def _by_parts(engine: Engine, now: float, limit: int) -> tuple[int, list[Any]]:
    """Advance calls of ``limit`` until the store has nothing due left: (calls, their events)."""
    calls, events = 0, []
    while True:
        result = engine.advance(now, limit)
        calls += 1
        assert len({e.device_id for e in result.events}) <= limit
        events += result.events
        if not engine.store.due_left:
            return calls, events
        assert calls < 10_000


@given(n=st.integers(0, 40), limit=st.integers(1, 12), seed=st.integers(0, 2**16))
@settings(max_examples=80, deadline=None)
def test_memory_advance_by_parts_gives_the_events_of_one_call(n: int, limit: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = sorted(((f"d{rng.randrange(n)}", rng.uniform(0, 60), rng.choice([0.0, 250.0, 500.0]))
                   for _ in range(3 * n)), key=lambda r: r[1])
    whole = Engine(FenceIndex(FENCES), store=MemoryStore(), config=SHORT_TTL)
    parts = Engine(FenceIndex(FENCES), store=MemoryStore(), config=SHORT_TTL)
    for engine in (whole, parts):
        if rows:
            engine.process_pings(pings(rows))
    for now in sorted(T0 + rng.uniform(0, 300) for _ in range(3)):  # exits first, then the idle forgotten
        want = whole.advance(now).events
        calls, got = _by_parts(parts, now, limit)
        assert sorted(map(_key, got)) == sorted(map(_key, want))
        assert len(parts.store) == len(whole.store)  # the same devices forgotten
        assert calls <= n // limit + 1
        assert parts.advance(now, limit).events == [] and not parts.store.due_left  # nothing twice


def test_an_unbounded_advance_leaves_nothing_due() -> None:
    engine = Engine(FenceIndex(FENCES), store=MemoryStore(), config=CONFIG)
    engine.process_pings(pings([(f"d{k}", 0, 0) for k in range(5)]))
    assert len(engine.advance(T0 + 3600, 2).events) == 2 and engine.store.due_left
    assert len(engine.advance(T0 + 3600).events) == 3 and not engine.store.due_left


@pytest.mark.redis
def test_redis_advance_by_parts_gives_the_events_of_one_memory_call(open_redis: Open) -> None:  # noqa: F811
    """30 devices with a visit each, 7 a call: 5 calls, every exit once, as the memory store gives them all at
    once (in cluster mode the devices are spread over many due sets: a call still runs at most 7)."""
    n, limit = 30, 7
    rows = [(f"dev-{k:02d}", k % 5, 0.0 if k % 2 else 500.0) for k in range(n)]
    oracle = Engine(FenceIndex(FENCES), store=MemoryStore(), config=CONFIG)
    engine = Engine(FenceIndex(FENCES), store=open_redis(), config=CONFIG)
    for e in (oracle, engine):
        e.process_pings(pings(rows))
    now = T0 + 3600
    want = oracle.advance(now).events
    calls, got = _by_parts(engine, now, limit)
    assert len(want) == n and sorted(map(_key, got)) == sorted(map(_key, want))
    assert calls == math.ceil(n / limit)
    assert engine.advance(now, limit).events == [] and not engine.store.due_left


def _host(tmp_path: Path, max_devices: int) -> EngineHost:
    paths = F.write_scenario(tmp_path)
    host = EngineHost(ServiceConfig(rate_limit=0, advance_max_devices=max_devices, engine={"gps_debounce_s": 60}),
                      ServiceMetrics())
    for kind in ("fences", "campaigns"):
        host.apply(kind, host.validate(kind, paths[kind].read_text(), "application/yaml", str(paths[kind])))
    _, lon, lat = F.STORES[0]
    t0 = time.time() - 3600
    rows = [{"device_id": f"dev-{d}", "lon": lon + F.SIZE / 2, "lat": lat + F.SIZE / 2, "accuracy_m": 8.0,
             "ts": t0 + 10 * k} for d in range(5) for k in range(8)]  # the default profile enters by the 8th fix
    result, accepted, _ = host.process_pings(rows, time.time())
    assert accepted == 40 and [e.kind for e in result.events] == ["enter"] * 5
    return host


def test_a_workers_advance_pass_runs_a_wave_a_bounded_part_at_a_time(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """5 exits due, 2 devices a call: one pass makes 3 calls and publishes each; with at most 2 calls a pass,
    the fifth exit waits for the next pass."""

    async def passes(host: EngineHost, count: int) -> tuple[list[int], list[str]]:
        published: list[str] = []

        async def publish(rendered: Any) -> None:
            published.extend(e["device_id"] for e in rendered.events if e["kind"] == "exit")

        async def feed_offer(offer: Any) -> None:
            return None

        worker = Loops(host.config, host, host.metrics, publish, feed_offer)
        return [await worker.advance_pass() for _ in range(count)], published

    host = _host(tmp_path / "a", 2)
    try:
        calls, exits = asyncio.run(passes(host, 2))
        assert calls == [3, 1] and sorted(exits) == [f"dev-{d}" for d in range(5)]  # the second finds nothing
    finally:
        asyncio.run(host.close())
    monkeypatch.setattr(loops, "MAX_ADVANCE_CALLS", 2)
    host = _host(tmp_path / "b", 2)
    try:
        calls, exits = asyncio.run(passes(host, 2))
        assert calls == [2, 1] and sorted(exits) == [f"dev-{d}" for d in range(5)]
    finally:
        asyncio.run(host.close())


def test_advance_max_devices_is_checked() -> None:
    with pytest.raises(ValueError, match="advance_max_devices must be at least 1"):
        ServiceConfig(advance_max_devices=0)
