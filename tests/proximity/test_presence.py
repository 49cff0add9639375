"""Presence semantics, one scenario per rule, run against BOTH state stores (memory and a real Redis).

Fences are hand-made around a local origin; positions are given in metres east/north of it.
Each test names the rule it guards; breaking the rule in ``proximity.presence`` /
``proximity._kernels`` makes it fail.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from geofence import Fence, FenceIndex, circle_fence
from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.events import Event
from proximity.presence import PresenceParams
from proximity.store import MemoryStore, RedisStore

sys.path.insert(0, str(Path(__file__).resolve().parent))

LON0, LAT0 = 2.35, 48.85
M_LAT = 1 / 111_320.0
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
T0 = 1_700_000_000.0

REGISTRY = """
version: 1
beacons:
  - key: ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1
    fence_id: shop
    zone: entrance
    power_1m: -59
  - key: ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/2
    fence_id: shop
    zone: checkout
    power_1m: -59
"""
ENTRANCE = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1"
CHECKOUT = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/2"


def xy(dx: float, dy: float) -> tuple[float, float]:
    return LON0 + dx * M_LON, LAT0 + dy * M_LAT


def circle(fid: str, dx: float, dy: float, r: float, **props: Any) -> Fence:
    lon, lat = xy(dx, dy)
    return circle_fence(fid, lon, lat, r, properties=props)


def square(fid: str, dx: float, dy: float, half: float, **props: Any) -> Fence:
    (x0, y0), (x1, y1) = xy(dx - half, dy - half), xy(dx + half, dy + half)
    return Fence(id=fid, name=fid, tags=(), properties=props, geometry=shapely.box(x0, y0, x1, y1))


def pings(rows: list[tuple[str, float, float, float, float]], **extra: Any) -> PingBatch:
    """``(device, t, dx, dy, accuracy)`` with t in seconds after T0."""
    out = []
    for dev, t, dx, dy, acc in rows:
        lon, lat = xy(dx, dy)
        out.append({"device_id": dev, "ts": T0 + t, "lon": lon, "lat": lat, "accuracy_m": acc, **extra})
    return PingBatch.from_rows(out)


def track(dev: str, t0: float, t1: float, step: float, dx: float, dy: float, acc: float = 5.0) -> list[Any]:
    return [(dev, t, dx, dy, acc) for t in np.arange(t0, t1 + 1e-9, step)]


def kinds(events: list[Event], place: str | None = None) -> list[str]:
    return [e.kind for e in events if place is None or e.place == place]


def sightings(rows: list[tuple[str, float, str, float]]) -> Any:
    """``(device, t, beacon key, rssi)``: a phone that saw a store beacon."""
    from beacons import Sightings

    return Sightings.from_rows([{"observer": d, "ts": T0 + t, "key": k, "rssi": rssi, "tx_power": None}
                                for d, t, k, rssi in rows])


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis-cluster-mode", marks=pytest.mark.redis),
                        pytest.param("redis-cluster", marks=pytest.mark.redis)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``redis-cluster-mode``: ``RedisStore(cluster=True)`` (per-slot due sets and script calls) on the test
    server, the code path a Redis Cluster runs; ``redis-cluster``: the same on a real 3-master cluster."""
    return str(request.param)


@pytest.fixture
def make_engine(store_kind: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Engine]]:
    """``make_engine(fences, tracker=..., rules=..., share=engine, **EngineConfig fields)``."""
    stores: list[Any] = []

    def make(fences: list[Fence], *, tracker: Any = None, rules: Any = None, share: Engine | None = None,
             **cfg: Any) -> Engine:
        cfg.setdefault("max_future_skew_s", None)
        if share is not None:
            store = share.store
        elif store_kind == "memory":
            store = MemoryStore()
        elif store_kind == "redis-cluster":
            url = request.getfixturevalue("redis_cluster_url")
            store = RedisStore(url, prefix=f"t{uuid.uuid4().hex[:12]}", ttl_s=3600, cluster=True)
        else:
            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")
            store = RedisStore(url, prefix=f"{prefix}:{len(stores)}", ttl_s=3600,
                               cluster=store_kind == "redis-cluster-mode")
        stores.append(store)
        return Engine(FenceIndex(fences), store=store, tracker=tracker, rules=rules, config=EngineConfig(**{"profile": "crossing", **cfg}))

    yield make
    for s in stores:
        s.close()


def tracker() -> Any:
    from beacons import ProximityTracker, load_registry

    return ProximityTracker(load_registry(REGISTRY))


# -- enter needs confidence ---------------------------------------------------------------------


def test_enter_on_accuracy_circle_inside(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)])
    r = eng.process_pings(pings([("d1", 0, 0, 0, 5)]))
    assert [(e.kind, e.fence_id, e.confidence, e.source, e.cause, e.ts) for e in r.events] == [
        ("enter", "cafe", 3, "gps", "ping", T0)]


def test_enter_with_point_inside_needs_accuracy_within_limit(make_engine: Callable[..., Engine]) -> None:
    # 60 m square; point 25 m from centre with 30 m accuracy: circle pokes out (confidence 2)
    eng = make_engine([square("shop", 0, 0, 30), square("strict", 500, 0, 30, max_accuracy_m=10)])
    r = eng.process_pings(pings([("d1", 0, 25, 0, 30), ("d2", 0, 525, 0, 30)]))
    assert [(e.device_id, e.kind, e.fence_id, e.confidence) for e in r.events] == [("d1", "enter", "shop", 2)]
    # the fence's own max_accuracy_m (10 m) refuses d2's 30 m ping; a 9 m one enters
    r = eng.process_pings(pings([("d2", 10, 525, 0, 9)]))
    assert [(e.kind, e.fence_id) for e in r.events] == [("enter", "strict")]


def test_accuracy_that_dwarfs_the_fence_never_enters(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("kiosk", 0, 0, 8)])
    # dead centre, every 10 s for an hour, with accuracy 40 m (limit: 2 x 8 m) and 500 m
    rows = track("d1", 0, 3600, 10, 0, 0, acc=40) + track("d2", 0, 3600, 10, 0, 0, acc=500)
    r = eng.process_pings(pings(rows))
    assert r.events == []
    assert r.stats["matches"] == len(rows)  # they were matched (point inside), just never trusted to enter


def test_coarse_ping_keeps_but_never_starts_a_visit(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], gps_debounce_s=60)
    # enter with a good fix, then coarse fixes (point inside, accuracy 200 m) every 30 s for 10 min
    rows = [("d1", 0, 0, 0, 5), *track("d1", 30, 600, 30, 0, 0, acc=200)]
    r = eng.process_pings(pings(rows))
    assert kinds(r.events) == ["enter", "dwell"]


# -- exit needs evidence; jitter never flaps ------------------------------------------------------


def test_exit_when_outside_by_more_than_accuracy(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)])
    r = eng.process_pings(pings([("d1", 0, 0, 0, 5), ("d1", 20, 100, 0, 20)]))
    assert [(e.kind, e.ts, e.cause, e.dwell_s) for e in r.events] == [
        ("enter", T0, "ping", 0.0), ("exit", T0 + 20, "ping", 20.0)]


def test_outside_within_accuracy_is_not_an_exit(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)])
    # 50 m from the centre (10 m outside) with 25 m accuracy: could still be inside
    r = eng.process_pings(pings([("d1", 0, 0, 0, 5), ("d1", 20, 50, 0, 25)]))
    assert kinds(r.events) == ["enter"]


def test_exit_after_debounce_without_inside_evidence(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], gps_debounce_s=60)
    eng.process_pings(pings([("d1", 0, 0, 0, 5), ("d1", 30, 0, 0, 5)]))
    assert eng.advance(T0 + 90).events == []  # 60 s without evidence is still within the debounce
    r = eng.advance(T0 + 90.5)
    assert [(e.kind, e.ts, e.cause) for e in r.events] == [("exit", T0 + 90, "debounce")]
    assert eng.advance(T0 + 1000).events == []
    # an ambiguous ping (outside within accuracy) later does not bring it back
    assert eng.process_pings(pings([("d1", 1100, 50, 0, 25)])).events == []


def test_debounce_exit_of_a_visit_begun_by_a_known_device(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], ttl_s=3600)
    eng.process_pings(pings([("d1", 0, 300, 0, 5)]))  # known, outside everything
    eng.process_pings(pings([("d1", 10, 0, 0, 5)]))  # enters: the visit's debounce is due before the TTL
    eng.process_pings(pings([("d1", 20, 0, 0, 5)]))  # stays: pushes the debounce later
    assert eng.advance(T0 + 70.5).events == []
    assert eng.advance(T0 + 80).events == []
    assert [(e.kind, e.ts - T0, e.cause) for e in eng.advance(T0 + 80.5).events] == [("exit", 80, "debounce")]
    eng.advance(T0 + 20 + 3600)
    assert eng.device_state("d1")["last_ts"] == T0 + 20
    eng.advance(T0 + 20 + 3600.5)
    assert eng.device_state("d1")["last_ts"] is None


def test_debounce_exit_is_found_by_the_next_ping_too(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], gps_debounce_s=60)
    # inside, then only coarse pings that cannot tell (80 m out, 60 m accuracy, above the 50 m limit):
    # the exit is dated when the debounce ran out
    r = eng.process_pings(pings([("d1", 0, 0, 0, 5), ("d1", 50, 80, 0, 60), ("d1", 100, 80, 0, 60)]))
    assert [(e.kind, e.ts, e.cause) for e in r.events] == [("enter", T0, "ping"), ("exit", T0 + 60, "debounce")]


def test_crossing_profile_debounce_and_dwell_times(make_engine: Callable[..., Engine]) -> None:
    """The ``crossing`` profile: GPS debounce 60 s, beacon debounce 30 s, dwell 300 s, one fix enters."""
    cfg = EngineConfig(profile="crossing")
    assert (cfg.gps_debounce_s, cfg.beacon_debounce_s, cfg.dwell_s) == (60.0, 30.0, 300.0)
    assert PresenceParams(max_speed_mps=cfg.max_speed_mps) == cfg.params
    eng = make_engine([circle("shop", 0, 0, 40)], tracker=tracker())
    r = eng.process_pings(pings(track("d1", 0, 400, 20, 0, 0)))
    assert [(e.kind, e.ts - T0, e.dwell_s) for e in r.events] == [("enter", 0, 0.0), ("dwell", 300, 300.0)]
    assert eng.advance(T0 + 460).events == []
    assert [(e.kind, e.ts - T0, e.cause) for e in eng.advance(T0 + 460.5).events] == [("exit", 460, "debounce")]
    eng.process_sightings(sightings([("d2", 1000, ENTRANCE, -62.0), ("d2", 1010, ENTRANCE, -62.0)]))
    assert eng.advance(T0 + 1040).events == []
    assert [(e.kind, e.place, e.ts - T0) for e in eng.advance(T0 + 1040.5).events] == [
        ("exit", "shop", 1040), ("exit", "shop#entrance", 1040)]


def test_jitter_across_the_boundary_never_flaps(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], dwell_s=300)
    rng = np.random.default_rng(7)
    rows = [("d1", 0.0, 0.0, 0.0, 5.0)]
    # parked at the boundary for an hour: 40 m +- 10 m from the centre, accuracy 15 m, every 10 s
    for t in range(10, 3600, 10):
        ang = rng.uniform(0, 2 * np.pi)
        d = 40 + rng.uniform(-10, 10)
        rows.append(("d1", float(t), d * np.cos(ang), d * np.sin(ang), 15.0))
    r = eng.process_pings(pings(rows))
    assert kinds(r.events) == ["enter", "dwell"]
    # walking away ends it exactly once
    r = eng.process_pings(pings([("d1", 3700, 300, 0, 10), ("d1", 3710, 320, 0, 10)]))
    assert kinds(r.events) == ["exit"]


# -- dwell --------------------------------------------------------------------------------------


def test_dwell_fires_once_per_visit_on_first_evidence_after_threshold(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40, dwell_s=120), circle("bank", 500, 0, 40)], dwell_s=300)
    r = eng.process_pings(pings(track("d1", 0, 1200, 50, 0, 0) + track("d2", 0, 1200, 50, 500, 0)))
    cafe = [(e.kind, e.ts - T0, e.dwell_s) for e in r.events if e.fence_id == "cafe"]
    bank = [(e.kind, e.ts - T0, e.dwell_s) for e in r.events if e.fence_id == "bank"]
    assert cafe == [("enter", 0, 0.0), ("dwell", 150, 120.0)]  # fence's own dwell_s; first ping at/after 120 s
    assert bank == [("enter", 0, 0.0), ("dwell", 300, 300.0)]  # engine default
    # a second visit dwells again (the first ended by debounce, 60 s after its last inside ping)
    r = eng.process_pings(pings([("d1", 1300, 400, 400, 5), *track("d1", 1400, 1600, 60, 0, 0)]))
    assert [(e.kind, e.ts - T0, e.dwell_s, e.cause) for e in r.events] == [
        ("exit", 1260, 1260.0, "debounce"), ("enter", 1400, 0.0, "ping"), ("dwell", 1520, 120.0, "ping")]


def test_dwell_thresholds_from_rules_each_fire_once(make_engine: Callable[..., Engine]) -> None:
    class Rules:
        def dwell_thresholds(self) -> dict[str, list[float]]:
            return {"cafe": [600.0, 120.0], "*": [900.0]}

        def decide(self, events: Any, devices: Any, now: float) -> list[Any]:
            return []

    eng = make_engine([circle("cafe", 0, 0, 40, dwell_s=120)], rules=Rules(), dwell_s=300)
    r = eng.process_pings(pings(track("d1", 0, 2000, 50, 0, 0)))
    assert [(e.kind, e.ts - T0, e.dwell_s) for e in r.events] == [
        ("enter", 0, 0.0), ("dwell", 150, 120.0), ("dwell", 600, 600.0), ("dwell", 900, 900.0)]


def test_several_thresholds_passed_at_once_fire_in_order(make_engine: Callable[..., Engine]) -> None:
    class Rules:
        def dwell_thresholds(self) -> dict[str, list[float]]:
            return {"*": [60.0, 90.0]}

        def decide(self, events: Any, devices: Any, now: float) -> list[Any]:
            return []

    eng = make_engine([circle("cafe", 0, 0, 40)], rules=Rules(), dwell_s=300, gps_debounce_s=120)
    r = eng.process_pings(pings([("d1", 0, 0, 0, 5), ("d1", 100, 0, 0, 5)]))
    assert [(e.kind, e.ts - T0, e.dwell_s) for e in r.events] == [
        ("enter", 0, 0.0), ("dwell", 100, 60.0), ("dwell", 100, 90.0)]


# -- order: no re-enter, late, duplicates, future skew -----------------------------------------


def test_no_re_enter_without_exit(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], dwell_s=10_000)
    for k in range(5):
        r = eng.process_pings(pings(track("d1", k * 100, k * 100 + 90, 10, 0, 0)))
        assert kinds(r.events) == (["enter"] if k == 0 else [])


def test_late_evidence_is_dropped_and_counted(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40), circle("bank", 500, 0, 40)])
    eng.process_pings(pings([("d1", 100, 0, 0, 5)]))
    # older than what was applied: would be an exit of cafe and an enter of bank
    r = eng.process_pings(pings([("d1", 50, 500, 0, 5), ("d1", 99.9, 500, 0, 5)]))
    assert r.events == []
    assert r.stats["late"] == 2 and r.stats["applied"] == 0
    assert eng.device_state("d1")["visits"][0]["fence_id"] == "cafe"
    # the same instant as the newest applied evidence is stale too (a resent ping); newer applies
    r = eng.process_pings(pings([("d1", 100, 500, 0, 5), ("d1", 100.5, 500, 0, 5)]))
    assert r.stats["late"] == 1 and kinds(r.events) == ["exit", "enter"]
    assert r.events[0].ts == T0 + 100.5


def test_duplicates_are_idempotent(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], dwell_s=60)
    rows = [*track("d1", 0, 120, 30, 0, 0), ("d1", 150, 300, 0, 5)]
    r1 = eng.process_pings(pings(rows + rows[::-1]))  # every ping twice, in any order
    assert kinds(r1.events) == ["enter", "dwell", "exit"]
    assert r1.stats["duplicates"] == len(rows)
    r2 = eng.process_pings(pings(rows))  # the whole batch again (a client retry)
    assert r2.events == []


def test_future_timestamps_are_rejected_with_a_reason(make_engine: Callable[..., Engine]) -> None:
    now = T0 + 1000
    eng = make_engine([circle("cafe", 0, 0, 40)], max_future_skew_s=300, clock=lambda: now)
    r = eng.process_pings(pings([("d1", 1000, 0, 0, 5), ("d2", 1301, 0, 0, 5), ("d3", 1299, 0, 0, 5)]))
    assert [e.device_id for e in r.events] == ["d1", "d3"]
    assert len(r.rejected) == 1 and r.rejected[0].row == 1 and r.rejected[0].field == "ts"
    assert "ahead of the server clock" in r.rejected[0].message
    assert r.stats["rejected"] == 1
    assert eng.device_state("d2")["visits"] == []


def test_events_come_in_device_then_time_order(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("a", 0, 0, 40), circle("b", 200, 0, 40)])
    rows = [("zed", 0, 0, 0, 5), ("amy", 10, 200, 0, 5), ("zed", 20, 200, 0, 5), ("amy", 5, 0, 0, 5)]
    r = eng.process_pings(pings(rows))
    assert [(e.device_id, e.ts - T0, e.kind, e.fence_id) for e in r.events] == [
        ("amy", 5, "enter", "a"), ("amy", 10, "exit", "a"), ("amy", 10, "enter", "b"),
        ("zed", 0, "enter", "a"), ("zed", 20, "exit", "a"), ("zed", 20, "enter", "b")]


# -- beacons fuse with GPS ----------------------------------------------------------------------


def test_beacon_keeps_device_in_store_while_gps_disagrees(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("shop", 0, 0, 15)], tracker=tracker(), beacon_debounce_s=30, gps_debounce_s=60)
    # the phone is near the entrance beacon every 10 s; GPS (indoors) puts it 80 m away
    r = eng.process_sightings(sightings([("d1", t, ENTRANCE, -62.0) for t in range(0, 300, 10)]))
    assert [(e.kind, e.place, e.source) for e in r.events if e.kind == "enter"] == [
        ("enter", "shop", "beacon"), ("enter", "shop#entrance", "beacon")]
    assert all(e.proximity == "near" for e in r.events if e.kind == "enter")
    r = eng.process_pings(pings([("d1", 295, 80, 0, 10)]))
    assert r.events == []  # beacon said "inside" 5 s ago
    # the beacon goes silent: both sources say outside once its debounce runs out
    r = eng.process_pings(pings([("d1", 330, 80, 0, 10)]))
    assert [(e.kind, e.place, e.ts - T0) for e in r.events] == [("exit", "shop", 320), ("exit", "shop#entrance", 320)]


def test_exit_needs_both_sources(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("shop", 0, 0, 30)], tracker=tracker(), beacon_debounce_s=30, gps_debounce_s=60)
    eng.process_pings(pings([("d1", 0, 0, 0, 5)]))
    eng.process_sightings(sightings([("d1", 10, CHECKOUT, -55.0)]))
    # GPS says clearly outside at 20 s, but the beacon saw it 10 s ago: still in the shop
    r = eng.process_pings(pings([("d1", 20, 200, 0, 10)]))
    assert "shop" not in [e.place for e in r.events]
    # the beacon's debounce runs out at 40 s with GPS still saying outside: exit then (a fused visit)
    r = eng.process_pings(pings([("d1", 45, 200, 0, 10)]))
    shop = [(e.kind, e.ts - T0, e.source, e.cause) for e in r.events if e.place == "shop"]
    assert shop == [("exit", 40, "fused", "debounce")]


def test_gps_alone_inside_keeps_store_visit_after_beacon_silence(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("shop", 0, 0, 30)], tracker=tracker(), beacon_debounce_s=30, gps_debounce_s=60)
    eng.process_sightings(sightings([("d1", 0, CHECKOUT, -55.0)]))
    r = eng.process_pings(pings(track("d1", 10, 200, 20, 0, 0)))
    # the zone ends 30 s after its last sighting; the store goes on on GPS evidence
    assert [(e.kind, e.place, e.ts - T0) for e in r.events] == [("exit", "shop#checkout", 30)]


def test_beacon_zone_is_a_place_of_its_own(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("shop", 0, 0, 30)], tracker=tracker(), beacon_debounce_s=30, zone_dwell_s=40,
                      dwell_s=60)
    r = eng.process_sightings(sightings(
        [("d1", t, ENTRANCE, -50.0) for t in (0, 10, 20)] + [("d1", t, CHECKOUT, -50.0) for t in range(30, 100, 10)]))
    assert [(e.kind, e.place, e.ts - T0) for e in r.events] == [
        ("enter", "shop", 0), ("enter", "shop#entrance", 0),
        ("enter", "shop#checkout", 30),
        ("exit", "shop#entrance", 50),  # the entrance zone ends; the shop visit goes on
        ("dwell", "shop", 60),
        ("dwell", "shop#checkout", 70),  # zones have their own dwell time
    ]
    assert all(e.zone is None for e in r.events if e.place == "shop")
    assert all(e.zone == "checkout" for e in r.events if e.place == "shop#checkout")


def test_beacon_of_a_shop_is_evidence_for_the_fence_around_it(make_engine: Callable[..., Engine]) -> None:
    # a mall (covers the shop) and a fence that only overlaps the shop: the shop's beacon speaks for the mall
    fences = [circle("shop", 0, 0, 30), square("mall", 0, 0, 200), square("lot", 60, 0, 40)]
    eng = make_engine(fences, tracker=tracker())
    r = eng.process_sightings(sightings([("d1", 0, ENTRANCE, -50.0)]))
    assert sorted((e.kind, e.place) for e in r.events) == [
        ("enter", "mall"), ("enter", "shop"), ("enter", "shop#entrance")]
    mall = next(e for e in r.events if e.place == "mall")
    assert (mall.source, mall.zone, mall.proximity) == ("beacon", None, "immediate")
    # a far sighting enters neither
    r = eng.process_sightings(sightings([("d2", 0, ENTRANCE, -95.0)]))
    assert r.events == []
    # and the streaming profile: the mall's probability rises with the shop's near sightings like the shop's
    eng = make_engine(fences, tracker=tracker(), profile="streaming")
    r = eng.process_sightings(sightings([("d1", t, ENTRANCE, -60.0) for t in (0, 10, 20)]))
    probs = {e.place: e.probability for e in r.events if e.kind == "enter"}
    assert set(probs) >= {"mall", "shop"} and "lot" not in probs
    assert probs["mall"] == pytest.approx(probs["shop"])


def test_far_beacon_does_not_enter(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("shop", 0, 0, 30)], tracker=tracker())
    r = eng.process_sightings(sightings([("d1", t, ENTRANCE, -95.0) for t in range(0, 100, 10)]))
    assert r.events == []


# -- options against single-fix mistakes (off by default) -----------------------------------------


def test_gps_exit_pings_needs_that_many_unpaired_pings_in_a_row(make_engine: Callable[..., Engine]) -> None:
    rows = [("d1", 0, 0, 0, 5), ("d1", 20, 300, 0, 10), ("d1", 30, 0, 0, 5), ("d1", 40, 300, 0, 10),
            ("d1", 50, 300, 0, 10)]
    once = make_engine([circle("cafe", 0, 0, 40)])
    assert [(e.kind, e.ts - T0) for e in once.process_pings(pings(rows)).events] == [
        ("enter", 0), ("exit", 20), ("enter", 30), ("exit", 40)]
    twice = make_engine([circle("cafe", 0, 0, 40)], gps_exit_pings=2)
    # one stray fix between inside ones is forgiven; the second unpaired fix in a row ends the visit
    r = twice.process_pings(pings(rows))
    assert [(e.kind, e.ts - T0, e.cause) for e in r.events] == [("enter", 0, "ping"), ("exit", 50, "ping")]
    # the count survives between batches (it is part of the stored state)
    one_by_one = [e for dev, t, dx, dy, acc in rows for e in twice.process_pings(pings([("d3", t, dx, dy, acc)])).events]
    assert [(e.kind, e.ts - T0) for e in one_by_one] == [("enter", 0), ("exit", 50)]
    # the debounce still ends a visit whose pings stopped saying "inside"
    r = twice.process_pings(pings([("d2", 0, 0, 0, 5), ("d2", 50, 300, 0, 10), ("d2", 70, 80, 0, 60)]))
    assert [(e.kind, e.ts - T0, e.cause) for e in r.events] == [("enter", 0, "ping"), ("exit", 60, "debounce")]


def test_gps_enter_confirmation(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], tracker=None, gps_enter_confirm_s=60, dwell_s=120)
    # a walker whose one fix lands inside: nothing at all, not even in the device's state
    r = eng.process_pings(pings([("walker", 0, 0, 0, 5), ("walker", 30, 300, 0, 10)]))
    assert r.events == [] and eng.device_state("walker")["visits"] == []
    # a visitor: inside at 100; a coarse fix (point inside, 200 m) at 170 keeps but does not confirm;
    # the ENTER-level fix at 200 confirms, dated then, with the time since the first fix; dwell counts from 100
    rows = [("visitor", 100, 0, 0, 5), ("visitor", 130, 0, 0, 5), ("visitor", 170, 0, 0, 200),
            ("visitor", 200, 0, 0, 5), ("visitor", 220, 0, 0, 5)]
    assert eng.device_state("visitor")["visits"] == []
    r = eng.process_pings(pings(rows))
    assert [(e.kind, e.ts - T0, e.dwell_s) for e in r.events] == [("enter", 200, 100.0), ("dwell", 220, 120.0)]
    # a tentative visit that the debounce ends goes without a word
    assert eng.process_pings(pings([("loiterer", 230, 0, 0, 5)])).events == []
    assert eng.device_state("loiterer")["visits"] == []  # tentative: not a visit yet
    assert [(e.device_id, e.kind, e.ts - T0) for e in eng.advance(T0 + 1000).events] == [("visitor", "exit", 280)]


def test_one_store_at_a_time_holds_back_the_store_next_door(make_engine: Callable[..., Engine]) -> None:
    # A and B share a wall (x = 30 m); the mall M overlaps B but not A
    fences = [square("A", 0, 0, 30), square("B", 60, 0, 30), square("M", 80, 0, 45)]
    rows = [("d1", 0, 0, 0, 5), ("d1", 40, 0, 0, 5),  # confirmed in A at 40
            ("d1", 60, 36, 0, 10), ("d1", 100, 36, 0, 10),  # 6 m into B (and 1 m into M), still "maybe A"
            ("d1", 140, 60, 0, 5)]  # deep in B: A ends, B and M are confirmed
    plain = make_engine(fences, gps_enter_confirm_s=30)
    assert [(e.kind, e.place, e.ts - T0) for e in plain.process_pings(pings(rows)).events] == [
        ("enter", "A", 40), ("enter", "B", 100), ("enter", "M", 100), ("exit", "A", 140)]
    one = make_engine(fences, gps_enter_confirm_s=30, gps_one_store_at_a_time=True)
    r = one.process_pings(pings(rows))
    assert [(e.kind, e.place, e.ts - T0, e.dwell_s) for e in r.events] == [
        ("enter", "A", 40, 40.0), ("exit", "A", 140, 140.0), ("enter", "B", 140, 80.0), ("enter", "M", 140, 80.0)]


def test_beacon_enter_is_never_held_back_by_gps_confirmation(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("shop", 0, 0, 30)], tracker=tracker(), gps_enter_confirm_s=60)
    eng.process_pings(pings([("d1", 0, 0, 0, 5)]))  # tentative GPS visit ...
    r = eng.process_sightings(sightings([("d1", 10, ENTRANCE, -62.0)]))  # ... a near beacon confirms it now
    assert [(e.kind, e.place, e.source, e.ts - T0) for e in r.events] == [
        ("enter", "shop", "beacon", 10), ("enter", "shop#entrance", "beacon", 10)]


def test_far_beacon_keeps_a_visit_when_configured(make_engine: Callable[..., Engine]) -> None:
    near = [("d1", 0, ENTRANCE, -62.0)]
    far = [("d1", t, ENTRANCE, -95.0) for t in range(20, 200, 20)]
    default = make_engine([circle("shop", 0, 0, 30)], tracker=tracker())
    r = default.process_sightings(sightings(near + far))
    assert [(e.kind, e.place, e.ts - T0) for e in r.events if e.kind == "exit"] == [
        ("exit", "shop", 30), ("exit", "shop#entrance", 30)]  # far says nothing: the debounce ends it
    keep = make_engine([circle("shop", 0, 0, 30)], tracker=tracker(), beacon_keep_proximity=3)
    r = keep.process_sightings(sightings(near + far))
    assert [(e.kind, e.place) for e in r.events if e.kind != "dwell"] == [("enter", "shop"), ("enter", "shop#entrance")]
    assert [(e.kind, e.ts - T0) for e in keep.advance(T0 + 400).events] == [("exit", 210), ("exit", 210)]
    # far alone still never enters
    assert keep.process_sightings(sightings([("d9", t, CHECKOUT, -95.0) for t in (0, 10, 20)])).events == []


def test_fence_without_gps_enter_is_entered_by_its_beacons_only(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("shop", 0, 0, 30, gps_enter=False), circle("cafe", 200, 0, 30)], tracker=tracker())
    r = eng.process_pings(pings([*track("d1", 0, 60, 20, 0, 0), ("d2", 0, 200, 0, 5)]))
    assert [(e.device_id, e.kind, e.place) for e in r.events] == [("d2", "enter", "cafe")]
    r = eng.process_sightings(sightings([("d1", 100, CHECKOUT, -55.0)]))
    assert [(e.kind, e.place) for e in r.events] == [("enter", "shop"), ("enter", "shop#checkout")]
    # GPS inside keeps the store visit after the beacon falls silent (the zone ends on its debounce)
    r = eng.process_pings(pings(track("d1", 120, 300, 20, 0, 0)))
    assert [(e.kind, e.place, e.ts - T0) for e in r.events] == [("exit", "shop#checkout", 130)]


# -- forgetting ---------------------------------------------------------------------------------


def test_idle_devices_are_forgotten_after_the_ttl(make_engine: Callable[..., Engine]) -> None:
    eng = make_engine([circle("cafe", 0, 0, 40)], ttl_s=3600)
    eng.process_pings(pings([("d1", 0, 0, 0, 5), ("d2", 0, 500, 0, 5)]))
    r = eng.advance(T0 + 100)
    assert [(e.device_id, e.kind) for e in r.events] == [("d1", "exit")]
    assert eng.device_state("d2")["last_ts"] == T0
    eng.advance(T0 + 3600)
    assert eng.device_state("d2")["last_ts"] == T0
    eng.advance(T0 + 3601)
    assert eng.device_state("d1")["last_ts"] is None and eng.device_state("d2")["last_ts"] is None
    # forgotten means forgotten: old evidence is no longer "late", it simply starts afresh
    r = eng.process_pings(pings([("d2", -10, 0, 0, 5)]))
    assert kinds(r.events) == ["enter"] and r.stats["late"] == 0


def test_forget_erases_a_device(make_engine: Callable[..., Engine]) -> None:
    class Rules:
        calls = 0

        def dwell_thresholds(self) -> dict[str, list[float]]:
            return {}

        def decide(self, events: Any, devices: Any, now: float) -> list[Any]:
            Rules.calls += 1
            return []

    eng = make_engine([circle("cafe", 0, 0, 40)], rules=Rules())
    eng.process_pings(pings([("d1", 0, 0, 0, 5)], attrs={"tier": "gold"}, timezone="Europe/Paris"))
    assert eng.device_state("d1")["attrs"] == {"tier": "gold"}
    calls = Rules.calls
    r = eng.forget("d1")
    assert [(e.kind, e.cause, e.ts) for e in r.events] == [("exit", "forget", T0)]
    assert Rules.calls == calls  # erasing is not an occasion for an offer
    st = eng.device_state("d1")
    assert st["visits"] == [] and st["last_ts"] is None and st["attrs"] == {} and st["timezone"] is None
    assert eng.forget("d1").events == []


# -- devices handed to the rules -----------------------------------------------------------------


def test_rules_get_events_and_the_latest_device_facts(make_engine: Callable[..., Engine]) -> None:
    seen: list[tuple[list[Event], dict[str, Any], float]] = []

    class Rules:
        def dwell_thresholds(self) -> dict[str, list[float]]:
            return {}

        def decide(self, events: Any, devices: Any, now: float) -> list[Any]:
            seen.append((list(events), dict(devices), now))
            return [f"offer:{e.device_id}:{e.kind}" for e in events]

    eng = make_engine([circle("cafe", 0, 0, 40)], rules=Rules())
    eng.set_opt_out("d2", True)
    b = PingBatch.concat([
        pings([("d1", 0, 300, 0, 5)], attrs={"tier": "silver"}),
        pings([("d1", 10, 0, 0, 5)], attrs={"tier": "gold"}, timezone="Europe/Paris"),
        pings([("d2", 10, 0, 0, 5)]),
        pings([("d3", 10, 900, 0, 5)], attrs={"tier": "none"}),
    ])
    r = eng.process_pings(b)
    assert r.offers == ["offer:d1:enter", "offer:d2:enter"]
    _events, devices, now = seen[-1]
    assert set(devices) == {"d1", "d2"}  # only devices with events
    assert dict(devices["d1"].attrs) == {"tier": "gold"} and devices["d1"].timezone == "Europe/Paris"
    assert devices["d2"].opted_out and not devices["d1"].opted_out
    assert now == T0 + 10
