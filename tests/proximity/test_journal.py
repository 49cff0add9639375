"""The ingest journal: a batch retried after it failed half way answers exactly what its first try
committed, on the memory store, on Redis, and on Redis in cluster mode (one save call per slot group).

The oracle is the memory store processing each batch once, with no failure.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence import FenceIndex, circle_fence
from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.errors import StoreUnavailable
from proximity.events import Device, Event
from proximity.journal import RECORD, Journal, encode, replay
from proximity.presence import Transitions
from proximity.store import MemoryStore, RedisStore

LON0, LAT0 = 2.35, 48.85
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
T0 = 1_700_000_000.0
FENCES = [circle_fence("cafe", LON0, LAT0, 40.0), circle_fence("bank", LON0 + 500 * M_LON, LAT0, 40.0)]
CONFIG = EngineConfig(max_future_skew_s=None, gps_debounce_s=30.0, dwell_s=60.0)


def batch(rows: Sequence[tuple[str, float, float]]) -> PingBatch:
    """``(device, t, metres east)`` with 5 m accuracy."""
    return PingBatch.from_arrays([r[0] for r in rows], [LON0 + r[2] * M_LON for r in rows], [LAT0] * len(rows),
                                 5.0, [T0 + r[1] for r in rows])


class FlakyRules:
    """Campaign rules that issue one offer per enter (id from the event) and fail the first ``fail`` calls
    *after* the presence state was saved: the half-way failure of a Redis blip between save and decide."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.issued: list[str] = []

    def dwell_thresholds(self) -> Mapping[str, Sequence[float]]:
        return {}

    def decide(self, events: Sequence[Event], devices: Mapping[str, Device], now: float) -> Sequence[Any]:
        if self.fail > 0:
            self.fail -= 1
            raise StoreUnavailable("caps unavailable (test)", retry_after_s=1.0)
        offers = [f"{e.device_id}|{e.fence_id}|{e.ts!r}" for e in events if e.kind == "enter"]
        self.issued.extend(offers)
        return offers


def key(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return [(e.kind, e.device_id, e.fence_id, e.ts, e.cause, e.dwell_s, e.confidence) for e in events]


@pytest.fixture(params=["memory", "redis", "redis-slots"])
def make_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        yield MemoryStore
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    made: list[Any] = []

    def make() -> Any:
        store = RedisStore(url, prefix=f"{prefix}{len(made)}", cluster=request.param == "redis-slots")
        made.append(store)
        return store

    yield make
    for s in made:
        s.close()


walks = st.lists(st.tuples(st.sampled_from(["d1", "d2", "d3", "d\u00e9"]), st.integers(0, 600),
                           st.sampled_from([0.0, 10.0, 200.0, 500.0, 900.0])), min_size=1, max_size=40)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(walks=walks, cuts=st.lists(st.integers(1, 39), max_size=4), fail_every=st.integers(1, 3))
def test_a_retry_after_a_failure_answers_what_the_first_try_committed(make_store: Any, walks: list[Any],
                                                                         cuts: list[int], fail_every: int) -> None:
    rows = sorted(walks, key=lambda r: r[1])
    bounds = sorted({0, len(rows), *[c for c in cuts if c < len(rows)]})
    batches = [batch(rows[a:b]) for a, b in itertools.pairwise(bounds)]
    oracle_rules = FlakyRules()
    oracle = Engine(FenceIndex(FENCES), store=MemoryStore(), rules=oracle_rules, config=CONFIG)
    rules = FlakyRules()
    engine = Engine(FenceIndex(FENCES), store=make_store(), rules=rules, config=CONFIG)
    for i, b in enumerate(batches):
        want = oracle.process_pings(b)
        journal_key = f"batch-{i}"
        if want.events and i % fail_every == 0:  # the first try commits the state, then fails before its answer
            rules.fail = 1
            with pytest.raises(StoreUnavailable):
                engine.process_pings(b, journal=Journal(journal_key))
        got = engine.process_pings(b, journal=Journal(journal_key))
        assert key(got.events) == key(want.events)
        assert got.offers == want.offers
        again = engine.process_pings(b, journal=Journal(journal_key))  # and any later retry: the same
        assert key(again.events) == key(want.events) and again.offers == want.offers
    assert sorted(set(rules.issued)) == sorted(oracle_rules.issued)


def test_without_a_journal_a_retry_finds_its_pings_applied(make_store: Any) -> None:
    """What the journal is for: the same failure without one loses the batch's events."""
    rules = FlakyRules(fail=1)
    engine = Engine(FenceIndex(FENCES), store=make_store(), rules=rules, config=CONFIG)
    b = batch([("lost", 8.0 * k, 0.0) for k in range(7)])  # seven fixes inside: enough to enter, not to dwell
    with pytest.raises(StoreUnavailable):
        engine.process_pings(b)
    assert engine.process_pings(b).events == []
    engine2 = Engine(FenceIndex(FENCES), store=make_store(), rules=FlakyRules(fail=1), config=CONFIG)
    with pytest.raises(StoreUnavailable):
        engine2.process_pings(b, journal=Journal("k"))
    assert [e.kind for e in engine2.process_pings(b, journal=Journal("k")).events] == ["enter"]


def test_journal_records_round_trip_with_beacon_details() -> None:
    n = 5
    tr = Transitions(np.array([1, 0, 2, 1, 0], np.int8), np.array([1, 0, 1, 1, 2]), np.array([3, 4, 3, 5, 4], np.int32),
                     np.arange(n, dtype=float) + T0, np.array([1, 0, 1, 1, 0], np.int8), np.ones(n, np.int8),
                     np.zeros(n), np.array([1, 0, 1, 1, 2], np.int8), np.array([2, 0, 2, 1, -1]),
                     np.array([0.9, 0.4, 0.8, 0.7, np.nan]), np.zeros(0, np.int8))
    j = Journal("k", proximity=np.array([0, 3, 1], np.int8), distance=np.array([np.nan, 7.5, 0.5]))
    entries = encode(tr, 3, j)
    assert [len(e) // RECORD.itemsize for e in entries] == [1, 3, 1]
    back = replay(np.array([10, 11, 12]), entries, 100, j)
    assert back.dev.tolist() == [10, 11, 11, 11, 12]
    assert back.place.tolist() == [4, 5, 3, 3, 4]  # device 1's in the order of its evidence: ev 1, then ev 2
    assert back.ev.tolist() == [100, 101, 102, 102, -1]  # one new evidence index per (device, old evidence)
    assert back.prob.tolist()[:4] == [0.4, 0.7, 0.9, 0.8] and np.isnan(back.prob[4])  # the visit probability kept
    assert j.extra_proximity.tolist()[1:3] == [3, 1] and j.extra_distance.tolist()[1:3] == [7.5, 0.5]
    assert j.replayed == 3
