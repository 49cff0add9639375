"""What the visit probability reads from a fix beyond its geometry: walking pace inside big places, and the
indoor pattern's outdoor side (a phone reporting the accuracy it has outdoors, e.g. in a car at the kerb)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from geofence import FenceIndex, circle_fence
from proximity.engine import Engine, EngineConfig
from proximity.visit import DEFAULT_MODEL, VisitModel
from tests.proximity.test_visit_probability import LAT0, LON0, pings

BIG = [circle_fence("a", LON0, LAT0, 120.0)]  # equivalent radius 120 m: past walk_free_radius_m


def _engine(model: VisitModel = DEFAULT_MODEL) -> Engine:
    return Engine(FenceIndex(BIG), config=EngineConfig(max_future_skew_s=None, model=model))


def _enters(eng: Engine, rows: list[tuple[float, float, float, float, float]]) -> list[float]:
    return [e.ts - 1_700_000_000.0 for e in eng.process_pings(pings(rows)).events if e.kind == "enter"]


def test_walking_pace_takes_back_the_walking_ratio_only_for_big_places() -> None:
    m = DEFAULT_MODEL
    conf, acc = np.full(5, 2), np.full(5, 15.0)
    radius = np.array([20.0, 20.0, 60.0, 60.0, 60.0])
    speed = np.array([1.5, 0.2, 1.5, math.nan, 3.0])  # walking, still, walking, unknown, driving
    plain = m.gps_obs_llr(conf, acc, radius)
    out = m.gps_obs_llr(conf, acc, radius, speed)
    assert out[2] == pytest.approx(plain[2] - m.speed_llr[2]) and m.speed_llr[2] < 0
    assert np.array_equal(np.delete(out, 2), np.delete(plain, 2))  # small place, still, unknown, driving
    off = dataclasses.replace(m, walk_free_radius_m=0.0)
    assert np.array_equal(off.gps_obs_llr(conf, acc, radius, speed), plain)
    with pytest.raises(ValueError, match="walk_free_radius_m"):
        VisitModel(walk_free_radius_m=-1.0)


def test_a_shopper_walking_the_aisles_of_a_big_place_enters() -> None:
    """Fixes at walking pace deep inside a 120 m place: with the walking ratio taken back the visit enters;
    charged the walking ratio (the model without it) it never does."""
    walk = [(30.0 * k, 10.0 * (k % 5), 0.0, 15.0 * (1.5 if k else 1.0), 1.5) for k in range(12)]
    assert _enters(_engine(), walk)
    assert _enters(_engine(dataclasses.replace(DEFAULT_MODEL, walk_free_radius_m=0.0)), walk) == []


def test_a_phone_reporting_its_outdoor_accuracy_at_the_edge_of_a_place_never_enters() -> None:
    """A car parked at the edge of a big place: every fix 115 m from its centre with a 10 m circle (point
    inside, circle crossing the boundary), at the accuracy the phone reported outdoors before. Below the
    indoor pattern's centre that is evidence of outdoors: ten minutes of it never enter. The same fixes from
    a phone whose accuracy degrades by half (indoors) enter within minutes; and without the centre (the
    model as fitted fix by fix) the outdoor phone entered too."""
    before = [(30.0 * k, 400.0, 0.0, 10.0, 0.0) for k in range(10)]  # outdoors, far from the place
    kerb = [(300.0 + 30.0 * k, 115.0, 0.0, 10.0, 0.0) for k in range(20)]
    indoor = [(t, x, y, 15.0, v) for t, x, y, _acc, v in kerb]
    assert _enters(_engine(), before + kerb) == []
    assert _enters(_engine(), before + indoor)[0] <= 300.0 + 180.0
    uncentred = dataclasses.replace(DEFAULT_MODEL, indoor_center=0.0)
    assert _enters(_engine(uncentred), before + kerb)
