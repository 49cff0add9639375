"""The geometry a fix gives the visit probability: how far the fix lies from the boundary in units of its
accuracy (five steps), and a fix at the edge of a place that does not wipe out the outdoor evidence of a
phone waiting just outside it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence import FenceIndex, circle_fence
from proximity.engine import Engine, EngineConfig
from proximity.visit import DEFAULT_MODEL, VisitModel, geometry_row, half_confidence
from tests.proximity.test_visit_probability import LAT0, LON0, M_LAT, M_LON, pings

R = 50.0
CIRCLE = [circle_fence("a", LON0, LAT0, R)]


@settings(max_examples=200, deadline=None)
@given(fixes=st.lists(st.tuples(st.floats(0.0, 2 * math.pi), st.floats(0.0, 130.0), st.floats(3.0, 60.0)),
                      min_size=1, max_size=30))
def test_the_geometry_row_is_the_signed_distance_from_the_boundary_in_units_of_accuracy(
        fixes: list[tuple[float, float, float]]) -> None:
    """A circle of 50 m: a fix at distance ``dist`` from its centre lies ``R - dist`` inside the boundary.
    Its row is 4 when the whole accuracy circle is inside, 3 inside by at least half the accuracy, 2 inside
    by less, 1 outside by at most half, 0 outside by more (within the accuracy); no pair beyond it."""
    depth = np.array([R - d for _a, d, _acc in fixes])
    acc = np.array([f[2] for f in fixes])
    # fixes within 0.5 m of a step are left out: the index's metric frame differs from this one by centimetres
    steps = np.stack([depth, depth - acc, depth - acc / 2, depth + acc / 2, depth + acc])
    keep = np.abs(steps).min(axis=0) > 0.5
    lon = np.array([LON0 + d * math.cos(a) * M_LON for a, d, _acc in fixes])[keep]
    lat = np.array([LAT0 + d * math.sin(a) * M_LAT for a, d, _acc in fixes])[keep]
    depth, acc = depth[keep], acc[keep]
    index = FenceIndex(CIRCLE)
    m = index.match(lon, lat, accuracy_m=acc)
    point, fence, conf = np.asarray(m.point), np.asarray(m.fence), np.asarray(m.confidence)
    row = geometry_row(conf, half_confidence(index, lon, lat, acc, point, fence, conf))
    u = depth / acc
    expected = np.select([u >= 1.0, u >= 0.5, u > 0.0, u >= -0.5, u >= -1.0], [4, 3, 2, 1, 0], -1)
    assert np.array_equal(point, np.flatnonzero(expected >= 0))
    assert np.array_equal(row, expected[point])


def test_without_half_confidence_an_edge_pair_reads_as_near_the_boundary() -> None:
    assert geometry_row(np.array([1, 2, 3])).tolist() == [1, 2, 4]
    model = dataclasses.replace(DEFAULT_MODEL, gps_llr=tuple(tuple(float(10 * r + b) for b in range(4))
                                                              for r in range(5)))
    llr = model.gps_obs_llr(np.array([1, 1, 2, 2, 3]), np.full(5, 10.0), np.full(5, 100.0),
                            half=np.array([0, 1, 2, 3, 3]))
    assert llr.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]  # accuracy / radius 0.1: bucket 0


def _enters(model: VisitModel, rows: list[tuple[float, float, float, float, float]]) -> list[float]:
    eng = Engine(FenceIndex(CIRCLE), config=EngineConfig(max_future_skew_s=None, model=model))
    return [e.ts - 1_700_000_000.0 for e in eng.process_pings(pings(rows)).events if e.kind == "enter"]


def test_deeper_fixes_enter_sooner() -> None:
    """A phone whose accuracy reads 14 m outdoors, then 20 m (indoors) with its fixes 12 m inside the
    boundary (more than half its accuracy) or 4 m inside (less): the deeper ones enter first."""
    outdoors = [(30.0 * k, 400.0, 0.0, 14.0, 0.0) for k in range(6)]
    deep = [(180.0 + 30.0 * k, R - 12.0, 0.0, 20.0, 0.0) for k in range(20)]
    shallow = [(t, R - 4.0, y, acc, v) for t, _x, y, acc, v in deep]
    a, b = _enters(DEFAULT_MODEL, outdoors + deep), _enters(DEFAULT_MODEL, outdoors + shallow)
    assert a and (not b or a[0] < b[0])


def test_edge_fixes_keep_the_outdoor_evidence_of_a_phone_waiting_outside() -> None:
    """A phone standing 4 m outside the boundary with outdoor accuracy (12 m) whose error drifts inward
    every third fix, then shows the pattern of a phone indoors for a while (accuracy 18 m: its fixes at the
    edge read as indoor): starting from the evidence the outdoor fixes gathered, it has not entered by the
    end of it; with every edge fix a new approach (``edge_floor`` 0: the record starts again from the prior)
    the same fixes enter."""
    before = [(30.0 * k, 400.0, 0.0, 12.0, 0.0) for k in range(6)]  # the device's outdoor accuracy
    wait = [(180.0 + 30.0 * k, R - 2.0 if k % 3 == 0 else R + 4.0, 0.0, 12.0, 0.0) for k in range(20)]
    burst = [(780.0 + 30.0 * k, R - 3.0, 0.0, 18.0, 0.0) for k in range(4)]
    rows = before + wait + burst
    assert _enters(DEFAULT_MODEL, rows) == []
    assert _enters(dataclasses.replace(DEFAULT_MODEL, edge_floor=0.0), rows)
