"""Property tests of presence: arrival order, duplicates and batch boundaries never change the events;
events per (device, place) always read ``enter dwell* exit``; both stores agree."""

from __future__ import annotations

import itertools
import math
import re
import uuid
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence import FenceIndex, circle_fence
from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.events import Event
from proximity.store import MemoryStore, RedisStore

LON0, LAT0 = 2.35, 48.85
M_LAT = 1 / 111_320.0
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
T0 = 1_700_000_000.0

# two overlapping circles and a small one; spots: inside both, inside one, on a boundary, near, far
FENCES = [
    circle_fence("a", LON0, LAT0, 40.0),
    circle_fence("b", LON0 + 50 * M_LON, LAT0, 40.0, properties={"dwell_s": 60}),
    circle_fence("k", LON0 - 120 * M_LON, LAT0, 10.0),
]
SPOTS = [(25, 0), (0, 0), (50, 0), (40, 0), (-40, 0), (-120, 0), (-130, 0), (200, 0), (0, 45)]
ACCURACY = [3.0, 12.0, 30.0, 90.0]
DEVICES = ["d0", "d1", "d2"]

ping = st.tuples(st.sampled_from(DEVICES), st.integers(0, 40).map(lambda k: 15.0 * k),
                 st.integers(0, len(SPOTS) - 1), st.sampled_from(ACCURACY))
ping_lists = st.lists(ping, min_size=1, max_size=40)


def batch(rows: list[tuple[str, float, int, float]]) -> PingBatch:
    dev = [r[0] for r in rows]
    lon = [LON0 + SPOTS[r[2]][0] * M_LON for r in rows]
    lat = [LAT0 + SPOTS[r[2]][1] * M_LAT for r in rows]
    return PingBatch.from_arrays(dev, lon, lat, [r[3] for r in rows], [T0 + r[1] for r in rows])


def canonical(rows: list[tuple[str, float, int, float]]) -> list[tuple[str, float, int, float]]:
    """Sorted by (device, time, position), duplicates removed: the order the engine must behave as."""
    return sorted(set(rows), key=lambda r: (r[0], r[1], SPOTS[r[2]][0] * M_LON, SPOTS[r[2]][1] * M_LAT, r[3]))


def key(e: Event) -> tuple[Any, ...]:
    return (e.device_id, e.ts, {"exit": 0, "enter": 1, "dwell": 2}[e.kind], e.place, e.dwell_s)


#: the one-fix ``crossing`` profile, the options against single-fix mistakes (exit after 2 pings out, confirmed
#: enters) and the ``streaming`` profile (enter on the visit probability)
OPTIONS = [{}, {"gps_exit_pings": 2, "gps_enter_confirm_s": 30.0, "gps_one_store_at_a_time": True},
           {"profile": "streaming"}]


def engine(store: Any = None, **options: Any) -> Engine:
    return Engine(FenceIndex(FENCES), store=store,
                  config=EngineConfig(**{"profile": "crossing", "max_future_skew_s": None, "dwell_s": 120,
                                       "gps_debounce_s": 60, **options}))


def run(eng: Engine, batches: list[list[tuple[str, float, int, float]]], end: float) -> list[Event]:
    out: list[Event] = []
    for b in batches:
        out.extend(eng.process_pings(batch(b)).events)
    out.extend(eng.advance(T0 + end).events)
    return out


def assert_well_formed(events: list[Event]) -> None:
    by_place: dict[tuple[str, str], list[Event]] = defaultdict(list)
    last_ts: dict[str, float] = {}
    for e in events:
        by_place[(e.device_id, e.place)].append(e)
        assert e.ts >= last_ts.get(e.device_id, -math.inf), "per-device events go forward in time"
        last_ts[e.device_id] = e.ts
    for evs in by_place.values():
        word = "".join({"enter": "n", "dwell": "d", "exit": "x"}[e.kind] for e in evs)
        assert re.fullmatch(r"(nd*x)*(nd*)?", word), word
        visit_thresholds: list[float] = []
        for e in evs:
            if e.kind == "enter":
                visit_thresholds = []
            elif e.kind == "dwell":
                assert e.dwell_s not in visit_thresholds, "a threshold fires once per visit"
                visit_thresholds.append(e.dwell_s)


@pytest.mark.parametrize("options", OPTIONS, ids=["crossing", "confirmations", "streaming"])
@settings(max_examples=150, deadline=None)
@given(rows=ping_lists, data=st.data())
def test_arrival_order_and_duplicates_do_not_matter(options: dict[str, Any], rows: list[Any],
                                                    data: st.DataObject) -> None:
    expected = run(engine(**options), [canonical(rows)], 5000)
    assert_well_formed(expected)
    dups = data.draw(st.lists(st.sampled_from(rows), max_size=10))
    shuffled = data.draw(st.permutations(rows + dups))
    assert run(engine(**options), [shuffled], 5000) == expected


@pytest.mark.parametrize("options", OPTIONS, ids=["crossing", "confirmations", "streaming"])
@settings(max_examples=150, deadline=None)
@given(rows=ping_lists, cuts=st.lists(st.integers(0, 600), max_size=4))
def test_batch_boundaries_and_resent_batches_do_not_matter(options: dict[str, Any], rows: list[Any],
                                                           cuts: list[int]) -> None:
    expected = run(engine(**options), [canonical(rows)], 5000)
    edges = [-1, *sorted(set(cuts)), 10_000]
    batches = [[r for r in rows if lo < r[1] <= hi] for lo, hi in itertools.pairwise(edges)]
    batches = [b for b in batches if b]
    resent = [b for pair in zip(batches, batches, strict=True) for b in pair]  # every batch sent twice
    got = run(engine(**options), resent, 5000)
    assert sorted(got, key=key) == sorted(expected, key=key)
    assert_well_formed(got)


@pytest.mark.redis
@pytest.mark.parametrize("options", OPTIONS, ids=["crossing", "confirmations", "streaming"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ping_lists, cuts=st.lists(st.integers(0, 600), max_size=3))
def test_redis_store_agrees_with_memory_store(options: dict[str, Any], rows: list[Any], cuts: list[int],
                                              redis_url: str, redis_prefix: str) -> None:
    edges = [-1, *sorted(set(cuts)), 10_000]
    batches = [[r for r in rows if lo < r[1] <= hi] for lo, hi in itertools.pairwise(edges)]
    batches = [b for b in batches if b]
    expected = run(engine(MemoryStore(), **options), batches, 5000)
    store = RedisStore(redis_url, prefix=f"{redis_prefix}:{uuid.uuid4().hex[:8]}")
    try:
        got = run(engine(store, **options), batches, 5000)
    finally:
        store.close()
    assert got == expected


# -- beacon zone sightings (already resolved by the tracker) -----------------------------------------

sighting = st.tuples(st.sampled_from(DEVICES), st.integers(0, 40).map(lambda k: 10.0 * k),
                     st.sampled_from(["entrance", "checkout", ""]), st.integers(0, 3))


def zone_sightings(rows: list[tuple[str, float, str, int]]) -> Any:
    n = len(rows)
    obj = lambda xs: np.array(xs, dtype=object)  # noqa: E731
    return SimpleNamespace(
        device_id=obj([r[0] for r in rows]), fence_id=obj(["a"] * n), zone=obj([r[2] for r in rows]),
        distance_m=np.array([[np.nan, 0.3, 1.5, 6.0][r[3]] for r in rows]),
        proximity=np.array([r[3] for r in rows], np.int8), ts=np.array([T0 + r[1] for r in rows]),
        row=np.arange(n))


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(sighting, min_size=1, max_size=40), data=st.data())
def test_sightings_order_and_duplicates_do_not_matter(rows: list[Any], data: st.DataObject) -> None:
    def go(rs: list[Any]) -> list[Event]:
        eng = engine()
        out = eng.process_zone_sightings(zone_sightings(rs)).events
        return out + eng.advance(T0 + 5000).events

    expected = go(sorted(set(rows)))
    assert_well_formed(expected)
    assert all(e.source == "beacon" for e in expected)
    extra = data.draw(st.lists(st.sampled_from(rows), max_size=8))
    assert go(data.draw(st.permutations(rows + extra))) == expected


@given(st.lists(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 4)), max_size=12), max_size=8),
       st.lists(st.integers(0, 400), max_size=30))
@settings(max_examples=200, deadline=None)
def test_a_place_tables_known_array_matches_its_keys(adds: list[list[tuple[int, int]]], probe: list[int]) -> None:
    """``PlaceTable.known`` (what the Redis store checks a loaded batch's place ids against) says exactly
    which ids have a key, through growth of the id range and of the thresholds' width, sparse ids included."""
    from proximity.presence import PlaceTable

    places = PlaceTable()
    for part in adds:
        ids = list(dict.fromkeys(pid for pid, _ in part))
        width = {pid: w for pid, w in part}
        places.add([f"p{pid}" for pid in ids], ids, [[60.0 * (k + 1) for k in range(width[pid])] for pid in ids])
        assert len(places.known) == len(places.keys) == places.thresholds.shape[0]
        assert places.known.tolist() == [k is not None for k in places.keys]
    ids_arr = np.array([i for i in probe if i < len(places)], np.int64)
    assert bool(places.known[ids_arr].all()) == all(places.keys[i] is not None for i in ids_arr.tolist())
