"""A GPS fix at the edge of a place (point inside, accuracy circle crossing the boundary) does not wipe out
the outdoor evidence of a phone waiting just outside it (a car at the kerb whose error drifts inside); nor
does one `near` beacon sighting of a lone store put a new record a noisy fix away from an enter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geofence import FenceIndex, circle_fence
from proximity.engine import Engine, EngineConfig
from proximity.tracked import ZoneRows
from proximity.visit import DEFAULT_MODEL, VisitModel
from tests.proximity.test_visit_probability import LAT0, LON0, T0, pings

R = 50.0
CIRCLE = [circle_fence("a", LON0, LAT0, R)]


def _enters(model: VisitModel, rows: list[tuple[float, float, float, float, float]]) -> list[float]:
    eng = Engine(FenceIndex(CIRCLE), config=EngineConfig(max_future_skew_s=None, model=model))
    return [e.ts - 1_700_000_000.0 for e in eng.process_pings(pings(rows)).events if e.kind == "enter"]


def test_edge_fixes_keep_the_outdoor_evidence_of_a_phone_waiting_outside() -> None:
    """A phone standing 4 m outside the boundary with outdoor accuracy (12 m) whose error drifts inward
    every third fix, then shows the pattern of a phone indoors for a while (accuracy 18 m: its fixes at the
    edge read as indoor): with ``edge_floor`` -2, starting from the evidence the outdoor fixes gathered, it
    has not entered by the end of it; with every edge fix a new approach (``edge_floor`` 0: the record starts
    again from the prior) the same fixes enter."""
    before = [(30.0 * k, 400.0, 0.0, 12.0, 0.0) for k in range(6)]  # the device's outdoor accuracy
    wait = [(180.0 + 30.0 * k, R - 2.0 if k % 3 == 0 else R + 4.0, 0.0, 12.0, 0.0) for k in range(20)]
    burst = [(780.0 + 30.0 * k, R - 3.0, 0.0, 18.0, 0.0) for k in range(4)]
    rows = before + wait + burst
    assert DEFAULT_MODEL.edge_floor < 0.0  # on by default (see VisitModel.edge_floor)
    assert _enters(dataclasses.replace(DEFAULT_MODEL, edge_floor=-2.0), rows) == []
    assert _enters(dataclasses.replace(DEFAULT_MODEL, edge_floor=0.0), rows)


def test_edge_floor_is_checked() -> None:
    for name in ("edge_floor", "beacon_floor"):
        with pytest.raises(ValueError, match=name):
            VisitModel(**{name: 0.5})
        with pytest.raises(ValueError, match=name):
            VisitModel(**{name: float("nan")})


# a lone store, and a mall around a shop (the shop's sightings are heard near only from inside the building)
STORES = [circle_fence("store", LON0, LAT0, 10.0), circle_fence("mall", LON0 + 0.01, LAT0, 80.0),
          circle_fence("shop", LON0 + 0.01, LAT0, 10.0)]


def _sighting_enters(model: VisitModel, fence: str, prox: list[int]) -> list[tuple[str, float]]:
    """Zone sightings of ``fence``'s entrance beacon, 10 s apart, with these proximity classes (2 near, 3 far)."""
    eng = Engine(FenceIndex(STORES), config=EngineConfig(max_future_skew_s=None, model=model))
    n = len(prox)
    rows = ZoneRows(np.array(["d"] * n, object), np.array([fence] * n, object), np.array(["entrance"] * n, object),
                    np.asarray(prox, np.int8), np.full(n, 5.0), T0 + 10.0 * np.arange(n), np.arange(n))
    return [(e.place, e.ts - T0) for e in eng.process_zone_sightings(rows).events
            if e.kind == "enter" and e.zone is None]


def test_one_lucky_near_reading_does_not_enter_a_lone_store_two_do() -> None:
    """A car at the kerb hears a store's entrance beacon far for minutes and, once, near (through the window):
    with ``beacon_floor`` below 0 that one reading starts a record below the prior, and a later far reading
    (a keep-level sighting, which may confirm a visit) does not enter it; two near readings in a row do. With
    the floor at 0 (every sighting a new approach from the prior) the single reading enters; a mall's shop,
    heard near only from inside, enters (and its mall with it) on one reading with the floor too."""
    model = dataclasses.replace(DEFAULT_MODEL, beacon_floor=-3.0)
    assert DEFAULT_MODEL.beacon_floor < 0.0
    assert _sighting_enters(model, "store", [3, 3, 2, 3, 3]) == []
    assert _sighting_enters(model, "store", [3, 3, 2, 2, 3]) == [("store", 30.0)]
    assert _sighting_enters(dataclasses.replace(model, beacon_floor=0.0), "store", [3, 3, 2, 3, 3]) == [
        ("store", 20.0)]
    assert sorted(_sighting_enters(model, "shop", [3, 3, 2, 3, 3])) == [("mall", 20.0), ("shop", 20.0)]

