"""Identity conversion happens in one place; every spelling of a key gives the same canonical key."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacons import (
    BeaconError,
    Sightings,
    canonical_key,
    key_from_fields,
    normalize_uuid,
    parse_hex,
    to_epoch,
)
from beacons.frames import AltBeacon, EddystoneTLM, EddystoneUID, IBeacon


@given(st.uuids(), st.integers(0, 65535), st.integers(0, 65535))
def test_ibeacon_spellings_agree(u: uuid.UUID, major: int, minor: int) -> None:
    canonical = f"ibeacon:{u}/{major}/{minor}"
    assert canonical_key(canonical) == canonical
    assert canonical_key(f"IBEACON:{u.hex.upper()}/{major:05d}/{minor}") == canonical
    assert key_from_fields({"uuid": u.bytes, "major": major, "minor": str(minor)}) == canonical
    assert key_from_fields({"type": "ibeacon", "uuid": u.int, "major": major, "minor": minor}) == canonical
    assert IBeacon(normalize_uuid(u), major, minor, -59).key == canonical


@given(st.binary(min_size=10, max_size=10), st.binary(min_size=6, max_size=6), st.binary(min_size=20, max_size=20))
def test_eddystone_and_altbeacon_spellings_agree(ns: bytes, inst: bytes, bid: bytes) -> None:
    e = f"eddystone:{ns.hex()}/{inst.hex()}"
    assert canonical_key(e.upper().replace("EDDYSTONE", "eddystone")) == e
    assert key_from_fields({"namespace": ns.hex(":"), "instance": inst.hex(" ")}) == e
    assert key_from_fields({"type": "eddystone_uid", "namespace": ns, "instance": inst}) == e
    assert EddystoneUID(ns, inst, 0).key == e
    a = f"altbeacon:{bid.hex()}"
    assert canonical_key("altbeacon:0x" + bid.hex().upper()) == a
    assert key_from_fields({"id": bid}) == AltBeacon(0x118, bid, -59).key == a


@pytest.mark.parametrize("bad", ["", "ibeacon:", "ibeacon:abc/1/2", f"ibeacon:{uuid.UUID(int=0)}/65536/0",
                                 f"ibeacon:{uuid.UUID(int=0)}/1", "eddystone:00/11", "altbeacon:00",
                                 "beacon:x", "eddystone:" + "0" * 20 + "/" + "g" * 12])
def test_bad_keys_raise_beacon_error(bad: str) -> None:
    with pytest.raises(BeaconError) as info:
        canonical_key(bad)
    assert info.value.field == "key"


def test_hex_and_time_conversions() -> None:
    assert parse_hex("0x02:01 06") == b"\x02\x01\x06"
    with pytest.raises(BeaconError, match="odd"):
        parse_hex("020")
    assert to_epoch("1970-01-01T00:01:00Z") == to_epoch("1970-01-01T00:01:00+00:00") == to_epoch(60) == 60.0
    # the project's one timestamp rule (the pings' rule): no offset, or milliseconds, is refused
    with pytest.raises(BeaconError, match="offset"):
        to_epoch("1970-01-01T00:01:00")
    with pytest.raises(BeaconError, match="milliseconds"):
        to_epoch(1_700_000_000_000)
    with pytest.raises(BeaconError):
        to_epoch(float("nan"))
    with pytest.raises(BeaconError):
        to_epoch(True)


def test_sightings_from_frames_use_power_at_one_metre() -> None:
    s = Sightings.from_frames([
        ("gw", 1.0, -60.0, IBeacon(str(uuid.UUID(int=1)), 1, 2, -59)),
        ("gw", 2.0, -61.0, EddystoneTLM(3000, None, 1, 1.0)),          # no identity: skipped
        ("gw", 3.0, -62.0, EddystoneUID(b"\x01" * 10, b"\x02" * 6, -20)),
    ])
    assert s.key.tolist() == [f"ibeacon:{uuid.UUID(int=1)}/1/2", "eddystone:01010101010101010101/020202020202"]
    assert s.tx_power.tolist() == [-59.0, -61.0]
    assert s.ts.tolist() == [1.0, 3.0]
