"""Visits built from a log in time order (no grouping of its events) against the grouping path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import _kernels as K
from campaigns.conversions import Events, Visits, visits_by_grouping, visits_in_time_order, visits_of

# (kind, device, fence, ts, dwell_s, probability); few integer times, so many events share an instant
event_st = st.tuples(st.sampled_from([K.EXIT, K.ENTER, K.DWELL]), st.integers(0, 7), st.integers(0, 3),
                     st.integers(0, 12).map(float), st.sampled_from([0.0, 5.0, 20.0, 600.0, math.nan]),
                     st.sampled_from([math.nan, 0.3, 0.9]))


def columns(events: list[tuple[int, int, int, float, float, float]]) -> Events:
    return Events(np.asarray([e[0] for e in events], np.int8), np.asarray([e[1] for e in events], np.int64),
                  np.asarray([e[2] for e in events], np.int64), np.asarray([e[3] for e in events], np.float64),
                  np.asarray([e[4] for e in events], np.float64), np.asarray([e[5] for e in events], np.float64))


def assert_same(got: Visits, want: Visits) -> None:
    for name in ("device", "fence", "ts", "dwell_s", "probability", "closed", "repeat", "starts"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=True), (name, a, b)


@settings(max_examples=400)
@given(events=st.lists(event_st, max_size=40), spread=st.sampled_from([1, 1, 2003]), with_prob=st.booleans())
def test_a_log_in_time_order_gives_the_visits_grouping_gives(events: list[Any], spread: int, with_prob: bool) -> None:
    """The same visits in the same order, every column: ties of time in any order of kinds (an exit and
    an enter of the same device and fence at one instant), enters without exits, events of no visit,
    dwell and probability updates; spread: device codes above K.ONE_PASS_CODES, two devices in one
    bucket, so visits are first written by bucket and then put in device order."""
    events = sorted(events, key=lambda e: e[3])  # time order; ties in the drawn order
    events = [(k, (d // 2) * spread + d % 2, f, t, dw, p if with_prob else math.nan) for k, d, f, t, dw, p in events]
    n_dev = 3 * spread + 2
    fast = visits_in_time_order(columns(events), n_dev)
    assert fast is not None
    assert_same(fast, visits_by_grouping(columns(events), n_dev))


@settings(max_examples=100)
@given(events=st.lists(event_st, min_size=2, max_size=30))
def test_a_log_out_of_time_order_is_grouped(events: list[Any]) -> None:
    ev = columns(events)
    ordered = bool((np.diff(ev.ts) >= 0).all())
    fast = visits_in_time_order(ev, 8)
    assert (fast is not None) == ordered
    assert_same(visits_of(ev, 8), visits_by_grouping(ev, 8))


def test_too_many_open_visits_or_an_unknown_kind_fall_back_to_grouping() -> None:
    def log(n_open: int, last_kind: int = K.EXIT) -> Events:
        # one device enters n_open fences without leaving, then leaves the first (the deepest in its list)
        return columns([(K.ENTER, 0, f, float(f), 0.0, math.nan) for f in range(n_open)]
                       + [(last_kind, 0, 0, float(n_open), 30.0, math.nan)])

    assert visits_in_time_order(log(K.MAX_OPEN + 1), 1) is not None
    assert visits_in_time_order(log(K.MAX_OPEN + 2), 1) is None
    assert visits_in_time_order(log(3, last_kind=7), 1) is None
    for ev in (log(K.MAX_OPEN + 1), log(K.MAX_OPEN + 2), log(3, last_kind=7)):
        assert_same(visits_of(ev, 1), visits_by_grouping(ev, 1))
    assert bool(visits_of(log(K.MAX_OPEN + 2), 1).closed[0])
