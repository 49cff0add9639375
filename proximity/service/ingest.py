"""Ingest routes: ``POST /v1/pings`` (the SDK) and ``POST /v1/scans`` (store gateways).

Parse once (body -> JSON -> rows), call the engine once (on its thread), render
once (:mod:`proximity.service.render`): the response and the live feed share it.
A partly bad batch is processed for its good rows and the response lists each
bad row (``rejected``: ``row``, ``field``, ``error``); a batch with no good row
gets 422 and nothing is processed. A ``batch_id`` makes retries safe
(:mod:`proximity.service.idempotency`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

import proximity.service.coalesce as coalesce
from proximity.errors import as_json
from proximity.service.codec import json_response, parse_json, read_body
from proximity.service.errors import ApiError
from proximity.service.idempotency import idempotent
from proximity.service.middleware import key_of, requires
from proximity.service.render import Rendered, render
from proximity.service.worker import service_of

_PING_KEYS = {"batch_id", "pings", "sent_at"}
_SCAN_KEYS = {"batch_id", "gateway_id", "sent_at", "sightings"}


def batch_id_of(doc: Any) -> str | None:
    if not isinstance(doc, dict) or "batch_id" not in doc or doc["batch_id"] is None:
        return None
    bid = doc["batch_id"]
    if not isinstance(bid, str) or not bid or len(bid) > 200:
        raise ApiError(400, "batch_id must be a string of 1 to 200 characters", field="batch_id",
                       reason="bad_body")
    return bid


def gateway_label(registry: Any, gateway: str) -> str:
    """The ``gateway`` label of a scan's metrics: its id when the beacon registry lists it, else
    ``"unregistered"`` (a key can send any gateway_id: labels come only from the registry, so the
    number of series stays bounded)."""
    known = getattr(registry, "gateways", None) or {}
    return gateway if gateway in known else "unregistered"


def batch_response(batch_id: str | None, accepted: int, errors: Sequence[BaseException], rendered: Rendered,
                   extra: Mapping[str, Any] | None = None) -> web.Response:
    """The answer to a batch: 200 with its per-device events and offers and its rejected rows, or 422 when
    every row was refused."""
    rejected = [as_json(e) for e in errors]
    if accepted == 0 and rejected:
        raise ApiError(422, f"every row was refused ({len(rejected)}); see errors", field=rejected[0].get("field"),
                       row=rejected[0].get("row"), reason="all_rows_bad", errors=rejected[:100],
                       rejected_count=len(rejected))
    body: dict[str, Any] = {"batch_id": batch_id, "accepted": accepted, "rejected": rejected,
                            "devices": rendered.devices(), "stats": rendered.stats}
    if extra:
        body.update(extra)
    return json_response(body)


@requires("sdk")
async def post_pings(request: web.Request) -> web.Response:
    svc = service_of(request)
    body = await read_body(request, svc.config.max_body_bytes)
    doc = parse_json(body)
    if isinstance(doc, list):
        rows: Any = doc
    elif isinstance(doc, dict):
        unknown = sorted(set(doc) - _PING_KEYS)
        if unknown:
            raise ApiError(400, f"unknown field {unknown[0]!r}; a batch has batch_id, pings, sent_at",
                           field=unknown[0], reason="bad_body")
        if "pings" not in doc:
            raise ApiError(400, "missing field 'pings' (a list of pings)", field="pings", reason="bad_body")
        rows = doc["pings"]
    else:
        raise ApiError(400, "the body must be a JSON object {batch_id, pings} or a list of pings", field="body",
                       reason="bad_body")
    if not isinstance(rows, list):
        raise ApiError(400, "pings must be a list", field="pings", reason="bad_body")
    if len(rows) > svc.config.max_batch:
        raise ApiError(413, f"{len(rows)} pings is over the batch limit of {svc.config.max_batch}; split the batch",
                       field="pings", reason="too_many_rows", limit=svc.config.max_batch)
    if not rows:
        raise ApiError(400, "pings is empty", field="pings", reason="bad_body")
    batch_id = batch_id_of(doc)

    async def work(journal: str | None) -> web.Response:
        started = time.perf_counter()
        result, accepted, errors = await coalesce.process_pings(svc, rows, journal)
        svc.metrics.engine_latency.labels("pings").observe(time.perf_counter() - started)
        svc.metrics.pings.labels("accepted").inc(accepted)
        svc.metrics.pings.labels("rejected").inc(len(errors))
        rendered = render(result)
        response = batch_response(batch_id, accepted, errors, rendered)
        await svc.publish(rendered)
        return response

    return await idempotent(svc.idempotency, svc.metrics, f"pings\0{key_of(request).name}", batch_id, work)


@requires("gateway")
async def post_scans(request: web.Request) -> web.Response:
    svc = service_of(request)
    body = await read_body(request, svc.config.max_body_bytes)
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise ApiError(400, "the body must be a JSON object {gateway_id, batch_id, sent_at, sightings}",
                       field="body", reason="bad_body")
    unknown = sorted(set(doc) - _SCAN_KEYS)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; a scan batch has gateway_id, batch_id, sent_at, "
                            "sightings", field=unknown[0], reason="bad_body")
    gateway = doc.get("gateway_id")
    if not isinstance(gateway, str) or not gateway.strip() or len(gateway) > 256:
        raise ApiError(400, "gateway_id must be a non-empty string", field="gateway_id", reason="bad_body")
    rows = doc.get("sightings")
    if not isinstance(rows, list):
        raise ApiError(400, "sightings must be a list", field="sightings", reason="bad_body")
    if len(rows) > svc.config.max_scan_rows:
        raise ApiError(413, f"{len(rows)} sightings is over the batch limit of {svc.config.max_scan_rows}",
                       field="sightings", reason="too_many_rows", limit=svc.config.max_scan_rows)
    batch_id = batch_id_of(doc)

    async def work(journal: str | None) -> web.Response:
        started = time.perf_counter()
        result, accepted, errors = await svc.host.run(svc.host.process_scans, doc, time.time(), journal)
        svc.metrics.engine_latency.labels("scans").observe(time.perf_counter() - started)
        svc.metrics.sightings.labels("accepted").inc(accepted)
        svc.metrics.sightings.labels("rejected").inc(len(errors))
        svc.metrics.scans.labels(gateway_label(svc.host.registry, gateway)).inc()
        rendered = render(result)
        if accepted == 0 and not errors:  # an empty scan (a heartbeat): fine
            return json_response({"batch_id": batch_id, "accepted": 0, "rejected": [], "devices": {},
                                  "stats": rendered.stats})
        response = batch_response(batch_id, accepted, errors, rendered, {"gateway_id": gateway})
        await svc.publish(rendered)
        return response

    return await idempotent(svc.idempotency, svc.metrics, f"scans:{gateway}\0{key_of(request).name}", batch_id,
                            work)


ROUTES = [("POST", "/v1/pings", post_pings), ("POST", "/v1/scans", post_scans)]

__all__ = ["ROUTES", "batch_id_of", "batch_response", "gateway_label", "post_pings", "post_scans"]
