"""The POST /v1/scans body: build -> encode -> decode round trip, both entry shapes, errors name rows."""

from __future__ import annotations

import contextlib
import gzip
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import (
    SCANS_SCHEMA,
    BeaconError,
    EddystoneUID,
    IBeacon,
    build_scans_body,
    decode_scans_body,
    encode_advertisement,
    parse_scans_body,
)
from beacons.scans import encode_scans_body

FLEET = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"


def test_raw_and_key_entries() -> None:
    raw = encode_advertisement([IBeacon(FLEET, 1, 2, -61)]).hex(":")
    body = build_scans_body("gw-1", "b-1", 100.0, [
        {"ts": 99.0, "rssi": -70, "raw": raw},
        {"ts": 99.5, "rssi": -71, "key": f"ibeacon:{FLEET.upper()}/1/3", "tx_power": None},
        {"ts": "1970-01-01T00:01:40Z", "rssi": -72, "namespace": "00" * 10, "instance": "01" * 6, "tx_power": -20},
        {"ts": 99.9, "rssi": -73, "raw": "020106"},  # nothing with an identity: skipped, counted
        {"ts": 99.9, "rssi": -74, "raw": encode_advertisement([EddystoneUID(b"\x01" * 10, b"\x02" * 6, -18)]).hex()},
    ])
    batch = decode_scans_body(encode_scans_body(body), content_encoding="gzip")
    s = batch.sightings
    assert (batch.gateway_id, batch.batch_id, batch.sent_at, batch.entries, batch.skipped) == ("gw-1", "b-1", 100.0, 5, 1)
    assert s.key.tolist() == [f"ibeacon:{FLEET}/1/2", f"ibeacon:{FLEET}/1/3",
                              "eddystone:00000000000000000000/010101010101",
                              "eddystone:01010101010101010101/020202020202"]
    assert set(s.observer) == {"gw-1"}
    np.testing.assert_array_equal(s.rssi, [-70, -71, -72, -74])
    np.testing.assert_array_equal(s.tx_power, [-61, np.nan, -20, -18 - 41])
    np.testing.assert_array_equal(s.ts, [99.0, 99.5, 100.0, 99.9])
    assert batch.entry.tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize(("body", "field", "row"), [
    ({"gateway_id": "", "batch_id": "b", "sent_at": 1, "sightings": []}, "gateway_id", None),
    ({"gateway_id": "g", "batch_id": "b", "sent_at": 1, "sightings": {}}, "sightings", None),
    ({"gateway_id": "g", "batch_id": "b", "sightings": []}, "sent_at", None),
    ({"gateway_id": "g", "batch_id": "b", "sent_at": 1, "sightings": [], "x": 1}, "x", None),
    ({"gateway_id": "g", "batch_id": "b", "sent_at": 1,
      "sightings": [{"ts": 1, "rssi": -50, "key": f"ibeacon:{FLEET}/1/1"}, {"ts": 1, "rssi": 500, "key": "k"}]},
     "sightings[1].rssi", 1),
    ({"gateway_id": "g", "batch_id": "b", "sent_at": 1, "sightings": [{"ts": 1, "rssi": -50, "key": "nope"}]},
     "sightings[0].key", 0),
    ({"gateway_id": "g", "batch_id": "b", "sent_at": 1, "sightings": [{"ts": 1, "rssi": -50, "raw": "1aff"}]},
     "sightings[0].raw", 0),
    ({"gateway_id": "g", "batch_id": "b", "sent_at": 1, "sightings": [{"rssi": -50, "raw": "0201"}]},
     "sightings[0].ts", 0),
])
def test_bad_bodies_name_field_and_row(body, field, row) -> None:
    with pytest.raises(BeaconError) as info:
        parse_scans_body(body)
    assert (info.value.field, info.value.row) == (field, row)


def test_bad_json_and_bad_gzip() -> None:
    with pytest.raises(BeaconError, match="invalid JSON") as info:
        decode_scans_body(b'{"gateway_id": ')
    assert info.value.line == 1
    with pytest.raises(BeaconError, match="gzip"):
        decode_scans_body(b"\x1f\x8bnot gzip", content_encoding="gzip")
    assert decode_scans_body(gzip.compress(b'{"gateway_id":"g","batch_id":"b","sent_at":1,"sightings":[]}')).entries == 0


def test_schema_is_json_and_names_both_shapes() -> None:
    json.dumps(SCANS_SCHEMA)
    shapes = SCANS_SCHEMA["properties"]["sightings"]["items"]["oneOf"]
    assert [s["required"] for s in shapes] == [["ts", "rssi", "raw"], ["ts", "rssi"]]


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12))
@settings(max_examples=200, deadline=None)
def test_arbitrary_json_raises_only_beacon_error(obj) -> None:
    for candidate in (obj, {"gateway_id": "g", "batch_id": "b", "sent_at": 1, "sightings": [obj]}):
        with contextlib.suppress(BeaconError):
            parse_scans_body(candidate)
