"""``proximity beacons parse|track|health``: exact JSON keys, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proximity.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "proximity" / "examples"
IBEACON = "0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00640001c5"

EXPECTED_KEYS = {
    "ibeacon": ["type", "uuid", "major", "minor", "tx_power"],
    "altbeacon": ["type", "manufacturer", "id", "id1", "id2", "id3", "tx_power", "data"],
    "eddystone_uid": ["type", "namespace", "instance", "tx_power"],
    "eddystone_url": ["type", "url", "tx_power"],
    "eddystone_tlm": ["type", "version", "battery_mv", "temperature_c", "adv_count", "uptime_s"],
    "eddystone_tlm_encrypted": ["type", "version", "salt", "mic", "etlm"],
    "eddystone_eid": ["type", "eid", "tx_power"],
}

PAYLOADS = {
    "ibeacon": IBEACON,
    "altbeacon": "1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c500",
    "eddystone_uid": "0303aafe1716aafe00e2000102030405060708090a0b0c0d0e0f0000",
    "eddystone_url": "0303aafe0d16aafe10eb03676f6f2e676c07",
    "eddystone_tlm": "0303aafe1116aafe20000bb81780000003e80001e240",
    "eddystone_tlm_encrypted": "1516aafe2001000102030405060708090a0babcd1234",
    "eddystone_eid": "0d16aafe30f00102030405060708",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_parse_prints_exact_keys(capsys: pytest.CaptureFixture[str], kind: str) -> None:
    code, out, err = run(capsys, "beacons", "parse", PAYLOADS[kind])
    assert code == 0 and err == ""
    [frame] = json.loads(out)
    assert list(frame) == EXPECTED_KEYS[kind]
    assert frame["type"] == kind.replace("_encrypted", "")


def test_parse_values_and_separators(capsys: pytest.CaptureFixture[str]) -> None:
    spaced = " ".join(IBEACON[i:i + 2] for i in range(0, len(IBEACON), 2))
    code, out, _ = run(capsys, "beacons", "parse", spaced.replace(" ", ":", 5))
    assert code == 0
    assert json.loads(out) == [{"type": "ibeacon", "uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e", "major": 100,
                                "minor": 1, "tx_power": -59}]
    code, out, _ = run(capsys, "beacons", "parse", PAYLOADS["eddystone_tlm"])
    assert json.loads(out)[0] == {"type": "eddystone_tlm", "version": 0, "battery_mv": 3000, "temperature_c": 23.5,
                                  "adv_count": 1000, "uptime_s": 12345.6}


def test_parse_no_frame_is_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "beacons", "parse", "020106") == (0, "[]\n", "")


@pytest.mark.parametrize("bad", ["02010g", "0201060", "1aff4c000215"])
def test_parse_bad_input_exit_2_no_trace(bad: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "proximity", "beacons", "parse", bad], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_health_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "beacons", "health", str(EXAMPLES / "beacons.yaml"), str(EXAMPLES / "capture.jsonl"),
                         "--silent-after", "10m", "--low-battery-mv", "2500", "--json")
    assert code == 1  # some beacons need attention
    report = json.loads(out)
    status = {b["key"]: b["status"] for b in report["beacons"]}
    assert status["eddystone:edd1ebeac04e5defa017/000003000002"] == "low_battery"
    assert status["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/2"] == "silent"
    assert status["eddystone:edd1ebeac04e5defa017/000003000001"] == "ok"
    code, out, err = run(capsys, "beacons", "health", str(EXAMPLES / "beacons.yaml"), str(EXAMPLES / "capture.jsonl"))
    assert "low_battery" in out and "2310mV" in out and "need attention" in err


def test_health_bad_registry_names_the_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "r.yaml"
    reg.write_text("beacons:\n  - key: ibeacon:zz/1/1\n    fence_id: s\n", encoding="utf-8")
    code, _out, err = run(capsys, "beacons", "health", str(reg), str(EXAMPLES / "capture.jsonl"))
    assert code == 2 and err.startswith(f"{reg}:2:10: ")


def test_health_bad_capture_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = tmp_path / "c.jsonl"
    cap.write_text('{"ts": 1, "rssi": -50, "raw": "0201"}\n{"ts": 1, "rssi": \n', encoding="utf-8")
    code, _, err = run(capsys, "beacons", "health", str(EXAMPLES / "beacons.yaml"), str(cap))
    assert code == 2 and err.startswith(f"{cap}:2:")


def test_track_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "beacons", "track", str(EXAMPLES / "beacons.yaml"), str(EXAMPLES / "sightings.csv"))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["device_id"] for r in rows} == {"dev-001", "dev-002", "dev-004"}
    assert {r["proximity"] for r in rows} <= {"immediate", "near", "far", "unknown"}
    assert json.loads(err)["unknown_beacon"] == 1


def test_track_thresholds_and_curve_coefficients_are_configurable(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "r.yaml"
    reg.write_text("beacons:\n  - key: ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1\n    fence_id: s\n"
                   "    zone: z\n    power_1m: -59\n", encoding="utf-8")
    csv = tmp_path / "s.csv"
    csv.write_text("ts,observer_id,key,rssi,tx_power\n"
                   "1,dev-1,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1,-70,\n"
                   "1,dev-2,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1,-59,\n", encoding="utf-8")

    def track(*extra: str) -> list[dict]:
        code, out, _ = run(capsys, "beacons", "track", str(reg), str(csv), *extra)
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]

    default = track()
    assert [(r["distance_m"], r["proximity"]) for r in default] == [(3.548, "far"), (1.0, "near")]
    wide = track("--immediate-m", "1.5", "--near-m", "4")
    assert [r["proximity"] for r in wide] == ["near", "immediate"]
    curve = track("--model", "curve_fit", "--curve", "2,3,0.5")
    assert [r["distance_m"] for r in curve] == [round(2 * (70 / 59) ** 3 + 0.5, 3), 2.5]
    code, _, err = run(capsys, "beacons", "track", str(reg), str(csv), "--immediate-m", "5")
    assert code == 2 and err.startswith("error: thresholds")
    code, _, err = run(capsys, "beacons", "track", str(reg), str(csv), "--curve", "1,2,3")
    assert code == 2 and "--model curve_fit" in err


def test_track_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    csv = tmp_path / "s.csv"
    rows = [f"{i},dev-{i % 7},ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1,-{60 + i % 9},"
            for i in range(1000)]                  # ~250 kB of output: far more than a pipe buffer holds
    csv.write_text("ts,observer_id,key,rssi,tx_power\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with subprocess.Popen([sys.executable, "-m", "proximity", "beacons", "track", str(EXAMPLES / "beacons.yaml"),
                           str(csv)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["device_id"] == "dev-0"
        proc.stdout.close()                        # like `| head -1`
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0
    assert err == ""
