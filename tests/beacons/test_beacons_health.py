"""Fleet health from the example capture: last seen, TLM battery and temperature, silent and low beacons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beacons import (
    BeaconError,
    CaptureRecord,
    EddystoneTLM,
    EddystoneUID,
    fleet_health,
    load_registry,
    read_capture,
)
from beacons.frames import bleak_fields

EXAMPLES = Path(__file__).resolve().parents[2] / "proximity" / "examples"
FLEET = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"


def test_example_capture_health() -> None:
    reg = load_registry(EXAMPLES / "beacons.yaml")
    report = fleet_health(reg, read_capture(EXAMPLES / "capture.jsonl"), silent_after_s=600, low_battery_mv=2500)
    by_key = {b.key: b for b in report.beacons}
    entrance3 = by_key["eddystone:edd1ebeac04e5defa017/000003000001"]
    assert (entrance3.battery_mv, entrance3.temperature_c, entrance3.problems) == (2950, 21.5, [])
    assert by_key["eddystone:edd1ebeac04e5defa017/000003000002"].problems == ["low_battery"]
    assert by_key[f"ibeacon:{FLEET}/1/2"].problems == ["silent"]          # stopped 15 min before the end
    assert by_key[f"ibeacon:{FLEET}/2/1"].last_seen is None               # never heard
    assert by_key[f"ibeacon:{FLEET}/1/1"].heard_by == {"gw-store-01"}
    assert [b.key for b in report.unregistered] == ["ibeacon:11111111-2222-3333-4444-555555555555/9/9"]
    # a longer silence threshold clears the store-01 checkout beacon
    relaxed = fleet_health(reg, read_capture(EXAMPLES / "capture.jsonl"), silent_after_s=3600)
    assert {b.key: b.problems for b in relaxed.beacons}[f"ibeacon:{FLEET}/1/2"] == []


def test_tlm_heard_before_its_identity_is_attached() -> None:
    reg = load_registry("beacons:\n  - namespace: '" + "11" * 10 + "'\n    instance: '" + "22" * 6
                        + "'\n    fence_id: s\n    zone: z\n")
    uid = EddystoneUID(b"\x11" * 10, b"\x22" * 6, -20)
    tlm = EddystoneTLM(2400, None, 5, 10.0)
    recs = [CaptureRecord(1.0, "AA", -60, *bleak_fields([tlm])), CaptureRecord(2.0, "AA", -61, *bleak_fields([uid]))]
    [b] = fleet_health(reg, recs, low_battery_mv=2500).beacons
    assert (b.battery_mv, b.temperature_c, b.problems) == (2400, None, ["low_battery"])


def test_capture_round_trip_and_errors(tmp_path: Path) -> None:
    rec = CaptureRecord(5.0, "AA:BB", -70.0, *bleak_fields([EddystoneUID(b"\x01" * 10, b"\x02" * 6, -20)]),
                        gateway_id="gw")
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps(rec.to_json()) + "\n\n# comment\n" + '{"ts": 1, "rssi": -50, "raw": "zz"}\n',
                 encoding="utf-8")
    it = read_capture(p)
    assert next(it) == rec
    with pytest.raises(BeaconError) as info:
        next(it)
    assert (info.value.line, info.value.field) == (4, "raw")
