"""The store gateway and the service together: ``proximity gateway`` replays a capture into a real server.

Also: a raw advertisement (hex) and the same advertisement as a parsed key give
the same events, and sightings are refused with the field and entry named.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacons import read_capture
from beacons.gateway import sightings_of
from proximity.cli import main
from proximity.service.config import ServiceConfig, example_path
from tests.proximity.test_server_fuzz import KEY, ServerThread, post

# the app's iBeacon, advertised by the phone dev-007 (major 0, minor 7, 1 m power -65 dBm)
APP_UUID = "2f234454cf6d4a0fadf2f4911ba9ffa6"
RAW_DEV_007 = "0201061aff4c000215" + APP_UUID + "0000" + "0007" + "bf"
KEY_DEV_007 = "ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6/0/7"


@pytest.fixture
def server() -> Iterator[ServerThread]:
    srv = ServerThread(ServiceConfig(demo=True, rate_limit=0, advance_interval_s=3600))
    srv.start()
    yield srv
    srv.stop()


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_the_gateway_agent_delivers_a_capture_to_the_service(server: ServerThread, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    capture = example_path("capture.jsonl")
    expected = sum(len(sightings_of(r)[0]) for r in read_capture(capture))
    assert expected > 25  # several batches of 25
    code = main(["gateway", "--server", f"http://127.0.0.1:{server.port}", "--key", KEY,
                 "--gateway-id", "gw-store-01", "--replay", str(capture), "--spool", str(tmp_path / "spool"),
                 "--batch-size", "25", "--batch-interval", "0.05", "--backoff-max", "0.5", "--drain-timeout", "5"])
    assert code == 0, capsys.readouterr().err
    status, body = post(server.port, "GET", "/metrics", b"", {})
    metrics = body.decode()
    assert status == 200
    # every sighting the agent heard reached the engine, in gzip bodies of 25, none refused
    assert _metric(metrics, 'proximity_sightings_total{outcome="accepted"}') == expected
    assert _metric(metrics, 'proximity_sightings_total{outcome="rejected"}') == 0
    assert _metric(metrics, 'proximity_scans_total{gateway="gw-store-01"}') == -(-expected // 25)
    assert _metric(metrics, 'proximity_events_total{kind="enter",source="beacon"}') > 0
    assert 'proximity_http_requests_total{route="/v1/scans",status="200"}' in metrics


def _scan(server: ServerThread, sightings: list[dict], batch_id: str) -> tuple[int, dict]:
    doc = {"gateway_id": "gw-store-01", "batch_id": batch_id, "sent_at": time.time(), "sightings": sightings}
    status, body = post(server.port, "POST", "/v1/scans", json.dumps(doc).encode(),
                        {"X-API-Key": KEY, "Content-Type": "application/json"})
    return status, json.loads(body)


def test_raw_advertisements_and_parsed_keys_give_the_same_events(tmp_path: Path) -> None:
    now = time.time()
    results = []
    for form in ("raw", "key"):
        srv = ServerThread(ServiceConfig(demo=True, rate_limit=0, advance_interval_s=3600))
        srv.start()
        try:
            entries = [({"raw": RAW_DEV_007} if form == "raw" else {"key": KEY_DEV_007, "tx_power": -65})
                       | {"ts": now - 20 + k, "rssi": -58} for k in range(6)]
            status, body = _scan(srv, entries, f"{form}-1")
            assert status == 200, body
            assert body["accepted"] == 6 and body["rejected"] == []
            results.append(body["devices"])
        finally:
            srv.stop()
    raw, parsed = results
    assert raw == parsed
    events = raw["dev-007"]["events"]
    assert {(e["kind"], e["source"], e["fence_id"]) for e in events} >= {("enter", "beacon", "store-01")}


@pytest.mark.parametrize(
    ("entry", "field"),
    [({"raw": "02", "rssi": -60}, "sightings[1].raw"),
     ({"raw": RAW_DEV_007, "rssi": "loud"}, "sightings[1].rssi"),
     ({"key": KEY_DEV_007, "rssi": -60, "ts": "not a time"}, "sightings[1].ts"),
     ({"key": "ibeacon:nonsense", "rssi": -60}, "sightings[1].key")],
)
def test_a_bad_sighting_is_refused_naming_entry_and_field(server: ServerThread, entry: dict, field: str) -> None:
    now = time.time()
    good = {"key": KEY_DEV_007, "rssi": -60, "ts": now - 5}
    status, body = _scan(server, [good, {"ts": now - 4, **entry}], f"bad-{field}")
    assert status == 200, body
    assert body["accepted"] == 1 and len(body["rejected"]) == 1
    assert body["rejected"][0]["row"] == 1 and body["rejected"][0]["field"] == field and body["rejected"][0]["error"]
    # alone, the bad entry is the whole batch: refused (422) and nothing applied
    status, body = _scan(server, [{"ts": now - 4, **entry}], f"only-bad-{field}")
    assert status == 422 and body["row"] == 0 and body["field"] == field.replace("[1]", "[0]")


def _gateway(server: ServerThread, tmp_path: Path, *args: str) -> int:
    return main(["gateway", "--server", f"http://127.0.0.1:{server.port}", "--replay",
                 str(example_path("capture.jsonl")), "--spool", str(tmp_path / "spool"), "--batch-size", "25",
                 "--batch-interval", "0.05", "--backoff-max", "0.5", "--drain-timeout", "2", *args])


def test_an_unknown_gateway_id_is_answered_with_a_warning_that_the_agent_logs(
        server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    status, body = _scan(server, [], "hb-known")  # a registered gateway: no warning
    assert status == 200 and body["warnings"] == []
    doc = {"gateway_id": "gw-typo", "batch_id": "b-unknown", "sent_at": time.time(),
           "sightings": [{"ts": time.time(), "rssi": -60, "key": KEY_DEV_007, "tx_power": -65}]}
    status, raw = post(server.port, "POST", "/v1/scans", json.dumps(doc).encode(),
                       {"X-API-Key": KEY, "Content-Type": "application/json"})
    answer = json.loads(raw)
    assert status == 200 and len(answer["warnings"]) == 1
    assert "unknown gateway 'gw-typo'" in answer["warnings"][0] and "--gateway-id" in answer["warnings"][0]
    # the agent logs it and does not exit 0
    assert _gateway(server, tmp_path, "--key", KEY, "--gateway-id", "gw-typo") == 1
    err = capsys.readouterr().err
    assert " warned=" in err and " warned=0" not in err
    assert sum("unknown gateway 'gw-typo'" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_a_wrong_key_stops_the_agent_with_exit_2_naming_the_key(server: ServerThread, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    assert _gateway(server, tmp_path, "--key", "not-the-key", "--gateway-id", "gw-store-01", "--verbose") == 2
    err = capsys.readouterr().err
    assert "error: the server refused the gateway key (HTTP 401): check --key" in err
    log = [r.getMessage() for r in caplog.records]
    assert not any("spooling to disk and retrying" in m for m in log)
    # the log and the summary give the same spool: batches and sightings
    summary = next(line for line in err.splitlines() if line.startswith("heard="))
    fields = dict(kv.split("=") for kv in summary.split())
    logged = [m for m in log if "in spool " in m][-1]
    assert f"in spool {fields['in_spool_batches']} batch" in logged
    assert f"({fields['in_spool']} sightings)" in logged
    assert int(fields["in_spool"]) > 0 and fields["spooled"] == "0"
