"""The sightings' twin of PingBatch.from_json: bad rows become errors naming their row and field, good ones keep
their input row (a raw entry with two frames gives two sightings of one row), and the tracker carries it."""

from __future__ import annotations

import numpy as np
import pytest

from beacons import (
    AltBeacon,
    BeaconError,
    IBeacon,
    Sightings,
    encode_advertisement,
    parse_scans_body,
    scans_from_json,
)

KEY = "altbeacon:" + "ab" * 20


def test_from_json_keeps_good_rows_and_names_bad_ones() -> None:
    rows = [{"observer": "p1", "key": KEY, "rssi": -60, "ts": 10},
            {"observer": "p1", "key": KEY, "rssi": "loud", "ts": 11},
            "not a row",
            {"observer": "p2", "key": KEY, "rssi": -70, "ts": "1970-01-01T00:00:12Z"}]
    s, errors = Sightings.from_json(rows)
    assert s.row.tolist() == [0, 3] and s.ts.tolist() == [10.0, 12.0]
    assert [(e.row, e.field) for e in errors] == [(1, "rssi"), (2, None)]
    with pytest.raises(BeaconError) as info:
        Sightings.from_rows(rows)
    assert info.value.row == 1
    assert s.take(np.array([1])).row.tolist() == [3]
    assert Sightings.concat([s, s]).row.tolist() == [0, 3, 0, 3]


def _raw_two_frames() -> str:
    """One advertising payload that carries two beacon identities."""
    frames = [IBeacon("2f234454-cf6d-4a0f-adf2-f4911ba9ffa6", 0, 7, -65), AltBeacon(0x0118, bytes.fromhex("cd" * 20), -60)]
    return encode_advertisement(frames).hex()


def test_scans_from_json_rows_are_entries() -> None:
    body = {"gateway_id": "gw", "batch_id": "b1", "sent_at": 100,
            "sightings": [{"ts": 90, "rssi": -60, "key": KEY},
                          {"ts": 91, "rssi": -60, "key": "ibeacon:nonsense"},
                          {"ts": 92, "rssi": -61, "raw": _raw_two_frames()}]}
    scan, errors = scans_from_json(body)
    assert scan.sightings.row.tolist() == scan.entry.tolist() == [0, 2, 2]
    assert [(e.row, e.field) for e in errors] == [(1, "sightings[1].key")]
    with pytest.raises(BeaconError) as info:
        parse_scans_body(body)
    assert info.value.row == 1
    with pytest.raises(BeaconError, match="gateway_id"):  # a bad body is still refused whole
        scans_from_json({**body, "gateway_id": ""})
