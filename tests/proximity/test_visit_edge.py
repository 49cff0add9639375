"""A GPS fix at the edge of a place (point inside, accuracy circle crossing the boundary) does not wipe out
the outdoor evidence of a phone waiting just outside it (a car at the kerb whose error drifts inside)."""

from __future__ import annotations

import dataclasses

import pytest

from geofence import FenceIndex, circle_fence
from proximity.engine import Engine, EngineConfig
from proximity.visit import DEFAULT_MODEL, VisitModel
from tests.proximity.test_visit_probability import LAT0, LON0, pings

R = 50.0
CIRCLE = [circle_fence("a", LON0, LAT0, R)]


def _enters(model: VisitModel, rows: list[tuple[float, float, float, float, float]]) -> list[float]:
    eng = Engine(FenceIndex(CIRCLE), config=EngineConfig(max_future_skew_s=None, model=model))
    return [e.ts - 1_700_000_000.0 for e in eng.process_pings(pings(rows)).events if e.kind == "enter"]


def test_edge_fixes_keep_the_outdoor_evidence_of_a_phone_waiting_outside() -> None:
    """A phone standing 4 m outside the boundary with outdoor accuracy (12 m) whose error drifts inward
    every third fix, then shows the pattern of a phone indoors for a while (accuracy 18 m: its fixes at the
    edge read as indoor): with ``edge_floor`` -2, starting from the evidence the outdoor fixes gathered, it
    has not entered by the end of it; with every edge fix a new approach (``edge_floor`` 0, the default: the
    record starts again from the prior) the same fixes enter."""
    before = [(30.0 * k, 400.0, 0.0, 12.0, 0.0) for k in range(6)]  # the device's outdoor accuracy
    wait = [(180.0 + 30.0 * k, R - 2.0 if k % 3 == 0 else R + 4.0, 0.0, 12.0, 0.0) for k in range(20)]
    burst = [(780.0 + 30.0 * k, R - 3.0, 0.0, 18.0, 0.0) for k in range(4)]
    rows = before + wait + burst
    assert DEFAULT_MODEL.edge_floor == 0.0  # off by default (see VisitModel.edge_floor)
    assert _enters(dataclasses.replace(DEFAULT_MODEL, edge_floor=-2.0), rows) == []
    assert _enters(DEFAULT_MODEL, rows)


def test_edge_floor_is_checked() -> None:
    with pytest.raises(ValueError, match="edge_floor"):
        VisitModel(edge_floor=0.5)
    with pytest.raises(ValueError, match="edge_floor"):
        VisitModel(edge_floor=float("nan"))

