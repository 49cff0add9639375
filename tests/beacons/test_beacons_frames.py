"""Frames: known payloads, every frame type round-trips, and no input raises anything but FrameError."""

from __future__ import annotations

import contextlib

import pytest
from bleak.backends.scanner import AdvertisementData
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import (
    AltBeacon,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    FrameError,
    IBeacon,
    bleak_fields,
    encode_advertisement,
    frames_from_bleak,
    parse_advertisement,
)
from beacons.frames import EDDYSTONE_SERVICE_UUID, URL_EXPANSIONS, encode_url

# A Kontakt.io-style iBeacon as seen in the air: flags + Apple manufacturer data.
IBEACON_HEX = "0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00640001c5"


def test_ibeacon_known_payload() -> None:
    [f] = parse_advertisement(IBEACON_HEX)
    assert f == IBeacon("f7826da6-4fa2-4e98-8024-bc5b71e0893e", 100, 1, -59)
    assert f.key == "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/100/1"
    assert f.to_dict() == {"type": "ibeacon", "uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e", "major": 100,
                           "minor": 1, "tx_power": -59}


def test_hex_with_spaces_colons_and_prefix() -> None:
    spaced = " ".join(IBEACON_HEX[i:i + 2] for i in range(0, len(IBEACON_HEX), 2))
    coloned = ":".join(IBEACON_HEX[i:i + 2] for i in range(0, len(IBEACON_HEX), 2)).upper()
    assert parse_advertisement(spaced) == parse_advertisement(coloned) == parse_advertisement("0x" + IBEACON_HEX)


def test_altbeacon_known_payload_and_split_ids() -> None:
    raw = bytes.fromhex("1bff1801beac" + "2f234454cf6d4a0fadf2f4911ba9ffa6" + "0001" + "0002" + "c5" + "00")
    [f] = parse_advertisement(raw)
    assert isinstance(f, AltBeacon)
    assert f.to_dict() == {
        "type": "altbeacon", "manufacturer": 0x0118, "id": "2f234454cf6d4a0fadf2f4911ba9ffa600010002",
        "id1": "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6", "id2": 1, "id3": 2, "tx_power": -59, "data": 0}
    assert f.key == "altbeacon:2f234454cf6d4a0fadf2f4911ba9ffa600010002"


def test_eddystone_uid_with_and_without_reserved_bytes() -> None:
    body = "00e2" + "00010203040506070809" + "0a0b0c0d0e0f"
    with_rfu = bytes.fromhex("0303aafe" + "1716aafe" + body + "0000")
    without = bytes.fromhex("0303aafe" + "1516aafe" + body)
    [a], [b] = parse_advertisement(with_rfu), parse_advertisement(without)
    assert a.key == b.key == "eddystone:00010203040506070809/0a0b0c0d0e0f"
    assert a.to_dict() == b.to_dict() == {"type": "eddystone_uid", "namespace": "00010203040506070809",
                                          "instance": "0a0b0c0d0e0f", "tx_power": -30}
    assert a.power_1m == -30 - 41


@pytest.mark.parametrize(("scheme", "prefix"), [(0, "http://www."), (1, "https://www."), (2, "http://"),
                                                (3, "https://")])
def test_eddystone_url_every_scheme(scheme: int, prefix: str) -> None:
    raw = bytes([0x03, 0x03, 0xAA, 0xFE, 0x0D, 0x16, 0xAA, 0xFE, 0x10, 0xEB, scheme]) + b"goo.gl" + bytes([0x07])
    # 0x07 expands to ".com"
    [f] = parse_advertisement(raw)
    assert f.to_dict() == {"type": "eddystone_url", "url": prefix + "goo.gl.com", "tx_power": -21}


@pytest.mark.parametrize("code", range(len(URL_EXPANSIONS)))
def test_eddystone_url_every_expansion(code: int) -> None:
    payload = bytes([0x10, 0x00, 0x03]) + b"a" + bytes([code])
    raw = bytes([len(payload) + 3, 0x16, 0xAA, 0xFE]) + payload
    [f] = parse_advertisement(raw)
    assert f.url == "https://a" + URL_EXPANSIONS[code]


@pytest.mark.parametrize("code", [0x0E, 0x10, 0x20, 0x7F, 0x80, 0xFF])
def test_eddystone_url_reserved_codes_rejected(code: int) -> None:
    payload = bytes([0x10, 0x00, 0x03, ord("a"), code])
    raw = bytes([len(payload) + 3, 0x16, 0xAA, 0xFE]) + payload
    assert parse_advertisement(raw) == []
    with pytest.raises(FrameError, match="reserved"):
        parse_advertisement(raw, strict=True)


def test_eddystone_url_reserved_scheme_rejected() -> None:
    raw = bytes([0x07, 0x16, 0xAA, 0xFE, 0x10, 0x00, 0x04, ord("a")])
    assert parse_advertisement(raw) == []
    with pytest.raises(FrameError, match="scheme"):
        parse_advertisement(raw, strict=True)


def test_eddystone_tlm_values_and_unsupported_markers() -> None:
    # battery 3000 mV, temperature 23.5 C (0x1780), 1000 adverts, 12345.6 s uptime
    raw = bytes.fromhex("0303aafe" + "1116aafe" + "2000" + "0bb8" + "1780" + "000003e8" + "0001e240")
    [f] = parse_advertisement(raw)
    assert f.to_dict() == {"type": "eddystone_tlm", "version": 0, "battery_mv": 3000, "temperature_c": 23.5,
                           "adv_count": 1000, "uptime_s": 12345.6}
    unsupported = bytes.fromhex("1116aafe" + "2000" + "0000" + "8000" + "00000001" + "0000000a")
    [g] = parse_advertisement(unsupported)
    assert g.battery_mv is None and g.temperature_c is None and g.uptime_s == 1.0
    negative = bytes.fromhex("1116aafe" + "2000" + "0bb8" + "ff80" + "00000001" + "0000000a")
    assert parse_advertisement(negative)[0].temperature_c == -0.5


def test_eddystone_encrypted_tlm_and_eid() -> None:
    etlm = bytes(range(12))
    raw = bytes.fromhex("1516aafe" + "2001") + etlm + bytes.fromhex("abcd" + "1234")
    [f] = parse_advertisement(raw)
    assert f.to_dict() == {"type": "eddystone_tlm", "version": 1, "etlm": etlm.hex(), "salt": "abcd",
                           "mic": "1234"}
    eid = bytes.fromhex("0d16aafe" + "30f0" + "0102030405060708")
    [g] = parse_advertisement(eid)
    assert g.to_dict() == {"type": "eddystone_eid", "eid": "0102030405060708", "tx_power": -16}
    assert f.key is None and g.key is None


def test_no_frame_and_padding() -> None:
    assert parse_advertisement("020106") == []
    assert parse_advertisement("") == []
    assert parse_advertisement(IBEACON_HEX + "000000") == parse_advertisement(IBEACON_HEX)
    assert parse_advertisement("05ff4c001007") == []  # an Apple "nearby" frame, not iBeacon


@pytest.mark.parametrize("bad", ["zz", "0201060", "1aff4c0002", "02"])
def test_bad_input_raises_frame_error(bad: str) -> None:
    with pytest.raises(FrameError):
        parse_advertisement(bad)


def test_frames_from_bleak_advertisement_data() -> None:
    frames = [IBeacon("f7826da6-4fa2-4e98-8024-bc5b71e0893e", 7, 42, -60),
              EddystoneUID(bytes(range(10)), bytes(range(6)), -20)]
    manufacturer, _ = bleak_fields(frames[:1])
    _, service = bleak_fields(frames[1:])
    adv = AdvertisementData(local_name=None, manufacturer_data=manufacturer, service_data=service,
                            service_uuids=[EDDYSTONE_SERVICE_UUID], tx_power=None, rssi=-70, platform_data=())
    assert frames_from_bleak(adv) == frames
    assert frames_from_bleak(adv) == parse_advertisement(encode_advertisement(frames))


# --------------------------------------------------------------------- round trips (hypothesis)

powers = st.integers(-128, 127)
url_chars = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)

frame_strategy = st.one_of(
    st.builds(IBeacon, st.uuids().map(str), st.integers(0, 65535), st.integers(0, 65535), powers),
    st.builds(AltBeacon, st.integers(0, 65535), st.binary(min_size=20, max_size=20), powers, st.integers(0, 255)),
    st.builds(EddystoneUID, st.binary(min_size=10, max_size=10), st.binary(min_size=6, max_size=6), powers,
              st.booleans()),
    st.builds(EddystoneURL, st.tuples(st.sampled_from(["http://www.", "https://www.", "http://", "https://"]),
                                      url_chars).map("".join), powers),
    st.builds(EddystoneTLM,
              st.one_of(st.none(), st.integers(1, 65535)),
              st.one_of(st.none(), st.integers(-0x7FFF, 0x7FFF).map(lambda t: t / 256.0)),
              st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1).map(lambda s: s / 10.0)),
    st.builds(EddystoneETLM, st.binary(min_size=12, max_size=12), st.binary(min_size=2, max_size=2),
              st.binary(min_size=2, max_size=2)),
    st.builds(EddystoneEID, st.binary(min_size=8, max_size=8), powers),
)


@given(st.lists(frame_strategy, min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_encode_parse_round_trip(frames: list) -> None:
    assert parse_advertisement(encode_advertisement(frames), strict=True) == frames
    assert parse_advertisement(encode_advertisement(frames, flags=False).hex(" ")) == frames
    for f in frames:
        again = parse_advertisement(encode_advertisement([f]))[0]
        assert again.to_dict() == f.to_dict()
        assert hash(again) == hash(f)


@given(url_chars)
def test_url_compression_round_trip(rest: str) -> None:
    url = "https://" + rest
    payload = bytes([0x10, 0x00]) + encode_url(url)
    raw = bytes([len(payload) + 3, 0x16, 0xAA, 0xFE]) + payload
    assert parse_advertisement(raw)[0].url == url


@given(st.binary(max_size=80), st.booleans())
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_raise_only_frame_error(data: bytes, strict: bool) -> None:
    try:
        frames = parse_advertisement(data, strict=strict)
    except FrameError:
        return
    assert isinstance(frames, list)


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_arbitrary_text_raises_only_frame_error(text: str) -> None:
    with contextlib.suppress(FrameError):
        parse_advertisement(text)


@given(st.dictionaries(st.integers(0, 65535), st.binary(max_size=30), max_size=3),
       st.dictionaries(st.sampled_from([EDDYSTONE_SERVICE_UUID, "0000180f-0000-1000-8000-00805f9b34fb", "x"]),
                       st.binary(max_size=30), max_size=2))
def test_arbitrary_bleak_data_never_crashes(manufacturer: dict, service: dict) -> None:
    adv = AdvertisementData(None, manufacturer, service, [], None, -50, ())
    with contextlib.suppress(FrameError):
        frames_from_bleak(adv)


# Near-misses: well-framed AD structures whose bodies start like a beacon frame and go on at random, so
# every length and field check of the parser is reached (plain random bytes rarely get past the framing).
_HEADS = [b"\xff\x4c\x00\x02\x15", b"\xff\x18\x01\xbe\xac", b"\x16\xaa\xfe\x00", b"\x16\xaa\xfe\x10",
          b"\x16\xaa\xfe\x20\x00", b"\x16\xaa\xfe\x20\x01", b"\x16\xaa\xfe\x20", b"\x16\xaa\xfe\x30", b"\x16\xaa\xfe"]
near_miss = st.tuples(st.sampled_from(_HEADS), st.binary(max_size=24)).map(
    lambda p: bytes([len(p[0]) + len(p[1])]) + p[0] + p[1])


@given(st.lists(near_miss, max_size=3), st.binary(max_size=4), st.booleans())
@settings(max_examples=500, deadline=None)
def test_near_miss_frames_raise_only_frame_error(structures: list[bytes], tail: bytes, strict: bool) -> None:
    data = b"".join(structures) + tail
    try:
        frames = parse_advertisement(data, strict=strict)
    except FrameError:
        return
    # what parses is what re-encodes: each frame survives a round trip of its own
    for f in frames:
        assert parse_advertisement(encode_advertisement([f]))[0].to_dict() == f.to_dict()
