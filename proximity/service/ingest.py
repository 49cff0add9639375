"""Ingest routes: ``POST /v1/pings`` (the SDK) and ``POST /v1/scans`` (store gateways).

Parse once (body -> JSON -> rows; a body of plain pings straight to columns, see
:mod:`proximity.plain_json`), call the engine once (on its thread), render
once (:mod:`proximity.service.render`): the response and the live feed share it.
A partly bad batch is processed for its good rows and the response lists each
bad row (``rejected``: ``row``, ``field``, ``error``); a batch with no good row
gets 422 and nothing is processed. A ``batch_id`` makes retries safe
(:mod:`proximity.service.idempotency`); the same ``batch_id`` with another body
gets 422. The envelope of a body is checked first, every problem reported at once
(:mod:`proximity.service.bodies`); then the batch is charged to each device it
carries (:func:`proximity.service.middleware.charge_devices`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

import proximity.service.coalesce as coalesce
from beacons.scans import entry_problems
from proximity.batch import PingBatch, ping_row_problems
from proximity.service.bodies import (
    complete_row_errors,
    devices_of,
    phones_only,
    ping_body,
    scan_body,
)
from proximity.service.codec import json_response, parse_json, read_body
from proximity.service.errors import ApiError
from proximity.service.idempotency import fingerprint, idempotent
from proximity.service.middleware import charge_devices, key_of, requires
from proximity.service.render import Rendered, render
from proximity.service.worker import service_of


def gateway_label(registry: Any, gateway: str) -> str:
    """The ``gateway`` label of a scan's metrics: its id when the beacon registry lists it, else
    ``"unregistered"`` (a key can send any gateway_id: labels come only from the registry, so the
    number of series stays bounded)."""
    known = getattr(registry, "gateways", None) or {}
    return gateway if gateway in known else "unregistered"


def batch_response(batch_id: str | None, accepted: int, rejected: Sequence[Mapping[str, Any]], rendered: Rendered,
                   extra: Mapping[str, Any] | None = None) -> web.Response:
    """The answer to a batch: 200 with its per-device events and offers and its rejected rows (JSON, see
    :func:`~proximity.service.bodies.complete_row_errors`), or 422 when every row was refused (an empty scan,
    a gateway's heartbeat, is a 200 with nothing in it).
    ``stats.rejected`` counts the refused rows, whoever refused them (the parser or the engine)."""
    rows = {e.get("row") for e in rejected}
    if accepted == 0 and rejected:
        raise ApiError(422, f"every row was refused ({len(rows)}); see errors", field=rejected[0].get("field"),
                       row=rejected[0].get("row"), reason="all_rows_bad", errors=list(rejected[:100]),
                       rejected_count=len(rows))
    stats = {"events": len(rendered.events), **rendered.stats, "rejected": len(rows)}
    body: dict[str, Any] = {"batch_id": batch_id, "accepted": accepted, "rejected": list(rejected),
                            "devices": rendered.devices(), "stats": stats}
    if extra:
        body.update(extra)
    return json_response(body)


@requires("sdk")
async def post_pings(request: web.Request) -> web.Response:
    svc = service_of(request)
    body = await read_body(request, svc.config.max_body_bytes)
    rows, batch_id, devices, doc = ping_body(body, svc.config.max_batch)
    await charge_devices(request, devices)

    async def work(journal: str | None) -> web.Response:
        started = time.perf_counter()
        result, accepted, errors = await coalesce.process_pings(svc, rows, journal, devices)
        svc.metrics.engine_latency.labels("pings").observe(time.perf_counter() - started)
        svc.metrics.pings.labels("accepted").inc(accepted)
        svc.metrics.pings.labels("rejected").inc(len(errors))
        rendered = render(result)
        # a plain body was not parsed as JSON: its rows are, when one was refused (its other problems are named)
        rejected = complete_row_errors(rows if not isinstance(rows, PingBatch) else _json_rows(body) if errors else [],
                                       errors, ping_row_problems)
        response = batch_response(batch_id, accepted, rejected, rendered)
        await svc.publish(rendered)
        return response

    return await idempotent(svc.idempotency, svc.metrics, f"pings\0{key_of(request).name}", batch_id, work,
                            fingerprint(doc if doc is not None else parse_json(body)) if batch_id is not None else "")


def _json_rows(body: bytes) -> list[Any]:
    """The rows of a pings body that was read as plain (:func:`~proximity.service.bodies.ping_body`), as JSON."""
    doc = parse_json(body)
    return doc["pings"] if isinstance(doc, dict) else doc


@requires("gateway", "sdk")
async def post_scans(request: web.Request) -> web.Response:
    svc = service_of(request)
    body = await read_body(request, svc.config.max_body_bytes)
    doc = parse_json(body)
    gateway, batch_id = scan_body(doc, svc.config.max_scan_rows)
    if not key_of(request).allows("gateway"):  # an app's key: its phones' sightings only
        phones_only(doc["sightings"], key_of(request).name)
    await charge_devices(request, devices_of(doc["sightings"], "observer_id"))  # phones; a gateway: its key

    async def work(journal: str | None) -> web.Response:
        started = time.perf_counter()
        result, accepted, errors = await svc.host.run(svc.host.process_scans, doc, time.time(), journal)
        svc.metrics.engine_latency.labels("scans").observe(time.perf_counter() - started)
        svc.metrics.sightings.labels("accepted").inc(accepted)
        svc.metrics.sightings.labels("rejected").inc(len(errors))
        svc.metrics.scans.labels(gateway_label(svc.host.registry, gateway)).inc()
        rendered = render(result)
        warnings = svc.host.scan_warnings(gateway)  # one per unknown gateway
        rejected = complete_row_errors(doc["sightings"], errors, entry_problems, "sightings[{row}].")
        response = batch_response(batch_id, accepted, rejected, rendered, {"gateway_id": gateway, "warnings": warnings})
        await svc.publish(rendered)
        return response

    return await idempotent(svc.idempotency, svc.metrics, f"scans:{gateway}\0{key_of(request).name}", batch_id,
                            work, fingerprint(doc))


ROUTES = [("POST", "/v1/pings", post_pings), ("POST", "/v1/scans", post_scans)]

__all__ = ["ROUTES", "batch_response", "gateway_label", "post_pings", "post_scans"]
