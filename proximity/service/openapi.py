"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /openapi.json``.

This is the contract SDK and gateway teams code against. A test
(``tests/proximity/test_openapi.py``) keeps it in step with the routes the
server really registers: every (method, path) pair and the scope each one
requires must match, in both directions.
"""

from __future__ import annotations

import copy
from typing import Any

from beacons.scans import SCANS_SCHEMA
from proxbase.timestamps import TIMESTAMP_SCHEMA
from proximity import __version__
from proximity.convert import DEVICE_ID_RULE, MAX_DEVICE_ID_LEN
from proximity.service.console import openapi_paths as _console_paths

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in words."},
        "field": {"type": "string", "description": "The field at fault (`lat`, `pings`, `features[3].geometry`)."},
        "row": {"type": "integer", "description": "0-based index of the row at fault in a batch."},
        "line": {"type": "integer"},
        "col": {"type": "integer"},
        "cli": {"type": "string", "description": "For a rejected PUT document: the line `proximity ... validate` "
                                                  "prints for the same file, `<request body>:LINE:COL: what`."},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Error"},
                   "description": "Every problem of the body (each with its `field`, and `row` for a row), "
                                  "in one answer."},
        "retry_after_s": {"type": "integer", "minimum": 1,
                          "description": "On a 429: the same whole seconds as the `Retry-After` header."},
        "limited": {"enum": ["key", "device"], "description": "On a 429: which bucket is empty."},
        "device_id": {"type": "string", "description": "On a 429 for a device: the device."},
        "limit": {"type": "integer", "description": "On a 413: the row limit."},
        "rejected_count": {"type": "integer", "description": "On a 422 for a batch: rows refused."},
    },
}

_PING = {
    "type": "object",
    "required": ["device_id", "lon", "lat", "accuracy_m", "ts"],
    "properties": {
        "device_id": {"type": "string", "minLength": 1, "maxLength": MAX_DEVICE_ID_LEN,
                      "pattern": r"^[^\p{C}\p{Zl}\p{Zp}]*\S[^\p{C}\p{Zl}\p{Zp}]*$",
                      "description": DEVICE_ID_RULE + " (Unicode categories L, M, N, P, S and Zs; Python's "
                                     "str.isprintable, which also refuses spaces other than U+0020)."},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "accuracy_m": {"type": "number", "exclusiveMinimum": 0,
                       "description": "Radius of the fix's accuracy circle, metres."},
        "ts": {**TIMESTAMP_SCHEMA, "description": "When the fix was taken; at most `max_skew_s` in the future."},
        "speed": {"type": "number", "minimum": 0, "description": "m/s"},
        "foreground": {"type": "boolean"},
        "attrs": {"type": "object", "description": "Device attributes campaign audiences read (segments, ...)."},
        "timezone": {"type": "string", "description": "IANA time zone of the device."},
    },
    "additionalProperties": False,
}

_PINGS = {"type": "array", "items": {"$ref": "#/components/schemas/Ping"}, "minItems": 1, "maxItems": 1000,
          "description": "At most `max_batch` rows (default 1000, the `maxItems` of the document a server "
                         "serves); 413 beyond."}

_PING_BATCH = {
    "oneOf": [
        {
            "type": "object",
            "required": ["pings"],
            "additionalProperties": False,
            "properties": {
                "batch_id": {"type": "string", "minLength": 1, "maxLength": 200,
                             "description": "Makes retries idempotent: a repeated batch_id with the same body "
                                            "gets the first response replayed (header `Idempotent-Replay: "
                                            "true`); with another body, 422."},
                "sent_at": {**TIMESTAMP_SCHEMA, "description": "When the batch was sealed (informational)."},
                "pings": _PINGS,
            },
        },
        _PINGS,
    ]
}

_EVENT = {
    "type": "object",
    "required": ["kind", "device_id", "place", "fence_id", "ts", "source"],
    "properties": {
        "kind": {"enum": ["enter", "dwell", "exit"]},
        "device_id": {"type": "string"},
        "place": {"type": "string", "description": "`fence_id` or `fence_id#zone`."},
        "fence_id": {"type": "string"},
        "zone": {"type": ["string", "null"]},
        "ts": {"type": "number"},
        "source": {"enum": ["gps", "beacon", "fused"]},
        "confidence": {"type": "integer"},
        "dwell_s": {"type": "number"},
        "cause": {"type": "string"},
        "proximity": {"enum": ["immediate", "near", "far", "unknown"]},
        "distance_m": {"type": "number"},
        "probability": {"type": "number", "minimum": 0, "maximum": 1,
                        "description": "How likely the device really is inside the place at `ts` (calibrated)."},
    },
}

_OFFER = {
    "type": "object",
    "required": ["offer_id", "campaign_id", "device_id", "place", "fence_id", "ts", "trigger", "title"],
    "properties": {
        "offer_id": {"type": "string", "description": "Stable id (from the event): deliveries deduplicate by it."},
        "campaign_id": {"type": "string"},
        "device_id": {"type": "string"},
        "place": {"type": "string", "description": "`fence_id` or `fence_id#zone`."},
        "fence_id": {"type": "string"},
        "zone": {"type": ["string", "null"]},
        "ts": {"type": "number", "description": "Time of the event that triggered it, epoch seconds."},
        "trigger": {"type": "string"},
        "priority": {"type": "integer"},
        "title": {"type": "string"},
        "body": {"type": ["string", "null"]},
        "deep_link": {"type": ["string", "null"]},
        "data": {"type": "object"},
        "deliver_after": {"type": ["number", "null"],
                          "description": "Held by quiet hours: epoch seconds when the device's quiet window ends."},
        "variant": {"type": "string", "description": "The experiment's variant (campaigns with variants)."},
    },
}

_STATS = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": {"type": "integer", "minimum": 0},
    "properties": {
        "pings": {"type": "integer", "minimum": 0, "description": "Pings that reached the engine."},
        "sightings": {"type": "integer", "minimum": 0, "description": "Sightings that reached the engine."},
        "zone_sightings": {"type": "integer", "minimum": 0, "description": "Sightings resolved to a zone."},
        "applied": {"type": "integer", "minimum": 0},
        "late": {"type": "integer", "minimum": 0, "description": "Older than the device's newest evidence."},
        "duplicates": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0,
                     "description": "Rows refused: the length of `rejected` counted by distinct row."},
        "events": {"type": "integer", "minimum": 0},
        "enter": {"type": "integer", "minimum": 0},
        "dwell": {"type": "integer", "minimum": 0},
        "exit": {"type": "integer", "minimum": 0},
    },
    "description": "Counts of this batch (other counts, all whole numbers, may be added).",
}

_DEVICES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "offers": {"type": "array", "items": {"$ref": "#/components/schemas/Offer"}},
        },
        "required": ["events", "offers"],
    },
    "description": "Per device id: the events and offers this batch produced.",
}

_BATCH_RESPONSE = {
    "type": "object",
    "required": ["batch_id", "accepted", "rejected", "devices", "stats"],
    "properties": {
        "batch_id": {"type": ["string", "null"]},
        "warnings": {"type": "array", "items": {"type": "string"},
                     "description": "Scans: what did not refuse the batch but needs a look, one per unknown "
                                    "gateway_id (the beacon registry does not list it)."},
        "accepted": {"type": "integer", "description": "Rows processed."},
        "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Error"},
                     "description": "Rows refused, each with its `row` and `field`. The good rows of a "
                                    "partly bad batch are processed; a batch with no good row gets 422."},
        "devices": _DEVICES,
        "stats": {"allOf": [{"$ref": "#/components/schemas/Stats"}, {"required": ["rejected"]}]},
        "gateway_id": {"type": "string", "description": "Scans: the gateway of the batch."},
    },
}

# the scans body's schema is beacons.scans.SCANS_SCHEMA (the gateway agent builds its bodies with it)
_SIGHTING = copy.deepcopy(SCANS_SCHEMA["properties"]["sightings"]["items"])
_SCAN_BATCH: dict[str, Any] = {k: copy.deepcopy(v) for k, v in SCANS_SCHEMA.items() if not k.startswith("$")}
_SCAN_BATCH["properties"]["sightings"] = {
    "type": "array", "items": {"$ref": "#/components/schemas/Sighting"}, "maxItems": 5000,
    "description": "At most `max_scan_rows` rows (default 5000, the `maxItems` of the document a server "
                   "serves); 413 beyond. Empty: a heartbeat."}


def _json(schema_ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


_RATE_HEADERS = {
    "RateLimit-Limit": {"schema": {"type": "integer"}, "description": "Size of the bucket closest to empty "
                        "(draft-ietf-httpapi-ratelimit-headers-06)."},
    "RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "Requests it has left."},
    "RateLimit-Reset": {"schema": {"type": "integer"}, "description": "Seconds until it is full again."},
}

_COMMON_ERRORS = {
    "401": _err("No key, or an unknown key."),
    "403": _err("The key lacks the scope this route needs."),
    "429": {**_err("Too many requests for this key, or (ingest) for one of the batch's devices; `Retry-After` "
                   "and the body's `retry_after_s` give the same seconds."),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}, **_RATE_HEADERS}},
    "503": {**_err("Shared state unreachable (the body names the dependency, never its address). Retry after `Retry-After` with the same `batch_id`: the retry answers exactly what this try committed."),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}

_BODY_ERRORS = {
    "400": _err("Malformed body: not JSON, not gzip, wrong shape (`field` says where)."),
    "413": _err("Too many rows, or more bytes than `max_body_bytes` (also after gunzip)."),
    "415": _err("Unsupported Content-Encoding or Content-Type."),
    "422": _err("Every row was refused (`errors` lists each with its row and field), or the `batch_id` "
                "was already used for another body."),
}

_DEVICE_PARAM = {"name": "device_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(op_id: str, summary: str, scope: str | tuple[str, ...] | None, responses: dict[str, Any],
        **extra: Any) -> dict[str, Any]:
    """An operation; ``scope``: the key's scope, or a tuple of scopes of which the key needs one."""
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses, **extra}
    scopes = () if scope is None else (scope,) if isinstance(scope, str) else scope
    op["security"] = [{scheme: [s]} for s in scopes for scheme in ("ApiKeyHeader", "BearerKey")]
    op["x-scopes"] = list(scopes)
    if scopes:
        op["responses"] = {**responses, **_COMMON_ERRORS}
    return op


def _config_ops(kind: str, media: str, description: str) -> dict[str, Any]:
    return {
        "get": _op(f"get_{kind}", f"The {kind} in force, with their version.", "read", {
            "200": {"description": description, "content": {media: {}},
                    "headers": {"X-Config-Version": {"schema": {"type": "integer"}}}},
        }),
        "put": _op(f"put_{kind}", f"Replace the {kind}; validated first, a bad body changes nothing.", "admin", {
            "200": {"description": "Replaced; every worker reloads.", "content": _json("ConfigVersion")},
            "400": _err("Not valid: `errors` lists each problem with `line`, `col` and `field`."),
            "413": _err("Body too large."),
        }, requestBody={"required": True, "content": {media: {}}}),
    }


_SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "proximity",
        "version": __version__,
        "description": "BLE beacon and geofencing proximity engine: pings and scans in, presence events "
                       "and offers out. Send the key as `X-API-Key: KEY` or `Authorization: Bearer KEY`; "
                       "bodies may be gzip (`Content-Encoding: gzip`).",
    },
    "paths": {
        "/v1/pings": {"post": _op("post_pings", "A batch of location pings from the SDK.", "sdk", {
            "200": {"description": "Processed; the events and offers the batch produced, per device.",
                    "content": _json("BatchResponse"), "headers": _RATE_HEADERS},
            **_BODY_ERRORS,
            "409": _err("A request with this batch_id is still being processed; retry."),
        }, requestBody={"required": True, "content": _json("PingBatch")})},
        "/v1/scans": {"post": _op(
            "post_scans", "A batch of BLE sightings: from a store gateway (`gateway` scope), or a phone's sightings "
            "of store beacons, each with its `observer_id` (an `sdk` key may send only those).", ("gateway", "sdk"), {
            "200": {"description": "Processed.", "content": _json("BatchResponse"), "headers": _RATE_HEADERS},
            **_BODY_ERRORS,
            "409": _err("A request with this batch_id is still being processed; retry."),
        }, requestBody={"required": True, "content": _json("ScanBatch")})},
        "/v1/fences": _config_ops("fences", "application/geo+json", "A GeoJSON FeatureCollection."),
        "/v1/campaigns": _config_ops("campaigns", "application/yaml", "The campaign YAML (JSON accepted on PUT)."),
        "/v1/beacons": _config_ops("beacons", "application/yaml", "The beacon registry YAML."),
        "/v1/campaigns/{campaign_id}/report": {
            "parameters": [{"name": "campaign_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _op(
            "campaign_report", "Exposures, conversions and lift against the holdout of one campaign, per variant "
            "and store, from the counters the workers keep (see `proximity campaigns report`).", "read", {
                "200": {"description": "`lift`: rows of level campaign | variant | store with `exposed`, `converted`, "
                                       "`rate`, the holdout's, and (from `min_exposed` up) `lift`, `lift_ci`, "
                                       "`relative_lift`, `relative_lift_ci`, `incremental_visits`, `status`.",
                        "content": {"application/json": {}}},
                "400": _err("`min_exposed` is not a whole number of at least 1."),
                "404": _err("No campaign with this id is loaded."),
            }, parameters=[
                {"name": "min_exposed", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 30},
                 "description": "Exposures needed in the treated group and in the holdout before a lift is given."},
            ])},
        "/v1/devices/{device_id}": {
            "parameters": [_DEVICE_PARAM],
            "get": _op("get_device", "A device's presence state.", "read", {
                "200": {"description": "State per place.", "content": {"application/json": {}}},
            }),
            "delete": _op("delete_device", "Erase a device everywhere (privacy).", "admin", {
                "200": {"description": "Erased.", "content": {"application/json": {}}},
            }),
        },
        "/v1/devices/{device_id}/opt-out": {
            "parameters": [_DEVICE_PARAM],
            "post": _op("opt_out_device", "Opt a device out of offers (`{\"opt_out\": false}` opts back in).",
                        "admin", {"200": {"description": "Recorded.", "content": {"application/json": {}}},
                                  "400": _err("Malformed body.")},
                        requestBody={"required": False, "content": {"application/json": {
                            "schema": {"type": "object", "properties": {"opt_out": {"type": "boolean"}}}}}}),
        },
        "/v1/advance": {"post": _op(
            "advance", "Let event time pass to `now`: debounce exits and expiry due by then (replays, "
            "simulations; the service's own loop advances on the wall clock).", "admin", {
                "200": {"description": "The events and offers that time produced, per device.",
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["now", "devices", "stats"],
                            "properties": {"now": {"type": "number"},
                                           "devices": _DEVICES,
                                           "stats": {"$ref": "#/components/schemas/Stats"}}}}}},
                "400": _err("`now` missing, not a number, or beyond the clock-skew limit.")},
            requestBody={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["now"], "properties": {"now": {"type": "number"}}}}}})},
        "/v1/events": {"get": _op(
            "live_feed", "WebSocket live feed of events and offers. The key goes in a header or, from a browser "
            "(which cannot set WebSocket headers), as the subprotocol `proximity.key.<base64url of the key>` next "
            "to `proximity.v1`; never in the URL.", "read", {
                "101": {"description": "Switching to WebSocket; each message is a JSON object "
                                       "`{\"type\": \"event\"|\"offer\", ...}`."},
                "400": _err("A bad filter."),
            }, parameters=[
                {"name": "kind", "in": "query", "schema": {"type": "string"},
                 "description": "Comma list of enter, dwell, exit, offer, positions (positions: the newest "
                                "position of each device that pinged, every 0.25 s; only when asked for)."},
                {"name": "fence", "in": "query", "schema": {"type": "string"}, "description": "Comma list of fence ids."},
                {"name": "campaign", "in": "query", "schema": {"type": "string"},
                 "description": "Comma list of campaign ids (offers only)."},
                {"name": "device", "in": "query", "schema": {"type": "string"},
                 "description": "Comma list of device ids."},
            ])},
        "/metrics": {"get": _op("metrics", "Prometheus metrics (text format 0.0.4).", None, {
            "200": {"description": "Metrics.", "content": {"text/plain": {}}}})},
        "/healthz": {"get": _op("healthz", "The process answers.", None, {
            "200": {"description": "Alive.", "content": {"application/json": {}}}})},
        "/readyz": {"get": _op("readyz", "Ready to serve: configuration loaded and Redis reachable when used.", None, {
            "200": {"description": "Ready.", "content": {"application/json": {}}},
            "503": _err("Not ready; the body says why.")})},
        "/openapi.json": {"get": _op("openapi", "This document.", None, {
            "200": {"description": "OpenAPI 3.1.", "content": {"application/json": {}}}})},
        **_console_paths(_op, _err),
    },
    "components": {
        "securitySchemes": {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerKey": {"type": "http", "scheme": "bearer"},
        },
        "schemas": {
            "Error": _ERROR,
            "Ping": _PING,
            "PingBatch": _PING_BATCH,
            "Event": _EVENT,
            "Offer": _OFFER,
            "Stats": _STATS,
            "BatchResponse": _BATCH_RESPONSE,
            "Sighting": _SIGHTING,
            "ScanBatch": _SCAN_BATCH,
            "ConfigVersion": {"type": "object", "properties": {
                "kind": {"type": "string"}, "version": {"type": "integer"}, "sha256": {"type": "string"},
                "count": {"type": "integer"}}},
        },
    },
}

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def openapi_spec(config: Any = None) -> dict[str, Any]:
    """A fresh copy of the spec (callers may add servers or change it); with a ``ServiceConfig``, the row
    limits (``maxItems``) are that server's ``max_batch`` and ``max_scan_rows``."""
    spec = copy.deepcopy(_SPEC)
    if config is not None:
        schemas = spec["components"]["schemas"]
        for pings in (schemas["PingBatch"]["oneOf"][0]["properties"]["pings"], schemas["PingBatch"]["oneOf"][1]):
            pings["maxItems"] = config.max_batch
        schemas["ScanBatch"]["properties"]["sightings"]["maxItems"] = config.max_scan_rows
    return spec


def operations(spec: dict[str, Any] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(METHOD, path): operation}`` of a spec."""
    spec = _SPEC if spec is None else spec
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                out[(method.upper(), path)] = op
    return out


__all__ = ["HTTP_METHODS", "openapi_spec", "operations"]
