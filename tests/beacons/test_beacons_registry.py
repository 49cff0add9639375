"""Registry: the example loads, keys given as parts convert once, errors point at file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacons import BeaconError, load_registry
from proximity.errors import describe

EXAMPLE = Path(__file__).resolve().parents[2] / "proximity" / "examples" / "beacons.yaml"
FLEET = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"


def test_example_registry_loads() -> None:
    reg = load_registry(EXAMPLE)
    assert reg.beacon(f"ibeacon:{FLEET}/1/2").zone == "checkout"
    assert reg.beacon("eddystone:edd1ebeac04e5defa017/000003000001").fence_id == "store-03"
    assert reg.gateway("gw-store-03").zone is None
    assert reg.advertiser("ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6/0/7") == ("dev-007", -65.0)
    assert reg.advertiser("altbeacon:0f1e2d3c4b5a69788796a5b4c3d2e1f000010001") == ("tag-0001", None)
    assert reg.advertiser(f"ibeacon:{FLEET}/1/1") is None
    assert {"store-01", "store-02", "store-03"} <= reg.fence_ids()


def test_key_forms_convert_to_the_same_canonical_key() -> None:
    text = f"""
beacons:
  - key: IBEACON:{FLEET.upper().replace('-', '')}/01/2
    fence_id: s
    zone: a
  - type: eddystone
    namespace: "00 11 22 33 44 55 66 77 88 99"
    instance: "aabbccddeeff"
    fence_id: s
    zone: b
  - id: "0x00112233445566778899aabbccddeeff00112233"
    fence_id: s
    zone: c
"""
    reg = load_registry(text)
    assert set(reg.beacons) == {f"ibeacon:{FLEET}/1/2", "eddystone:00112233445566778899/aabbccddeeff",
                                "altbeacon:00112233445566778899aabbccddeeff00112233"}


@pytest.mark.parametrize(("text", "line", "col", "needle"), [
    ("beacons:\n  - key: ibeacon:nope/1/2\n    fence_id: s\n", 2, 10, "not a UUID"),
    ("beacons:\n  - key: ibeacon:" + FLEET + "/1/2\n    fence_id: s\n    zonee: x\n", 4, 5, "unknown key 'zonee'"),
    ("beacons:\n  - uuid: " + FLEET + "\n    major: 70000\n    minor: 1\n    fence_id: s\n", 3, 12, "major"),
    ("beacons:\n  - key: ibeacon:" + FLEET + "/1/2\n    zone: a\n", 2, 5, "'fence_id' is required"),
    ("beacons:\n  - key: ibeacon:" + FLEET + "/1/2\n    fence_id: s\n    power_1m: 4\n", 4, 15, "negative"),
    ("gateways:\n  - id: g\n    fence_id: s\n  - id: g\n    fence_id: t\n", 4, 9, "twice"),
    ("advertisers:\n  - uuid: " + FLEET + "\n    device_id: 'dev-{serial}'\n", 3, 16, "{serial}"),
    ("beacons: [\n", 2, 1, "invalid YAML"),
    ("bacons: []\n", 1, 1, "unknown key 'bacons'"),
])
def test_errors_name_line_and_column(text: str, line: int, col: int, needle: str) -> None:
    with pytest.raises(BeaconError) as info:
        load_registry(text)
    exc = info.value
    assert needle in exc.message
    assert (exc.source, exc.line, exc.col) == ("<registry>", line, col)
    assert describe(exc).startswith(f"<registry>:{line}:{col}: ")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("gateways:\n  - id: g\n", encoding="utf-8")
    with pytest.raises(BeaconError) as info:
        load_registry(str(path))
    assert describe(info.value).startswith(f"{path}:2:")
