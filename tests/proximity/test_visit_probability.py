"""The visit probability on every event: in [0, 1], the same from both stores, never lowered by more
inside evidence for a lone fence; and evidence that must never enter (hostile or broken fixes)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import proximity._redis.store as redis_store
import proximity.presence as presence
import proximity.store as memory_store
from geofence import FenceIndex, circle_fence
from proximity.batch import PingBatch
from proximity.engine import PROFILES, Engine, EngineConfig
from proximity.events import Event
from proximity.presence import PresenceState, record_probability
from proximity.store import MemoryStore, RedisStore
from proximity.visit import DEFAULT_MODEL

LON0, LAT0 = 2.35, 48.85
M_LAT = 1 / 111_320.0
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
T0 = 1_700_000_000.0

# a lone 40 m circle and, for competition, two neighbours sharing a wall
LONE = [circle_fence("a", LON0, LAT0, 40.0)]
ROW = [circle_fence("a", LON0, LAT0, 20.0), circle_fence("b", LON0 + 40 * M_LON, LAT0, 20.0),
       circle_fence("c", LON0 - 40 * M_LON, LAT0, 20.0)]
XS = [-90, -60, -45, -30, -15, 0, 10, 25, 35, 45, 60, 120]
ACC = [4.0, 8.0, 15.0, 25.0, 40.0]
SPEED = [math.nan, 0.0, 0.7, 1.4, 9.0]

fix = st.tuples(st.integers(0, 60).map(lambda k: 20.0 * k), st.sampled_from(XS), st.sampled_from(XS[3:9]),
                st.sampled_from(ACC), st.sampled_from(SPEED))


def engine(fences: list[Any], store: Any = None, **options: Any) -> Engine:
    return Engine(FenceIndex(fences), store=store, config=EngineConfig(max_future_skew_s=None, **options))


def pings(rows: list[tuple[float, float, float, float, float]], device: str = "d") -> PingBatch:
    return PingBatch.from_arrays([device] * len(rows), [LON0 + r[1] * M_LON for r in rows],
                                 [LAT0 + r[2] * M_LAT for r in rows], [r[3] for r in rows],
                                 [T0 + r[0] for r in rows], speed=[r[4] for r in rows])


def run(eng: Engine, batches: list[list[Any]]) -> list[Event]:
    out: list[Event] = []
    for b in batches:
        out += eng.process_pings(pings(b)).events
    return out + eng.advance(T0 + 5000).events


def batches_of(rows: list[Any], cuts: list[int]) -> list[list[Any]]:
    """The distinct fixes in time order, cut into batches at the times ``cuts``."""
    edges = [-1, *sorted(set(cuts)), 10_000]
    batches = [[r for r in sorted(set(rows)) if lo < r[0] <= hi] for lo, hi in itertools.pairwise(edges)]
    return [b for b in batches if b]


def run_on_redis(redis_url: str, redis_prefix: str, fences: list[Any], batches: list[list[Any]],
                 **options: Any) -> list[Event]:
    """:func:`run` on a Redis store of its own (a fresh key prefix)."""
    store = RedisStore(redis_url, prefix=f"{redis_prefix}:{uuid.uuid4().hex[:8]}")
    try:
        return run(engine(fences, store, **options), batches)
    finally:
        store.close()


@pytest.mark.parametrize("profile", list(PROFILES))
@settings(max_examples=120, deadline=None)
@given(rows=st.lists(fix, min_size=1, max_size=40), fences=st.sampled_from([LONE, ROW]))
def test_every_event_has_a_probability_in_0_1(profile: str, rows: list[Any], fences: list[Any]) -> None:
    events = run(engine(fences, profile=profile), [sorted(set(rows))])
    for e in events:
        assert e.probability is not None and 0.0 <= e.probability <= 1.0, e
    if profile == "streaming":  # an enter needs the profile's probability
        assert all(e.probability >= PROFILES["streaming"]["enter_probability"] for e in events if e.kind == "enter")


def probability_of(eng: Engine, place: str = "a") -> float:
    """The engine's current probability for the device at ``place`` (0 when it holds no record of it)."""
    st_ = eng.store.state  # type: ignore[attr-defined]
    h = eng.store.ids.get("d")  # type: ignore[attr-defined]
    if h is None:
        return 0.0
    pid = eng.places.ids.get(place)
    for r in st_.records_of(h):
        if st_.r_place[r] == pid:
            return record_probability(st_, h, r, eng.places, eng.params)
    return 0.0


@pytest.mark.parametrize("edge_floor", [0.0, -2.0])  # the default, and records at the edge starting lower
@pytest.mark.parametrize("profile", list(PROFILES))
@settings(max_examples=150, deadline=None)
@given(rows=st.lists(fix, min_size=1, max_size=30, unique_by=lambda r: r[0]), at=st.integers(0, 1200),
       data=st.data())
def test_more_inside_evidence_never_lowers_a_lone_fences_probability(profile: str, edge_floor: float,
                                                                     rows: list[Any], at: int,
                                                                     data: st.DataObject) -> None:
    """One more fix fully inside the fence (no coarser than the device's other fixes), inserted anywhere:
    after every later fix the probability is at least what it was without it (also with ``edge_floor``)."""
    rows = sorted(rows)
    if any(r[0] == at for r in rows):
        return
    acc = min(r[3] for r in rows)
    extra = (float(at), data.draw(st.sampled_from([-10, 0, 10])), 0.0, min(acc, 8.0), data.draw(st.sampled_from(SPEED)))
    model = dataclasses.replace(DEFAULT_MODEL, edge_floor=edge_floor)
    a, b = engine(LONE, profile=profile, model=model), engine(LONE, profile=profile, model=model)
    for r in sorted([*rows, extra]):
        b.process_pings(pings([r]))
        if r is extra:
            continue
        a.process_pings(pings([r]))
        if r[0] > at:
            assert probability_of(b) >= probability_of(a) - 1e-12, (r, probability_of(b), probability_of(a))


def test_a_neighbour_takes_its_share_of_the_probability() -> None:
    """The same fixes either side of a store's wall: alone, and with the store next door behind the wall."""
    on_wall = [(20.0 * k, 12 if k % 2 else 28, 0, 15.0, 0.0) for k in range(8)]
    alone = engine([ROW[0]])
    alone.process_pings(pings(on_wall))
    shared = engine(ROW)
    shared.process_pings(pings(on_wall))
    assert probability_of(shared) < probability_of(alone)


@pytest.mark.redis
@pytest.mark.parametrize("profile", list(PROFILES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(fix, min_size=1, max_size=30), cuts=st.lists(st.integers(0, 1200), max_size=3),
       fences=st.sampled_from([LONE, ROW]))
def test_redis_store_gives_the_same_probabilities(profile: str, rows: list[Any], cuts: list[int], fences: list[Any],
                                                  redis_url: str, redis_prefix: str) -> None:
    batches = batches_of(rows, cuts)
    expected = run(engine(fences, MemoryStore(), profile=profile), batches)
    got = run_on_redis(redis_url, redis_prefix, fences, batches, profile=profile)
    assert got == expected  # whole events, with their probability


# fixes at one time in shop c, shop a and outside the row
SIMULTANEOUS = [(0.0, -90, -30, 4.0, math.nan), (0.0, -45, -15, 4.0, math.nan), (0.0, -15, 0, 8.0, math.nan)]


@pytest.mark.redis
def test_simultaneous_exits_of_competing_places_agree(redis_url: str, redis_prefix: str) -> None:
    """One ``advance`` ends two competing visits at once: each exit's probability counts the other,
    whichever order the store keeps the records in (the two stores keep them in different orders)."""
    expected = run(engine(ROW, MemoryStore(), profile="crossing"), [SIMULTANEOUS])
    assert sum(e.kind == "exit" for e in expected) >= 2
    assert run_on_redis(redis_url, redis_prefix, ROW, [SIMULTANEOUS], profile="crossing") == expected


def shuffle_records(state: PresenceState, rng: np.random.Generator) -> None:
    """Relink every device's visit records in a random order (the same records, the same state)."""
    for d in np.flatnonzero(state.d_head >= 0):
        recs = state.records_of(int(d))
        if len(recs) < 2:
            continue
        recs = [recs[i] for i in rng.permutation(len(recs))]
        state.d_head[d] = recs[0]
        state.r_next[recs] = [*recs[1:], -1]


# a mall around the row of shops: it overlaps them all, so it competes with none of them
MALL = [*ROW, circle_fence("m", LON0, LAT0, 70.0)]
# moments of one or more fixes in the shops of the row or outside it: a device often holds visits to
# competing shops, then ended together by one unpaired fix, one debounce or one ``advance``
moment = st.tuples(st.integers(0, 12).map(lambda k: 30.0 * k),
                   st.lists(st.tuples(st.sampled_from([-90, -40, -30, 0, 10, 30, 40, 90]), st.sampled_from([-5, 0, 5]),
                                      st.sampled_from([4.0, 8.0, 15.0])), min_size=1, max_size=3),
                   st.sampled_from([math.nan, 0.0]))


@pytest.mark.parametrize("store_kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
@pytest.mark.parametrize("profile", list(PROFILES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moments=st.lists(moment, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 400), max_size=2),
       fences=st.sampled_from([ROW, MALL]), seed=st.integers(0, 2**32 - 1))
@example(moments=[(t, [(x, y, acc)], spd) for t, x, y, acc, spd in SIMULTANEOUS], cuts=[], fences=ROW, seed=0)
@example(moments=[(t, [(x, y, acc)], spd) for t, x, y, acc, spd in SIMULTANEOUS], cuts=[], fences=ROW, seed=3)
def test_events_do_not_depend_on_the_order_of_a_devices_records(
        store_kind: str, profile: str, moments: list[Any], cuts: list[int], fences: list[Any], seed: int,
        request: pytest.FixtureRequest) -> None:
    """Before every call of the transition function (apply and advance) each device's records are
    relinked in a random order: the events, probabilities included, are those of an unshuffled run."""
    rows = [(t, x, y, acc, spd) for t, fixes, spd in moments for x, y, acc in fixes]
    batches = batches_of(rows, cuts)
    expected = run(engine(fences, MemoryStore(), profile=profile), batches)
    rng = np.random.default_rng(seed)

    def shuffled(fn: Any) -> Any:
        def call(state: PresenceState, *args: Any, **kwargs: Any) -> Any:
            shuffle_records(state, rng)
            return fn(state, *args, **kwargs)
        return call

    with pytest.MonkeyPatch.context() as mp:
        for mod in (memory_store, redis_store):  # both stores call the transition function by these names
            mp.setattr(mod, "apply_evidence", shuffled(presence.apply_evidence))
            mp.setattr(mod, "advance_state", shuffled(presence.advance_state))
        if store_kind == "memory":
            got = run(engine(fences, MemoryStore(), profile=profile), batches)
        else:
            got = run_on_redis(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"),
                               fences, batches, profile=profile)
    assert got == expected


# -- evidence that must never enter ------------------------------------------------------------------

def inside(t: float, acc: float = 5.0) -> tuple[float, float, float, float, float]:
    return (t, 0.0, 0.0, acc, 0.0)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_zero_accuracy_never_enters_and_is_counted(profile: str) -> None:
    eng = engine(LONE, profile=profile)
    r = eng.process_pings(pings([inside(k * 20.0, 0.0) for k in range(10)]))
    assert r.events == [] and r.stats["bad_accuracy"] == 10 and r.stats["rejected"] == 10
    assert {x.field for x in r.rejected} == {"accuracy_m"} and "not a real fix" in r.rejected[0].message


@pytest.mark.parametrize("acc", [-5.0, math.nan])
def test_negative_or_nan_accuracy_is_refused_at_the_edge_and_by_the_engine(acc: float) -> None:
    from proximity.errors import ValidationError

    with pytest.raises(ValidationError, match="accuracy_m"):
        pings([inside(0.0, acc)])
    # a batch built around the validation (columns set directly) is still refused by the engine
    good = pings([inside(k * 20.0) for k in range(10)])
    good.accuracy_m[:] = acc
    r = engine(LONE).process_pings(good)
    assert r.events == [] and r.stats["bad_accuracy"] == 10


@pytest.mark.parametrize("profile", list(PROFILES))
def test_a_100_km_jump_in_a_second_never_enters(profile: str) -> None:
    far = (0.0, 100_000.0, 0.0, 5.0, 0.0)  # 100 km east, then the store one second later, then more
    eng = engine(LONE, profile=profile)
    r = eng.process_pings(pings([far, *[inside(1.0 + k) for k in range(10)]]))
    assert r.events == [] and r.stats["implausible"] == 10
    assert all(d.message.startswith("implausible") for d in r.dropped)
    # the device really travelled: hours later, fixes at the store are plausible again
    later = eng.process_pings(pings([inside(7200.0 + 20 * k) for k in range(10)]))
    assert later.stats["implausible"] == 0 and [e.kind for e in later.events][:1] == ["enter"]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_out_of_order_and_replayed_pings_never_enter(profile: str) -> None:
    eng = engine(LONE, profile=profile)
    eng.process_pings(pings([(100.0, 200.0, 0.0, 5.0, 1.4)]))  # far outside, newest
    old = [inside(20.0 * k) for k in range(5)]  # inside, but older than what was applied
    r = eng.process_pings(pings(old))
    assert r.events == [] and r.stats["late"] == 5
    assert all(d.message.startswith("late") for d in r.dropped)
    replay = eng.process_pings(pings([(100.0, 200.0, 0.0, 5.0, 1.4)] * 3))
    assert replay.events == [] and replay.stats["late"] == 1 and replay.stats["duplicates"] == 2
    assert sorted(d.message.split(":")[0] for d in replay.dropped) == ["duplicate", "duplicate", "late"]


def test_a_caller_that_answers_with_counts_can_skip_the_dropped_rows() -> None:
    # the service answers with the counts: the same call with dropped=False has the same stats, no rows
    import numpy as np

    rows = pings([(100.0, 200.0, 0.0, 5.0, 1.4)] * 3 + [inside(20.0 * k) for k in range(4)])
    got = []
    for keep in (True, False):
        eng = engine(LONE)
        eng.process_pings(pings([(100.0, 200.0, 0.0, 5.0, 1.4)]))
        got.append(eng.process_stacked_pings(rows, np.zeros(1, np.int64), dropped=keep)[0])
    assert got[0].stats == got[1].stats and got[0].stats["late"] + got[0].stats["duplicates"] == 7
    assert len(got[0].dropped) == 7 and got[1].dropped == []


def test_profiles_set_what_is_left_unset() -> None:
    c = EngineConfig(profile="crossing", gps_exit_pings=3)
    assert (c.gps_exit_pings, c.enter_probability, c.gps_debounce_s) == (3, 0.0, 60.0)
    s = EngineConfig()
    assert s.profile == "streaming" and s.enter_probability == PROFILES["streaming"]["enter_probability"]
    with pytest.raises(ValueError, match="profile must be one of streaming, crossing"):
        EngineConfig(profile="crosing")
    assert np.all(EngineConfig().params.pm == EngineConfig().params.pm)
