"""The SDK contract: the server's behaviour checked against its own ``/openapi.json`` with jsonschema.

Bodies generated from the document's request schemas (hypothesis) are accepted (200, or 422 when every row
is refused for its values: never a 400 for their shape), and every answer validates against the response
schema the document gives; bodies the document refuses are refused with 400 and every problem at once."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, validators

from proximity.service.config import ServiceConfig, example_path
from proximity.service.openapi import openapi_spec
from tests.proximity.test_server_fuzz import KEY, ServerThread, district, post

ROOT = Path(__file__).resolve().parents[2]


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """JSON Schema's ``pattern`` with the Unicode classes the document uses (``\\p{C}``...), which Python's re
    lacks: the device id rule is printable text with a non-space (see ``proximity.convert``)."""
    if not isinstance(instance, str):
        return
    ok = (instance.isprintable() and bool(instance.strip())) if "\\p{" in pattern else re.search(pattern, instance)
    if not ok:
        yield validators._keywords.ValidationError(f"{instance!r} does not match {pattern!r}")  # type: ignore[attr-defined]


Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def schema_of(spec: dict[str, Any], name: str) -> Any:
    return Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


LIMITS = {"max_batch": 6, "max_scan_rows": 6}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    fences = tmp_path_factory.mktemp("contract") / "fences.geojson"
    fences.write_text(district())
    cfg = ServiceConfig(fences=str(fences), campaigns=str(example_path("campaigns.yaml")),
                        beacons=str(example_path("beacons.yaml")), rate_limit=0, reload_interval_s=30, **LIMITS)
    srv = ServerThread(cfg)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def spec(server: ServerThread) -> dict[str, Any]:
    """The document the server serves (the strategies below are built from the same, checked here)."""
    status, body = post(server.port, "GET", "/openapi.json", b"", {})
    assert status == 200
    served = json.loads(body)
    assert served["components"] == SPEC["components"]
    return served


def call(server: ServerThread, path: str, body: Any, key: str) -> tuple[int, Any]:
    status, raw = post(server.port, "POST", path, json.dumps(body).encode(),
                       {"X-API-Key": key, "Content-Type": "application/json"})
    return status, json.loads(raw)


# -- a strategy from a JSON Schema (the subset the document uses)

NOW = time.time()


def from_schema(node: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        return st.deferred(lambda: from_schema(components["schemas"][node["$ref"].rsplit("/", 1)[1]], components))
    if "oneOf" in node:
        return st.one_of([from_schema(n, components) for n in node["oneOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**node, "type": k}, components) for k in kind])
    if kind == "object":
        props = node.get("properties", {})
        required = {k: from_schema(props.get(k, {}), components) for k in node.get("required", [])}
        optional = {k: from_schema(v, components) for k, v in props.items() if k not in required}
        if not props:  # a free object (attrs): a few plain values
            return st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(0, 9) | st.text("xy"),
                                   max_size=2)
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "array":
        low = node.get("minItems", 0)
        return st.lists(from_schema(node.get("items", {}), components), min_size=low,
                        max_size=max(low, min(node.get("maxItems", 4), 4)))
    if kind == "string":
        if node.get("format") == "date-time":  # the document's years, 1971-4999
            return st.datetimes(datetime(1971, 1, 2), datetime(4999, 12, 30), timezones=st.just(UTC)).map(
                lambda d: d.isoformat())
        pattern = node.get("pattern")
        low, high = node.get("minLength", 0), min(node.get("maxLength", 12), 12)
        if pattern and "\\p{" in pattern:
            return st.text(st.characters(categories=["L", "N", "P", "S", "Zs"], max_codepoint=0xFFFF),
                           min_size=max(low, 1), max_size=high).filter(lambda s: s.isprintable() and s.strip())
        if pattern:
            return st.from_regex(pattern).filter(lambda s: low <= len(s) <= node.get("maxLength", 10**9))
        return st.text(min_size=low, max_size=high)
    if kind in ("number", "integer"):
        low, high = node.get("minimum", node.get("exclusiveMinimum")), node.get("maximum")
        if kind == "integer":
            return st.integers(low, high)
        return st.floats(low, high, allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in node)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.none() | st.integers() | st.text(max_size=4)


def check_answer(spec: dict[str, Any], status: int, answer: Any, sent_rows: int, *, rows_are_units: bool = True) -> None:
    """``rows_are_units``: a row is one unit of ``accepted`` (pings); a scan's raw payload is as many sightings
    as it has beacon frames (none: skipped)."""
    assert status in (200, 422), (status, answer)
    if status == 422:
        schema_of(spec, "Error").validate(answer)
        assert answer["errors"] and all("row" in e and "field" in e for e in answer["errors"])
        return
    schema_of(spec, "BatchResponse").validate(answer)
    refused = {e["row"] for e in answer["rejected"]}
    assert all("field" in e for e in answer["rejected"])
    assert answer["stats"]["rejected"] == len(refused)
    assert refused <= set(range(sent_rows))
    if rows_are_units:
        assert answer["accepted"] + len(refused) == sent_rows


SPEC = json.loads(json.dumps(openapi_spec(ServiceConfig(**LIMITS))))
PING_BODIES = from_schema({"$ref": "#/components/schemas/PingBatch"}, SPEC["components"])
SCAN_BODIES = from_schema({"$ref": "#/components/schemas/ScanBatch"}, SPEC["components"])
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@SETTINGS
@given(body=PING_BODIES)
def test_ping_bodies_the_document_allows_are_accepted(server: ServerThread, spec: dict[str, Any], body: Any) -> None:
    if isinstance(body, dict) and "batch_id" in body:
        body["batch_id"] += f"-{time.monotonic_ns()}"  # a new batch each time (a reuse is another test)
    schema_of(spec, "PingBatch").validate(body)
    status, answer = call(server, "/v1/pings", body, KEY)
    check_answer(spec, status, answer, len(body if isinstance(body, list) else body["pings"]))


@SETTINGS
@given(body=SCAN_BODIES)
def test_scan_bodies_the_document_allows_are_accepted(server: ServerThread, spec: dict[str, Any], body: Any) -> None:
    body["batch_id"] = f"{body['batch_id'][:150]}-{time.monotonic_ns()}"
    schema_of(spec, "ScanBatch").validate(body)
    status, answer = call(server, "/v1/scans", body, KEY)
    check_answer(spec, status, answer, len(body["sightings"]), rows_are_units=False)


def test_the_document_marks_what_the_server_requires(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert set(schemas["ScanBatch"]["required"]) == {"gateway_id", "batch_id", "sent_at", "sightings"}
    assert schemas["ScanBatch"]["properties"]["sightings"]["maxItems"] == 6  # this server's max_scan_rows
    assert schemas["PingBatch"]["oneOf"][0]["properties"]["pings"]["maxItems"] == 6
    assert "sent_at" in schemas["PingBatch"]["oneOf"][0]["properties"]
    assert schemas["BatchResponse"]["properties"]["stats"]["allOf"][0] == {"$ref": "#/components/schemas/Stats"}
    assert schemas["BatchResponse"]["properties"]["devices"]["additionalProperties"]["properties"]["offers"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/Offer"}}


@pytest.mark.parametrize(("body", "fields"), [
    ({"sightings": [], "extra": 1}, ["extra", "gateway_id", "batch_id", "sent_at"]),
    ({"gateway_id": "gw-1", "sightings": "no"}, ["batch_id", "sent_at", "sightings"]),
    ({"gateway_id": "", "batch_id": "x" * 201, "sent_at": [], "sightings": []}, ["gateway_id", "batch_id", "sent_at"]),
    # the document states the server's gateway rule: not all spaces, at most 256 characters
    ({"gateway_id": " ", "batch_id": "b", "sent_at": NOW, "sightings": []}, ["gateway_id"]),
    ({"gateway_id": "g" * 257, "batch_id": "b", "sent_at": NOW, "sightings": []}, ["gateway_id"]),
])
def test_every_problem_of_a_scan_body_in_one_answer(server: ServerThread, spec: dict[str, Any], body: Any,
                                                    fields: list[str]) -> None:
    assert list(schema_of(spec, "ScanBatch").iter_errors(body))  # the document refuses it too
    status, answer = call(server, "/v1/scans", body, KEY)
    assert status == 400, answer
    schema_of(spec, "Error").validate(answer)
    assert sorted(e["field"] for e in answer["errors"]) == sorted(fields)
    assert answer["field"] == answer["errors"][0]["field"]


def test_every_problem_of_a_ping_body_and_of_its_rows_in_one_answer(server: ServerThread,
                                                                     spec: dict[str, Any]) -> None:
    status, answer = call(server, "/v1/pings", {"batch_id": 7, "sent_at": {}, "colour": 1, "pings": []}, KEY)
    assert status == 400
    assert sorted(e["field"] for e in answer["errors"]) == ["batch_id", "colour", "pings", "sent_at"]
    # rows: each missing or unknown field of each refused row, in one 422
    status, answer = call(server, "/v1/pings", [{"device_id": "a", "ts": NOW}, {"lon": 2.35, "lat": 48.85,
                                                                                  "x": 1}], KEY)
    assert status == 422
    got = sorted((e["row"], e["field"]) for e in answer["errors"])
    assert got == [(0, "accuracy_m"), (0, "lat"), (0, "lon"), (1, "accuracy_m"), (1, "device_id"),
                   (1, "ts"), (1, "x")]
    assert not list(schema_of(spec, "Error").iter_errors(answer))
    # values: each bad value of a refused row too (the parser stops at a row's first), beside a good row
    status, answer = call(server, "/v1/pings", [
        {"device_id": "a", "lon": 2.35, "lat": 148.85, "accuracy_m": -3, "ts": "yesterday"},
        {"device_id": "b", "lon": 2.35, "lat": 48.85, "accuracy_m": 10, "ts": NOW}], KEY)
    assert status == 200, answer
    assert sorted((e["row"], e["field"]) for e in answer["rejected"]) == [(0, "accuracy_m"), (0, "lat"), (0, "ts")]


def test_every_problem_of_a_scan_entry_in_one_answer(server: ServerThread) -> None:
    body = {"gateway_id": "gw-1", "batch_id": "b-entries", "sent_at": NOW, "sightings": [
        {"key": "not a key", "rssi": "loud", "ts": "yesterday", "colour": 1},
        {"raw": 7, "rssi": -60, "observer_id": ""}]}
    status, answer = call(server, "/v1/scans", body, KEY)
    assert status == 422, answer
    assert sorted((e["row"], e["field"]) for e in answer["errors"]) == [
        (0, "sightings[0].colour"), (0, "sightings[0].key"), (0, "sightings[0].rssi"), (0, "sightings[0].ts"),
        (1, "sightings[1].observer_id"), (1, "sightings[1].raw"), (1, "sightings[1].ts")]


def test_too_many_rows_is_413_naming_the_limit(server: ServerThread) -> None:
    row = {"device_id": "a", "lon": 2.35, "lat": 48.85, "accuracy_m": 5, "ts": NOW}
    status, answer = call(server, "/v1/pings", [row] * 7, KEY)
    assert status == 413 and answer["limit"] == 6 and answer["field"] == "pings"


def test_stats_rejected_counts_every_refused_row(server: ServerThread, spec: dict[str, Any]) -> None:
    good = {"device_id": "st-1", "lon": 2.3505, "lat": 48.8505, "accuracy_m": 5, "ts": NOW}
    rows = [good, {**good, "lat": 91}, {**good, "ts": "yesterday"}, {**good, "ts": NOW + 10_000}]  # the last:
    status, answer = call(server, "/v1/pings", rows, KEY)  # refused by the engine (future), not the parser
    assert status == 200
    assert answer["accepted"] == 1 and answer["stats"]["rejected"] == 3 == len(answer["rejected"])
    schema_of(spec, "BatchResponse").validate(answer)


def test_a_phone_sighting_with_observer_id_is_taken_as_the_backtest_takes_it(server: ServerThread,
                                                                            spec: dict[str, Any]) -> None:
    # the first row of the bundled sightings CSV: dev-001 saw store-01's entrance beacon
    from beacons import read_sightings_csv

    csv = read_sightings_csv(example_path("sightings.csv"))
    observer, key, rssi = str(csv.observer[0]), str(csv.key[0]), float(csv.rssi[0])
    body = {"gateway_id": "ios-app", "batch_id": f"phone-{time.monotonic_ns()}", "sent_at": NOW,
            "sightings": [{"ts": NOW - 1, "rssi": rssi, "key": key, "observer_id": ""},
                          *({"ts": NOW - 50 + 10 * i, "rssi": rssi, "key": key, "observer_id": observer}
                            for i in range(5))]}
    schema_of(spec, "ScanBatch").validate({**body, "sightings": body["sightings"][1:]})
    status, answer = call(server, "/v1/scans", body, KEY)
    assert status == 200, answer
    assert answer["accepted"] == 5
    assert [(e["row"], e["field"]) for e in answer["rejected"]] == [(0, "sightings[0].observer_id")]
    assert answer["stats"]["zone_sightings"] == 5  # ranged as the phone's, not as the gateway's
    events = answer["devices"][observer]["events"]
    assert events and events[0]["source"] == "beacon" and events[0]["fence_id"] == "store-01"


def test_the_readme_and_the_server_give_the_same_sightings_limit() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    said = re.findall(r"A batch can hold at most ([\d,]+) sightings", readme)
    assert said, "the README no longer states the sightings limit"
    assert {int(n.replace(",", "")) for n in said} == {ServiceConfig().max_scan_rows}


def response_schema(spec: dict[str, Any], method: str, path: str, status: str) -> Any:
    schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return Validator({**schema, "components": spec["components"]})


def test_advance_and_error_answers_follow_the_document(server: ServerThread, spec: dict[str, Any]) -> None:
    status, answer = call(server, "/v1/advance", {"now": time.time()}, KEY)
    assert status == 200
    response_schema(spec, "post", "/v1/advance", "200").validate(answer)
    status, answer = call(server, "/v1/pings", {"pings": "x"}, KEY)
    assert status == 400
    response_schema(spec, "post", "/v1/pings", "400").validate(answer)
    status, raw = post(server.port, "POST", "/v1/pings", b"[]", {"X-API-Key": "nope"})
    assert status == 401
    response_schema(spec, "post", "/v1/pings", "401").validate(json.loads(raw))


async def test_an_app_key_sends_its_phones_sightings_and_only_those(aiohttp_client: Any, tmp_path: Path) -> None:
    from aiohttp.test_utils import TestServer

    from beacons import read_sightings_csv
    from proximity.service import create_app
    from tests.proximity.test_server import KEYS, SDK

    fences = tmp_path / "fences.geojson"
    fences.write_text(district())
    cfg = ServiceConfig(fences=str(fences), beacons=str(example_path("beacons.yaml")), rate_limit=0)
    server = TestServer(create_app(cfg, keys=KEYS))
    await server.start_server(auto_decompress=False)
    client = await aiohttp_client(server)
    csv = read_sightings_csv(example_path("sightings.csv"))
    observer, key = str(csv.observer[0]), str(csv.key[0])
    rows = [{"ts": NOW - 40 + 10 * i, "rssi": float(csv.rssi[0]), "key": key, "observer_id": observer}
            for i in range(5)]
    body = {"gateway_id": "ios-app", "batch_id": "app-1", "sent_at": NOW, "sightings": rows}
    r = await client.post("/v1/scans", json=body, headers={"X-API-Key": SDK})
    answer = await r.json()
    assert r.status == 200 and answer["accepted"] == 5 and answer["stats"]["zone_sightings"] == 5, answer
    assert answer["devices"][observer]["events"][0]["fence_id"] == "store-01"
    gateway_like = {**body, "batch_id": "app-2", "sightings": [rows[0], {"ts": NOW, "rssi": -60, "key": key},
                                                               {"ts": NOW, "rssi": -60, "key": key}]}
    r = await client.post("/v1/scans", json=gateway_like, headers={"X-API-Key": SDK})
    answer = await r.json()
    assert r.status == 403 and answer["field"] == "sightings[1].observer_id"
    assert [e["row"] for e in answer["errors"]] == [1, 2] and "gateway scope" in answer["error"]
