"""The project's one error contract and one timestamp rule (proxbase): every package's located error is the
same class with the same rendering, and pings and sightings parse times by the same rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacons import BeaconError, Sightings, to_epoch
from campaigns import CampaignError
from geofence import FenceError
from proxbase import StoreUnavailable, ValidationError, as_json, describe, parse_ts, unavailable_on
from proximity import PingBatch
from proximity import ValidationError as ProximityValidationError
from sim import SimError

LOCATED = [ValidationError, FenceError, BeaconError, CampaignError, SimError]


@pytest.mark.parametrize("cls", LOCATED)
def test_every_located_error_renders_the_same_way(cls: type[ValidationError]) -> None:
    assert issubclass(cls, ProximityValidationError) and issubclass(cls, ValueError)
    e = cls("lat must be within [-90, 90]", source="pings.csv", line=3, col=7, field="lat", row=1)
    assert str(e) == describe(e) == "pings.csv:3:7: lat must be within [-90, 90]"
    assert as_json(e) == {"error": "lat must be within [-90, 90]", "field": "lat", "row": 1, "line": 3, "col": 7}
    no_line = cls("too loud", source="<request body>", field="sightings[3].rssi", row=3)
    assert str(no_line) == "<request body>: too loud (row 3, field 'sightings[3].rssi')"
    filled = cls("bad").located(source="f.yaml", row=2)
    assert (type(filled), filled.source, filled.row, filled.line) == (cls, "f.yaml", 2, None)
    assert cls("bad", row=5).located(row=9).row == 5  # known parts are kept


def test_fence_error_keeps_its_feature() -> None:
    e = FenceError("no geometry", feature=4, fence_id="s-4")
    assert (e.row, e.feature, e.fence_id) == (4, 4, "s-4")


def test_unavailable_on_translates_only_the_given_errors() -> None:
    calls: list[str] = []

    @unavailable_on((ConnectionError,), "the test store")
    def op(kind: str) -> str:
        calls.append(kind)
        if kind == "away":
            raise ConnectionError("refused")
        if kind == "bug":
            raise KeyError("k")
        return "ok"

    assert op("fine") == "ok"
    with pytest.raises(StoreUnavailable, match="the test store unavailable: refused") as info:
        op("away")
    assert info.value.retry_after_s > 0
    with pytest.raises(KeyError):
        op("bug")


stamps = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**14), 10**14)
          | st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00+02:00", "2026-01-01T00:00:00",
                             "1700000000", "1700000000000", "yesterday", "", True, None]))


@given(stamps)
def test_pings_and_sightings_parse_times_by_the_same_rule(value: object) -> None:
    try:
        expected: float | None = parse_ts(value)
    except ValueError:
        expected = None
    ping_batch, ping_errors = PingBatch.from_json([{"device_id": "d", "lon": 0, "lat": 0, "accuracy_m": 5,
                                                    "ts": value}])
    sightings, sighting_errors = Sightings.from_json([{"observer": "d", "key": "altbeacon:" + "ab" * 20,
                                                       "rssi": -60, "ts": value}])
    if expected is None:
        assert ping_errors and sighting_errors and not len(ping_batch) and not len(sightings)
        with pytest.raises(BeaconError):
            to_epoch(value)
    else:
        assert not ping_errors and not sighting_errors
        assert ping_batch.ts[0] == sightings.ts[0] == expected and math.isfinite(expected)
