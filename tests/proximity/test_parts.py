"""``proximity.parts``: the parts of a stacked call (several requests' pings in one engine call)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proximity.parts import check_disjoint


@settings(max_examples=400, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 4)), max_size=150))
def test_parts_that_share_a_device_are_refused(rows: list[tuple[int, int]]) -> None:
    # oracle: the set of parts each device's pings are in (up to SMALL_PARTS_CHECK pings a set, past it a sort)
    parts_of: dict[int, set[int]] = {}
    for code, part in rows:
        parts_of.setdefault(code, set()).add(part)
    shared = any(len(p) > 1 for p in parts_of.values())
    codes = np.array([r[0] for r in rows], np.int64)
    part = np.array([r[1] for r in rows], np.int64)
    if shared:
        with pytest.raises(ValueError, match="same device"):
            check_disjoint(codes, part)
    else:
        check_disjoint(codes, part)


@pytest.mark.parametrize("n", [10, 200])
def test_disjoint_parts_pass_and_one_shared_device_is_found_small_and_big(n: int) -> None:
    codes = np.arange(n, dtype=np.int64)[::-1].copy()
    part = np.arange(n, dtype=np.int64) % 7
    check_disjoint(codes, part)  # every device in one part
    codes[n // 2] = codes[n // 2 + 3]  # that device now in two parts
    with pytest.raises(ValueError, match="same device"):
        check_disjoint(codes, part)


@settings(max_examples=300, deadline=None)
@given(owner=st.dictionaries(st.integers(0, 15), st.integers(0, 3), min_size=1), data=st.data())
def test_events_and_offers_go_to_their_devices_parts_in_order(owner: dict[int, int], data: st.DataObject) -> None:
    """Oracle: each device's part looked up in a plain map; the events and offers of a part keep their order."""
    from proximity.events import Event, Offer
    from proximity.parts import split_by_device, split_events

    codes = sorted(owner)
    ev_dev = np.array(data.draw(st.lists(st.sampled_from(codes), min_size=1, max_size=40)) + codes, np.int64)
    part_ev = np.array([owner[c] for c in ev_dev.tolist()], np.int64)
    with_events = data.draw(st.lists(st.sampled_from(codes), max_size=20))
    names = np.array([f"dev{c}" for c in range(max(codes) + 1)], dtype=object)
    events = [Event("enter", f"dev{c}", "f", float(i)) for i, c in enumerate(with_events)]
    k = max(owner.values()) + 1
    got, own = split_events(events, k, ev_dev, part_ev, np.array(with_events, np.int64), names)
    if k == 1:
        assert got == [events] and own == {}
        return
    assert got == [[e for e in events if owner[int(e.device_id[3:])] == p] for p in range(k)]
    assert own == {f"dev{c}": owner[c] for c in set(with_events)}
    offers = [Offer(f"o{i}", "c", e.device_id, "f", e.ts, "t", "b") for i, e in enumerate(events)]
    assert split_by_device(offers, own, k) == [[o for o in offers if own[o.device_id] == p] for p in range(k)]


_SPOTS = [(2.351, 48.851, 5.0), (2.3585, 48.8585, 30.0), (2.30, 48.80, 10.0), (2.351, 48.851, 0.0)]  # in, edge, out, bad


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 3)),
                               min_size=1, max_size=6), min_size=1, max_size=5))
def test_a_stacked_call_counts_what_its_parts_count_one_by_one(parts: list[list[tuple[int, int, int]]]) -> None:
    """The engine's counters after one call of several parts equal those after the parts one by one (the call
    adds its parts' counts up once): pings, applied, late, duplicates, bad accuracy, matches, events by kind.
    Part ``i``'s devices are its own (``p{i}-{d}``); times repeat (duplicates) and go back (late)."""
    import json
    import time

    from geofence import FenceIndex, load_geojson
    from proximity.batch import PingBatch
    from proximity.engine import Engine, EngineConfig

    ring = [[2.350, 48.850], [2.357, 48.850], [2.357, 48.857], [2.350, 48.857], [2.350, 48.850]]
    fences = load_geojson(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "s", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    t0 = time.time() - 3600.0

    def batch(i: int, rows: list[tuple[int, int, int]]) -> PingBatch:
        return PingBatch.from_rows([{"device_id": f"p{i}-{d}", "lon": _SPOTS[s][0], "lat": _SPOTS[s][1],
                                     "accuracy_m": _SPOTS[s][2], "ts": t0 + 30 * t} for d, t, s in rows])

    def engine() -> Engine:
        return Engine(FenceIndex(fences), config=EngineConfig(profile="crossing"))

    together, alone = engine(), engine()
    batches = [batch(i, rows) for i, rows in enumerate(parts)]
    for _round in range(2):  # the second time, the rows are late (the devices have state past them)
        got = together.process_ping_parts(batches)
        want = [alone.process_ping_parts([b])[0] for b in batches]
        assert [r.stats for r in got] == [r.stats for r in want]
        assert dict(together.counters) == dict(alone.counters)
    if any(s != 3 for rows in parts for _d, _t, s in rows):  # (a row of a real fix was applied, then came again)
        assert together.counters["late"] > 0
