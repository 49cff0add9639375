"""Admin routes (``admin`` scope): configuration documents, devices, time passing and the live feed.

``GET/PUT /v1/{fences,campaigns,beacons}`` (a PUT is validated, then replaces the
document on every worker), ``GET/DELETE /v1/devices/{id}``, ``POST
/v1/devices/{id}/opt-out``, ``POST /v1/advance`` and ``GET /v1/events`` (WebSocket).
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from proximity.errors import as_json, describe, location
from proximity.service.codec import clean, json_response, parse_json, read_body
from proximity.service.errors import ApiError
from proximity.service.feed import serve_socket
from proximity.service.middleware import Handler, requires
from proximity.service.reload import KINDS
from proximity.service.render import render
from proximity.service.worker import service_of


def _config_handlers(kind: str) -> tuple[Handler, Handler]:
    @requires("read")
    async def get_config(request: web.Request) -> web.Response:
        svc = service_of(request)
        doc = svc.reloader.loaded.get(kind)
        if doc is None:
            raise ApiError(404, f"no {kind} are loaded", field=kind, reason="not_found")
        return web.Response(text=doc.text, content_type=doc.media_type.split(";")[0],
                            headers={"X-Config-Version": str(doc.version), "ETag": f'"{doc.sha256}"'})

    @requires("admin")
    async def put_config(request: web.Request) -> web.Response:
        svc = service_of(request)
        body = await read_body(request, svc.config.max_body_bytes)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"the body is not UTF-8 (byte {exc.start})", field="body", reason="bad_body") from None
        media = request.content_type or "application/octet-stream"
        try:
            doc, parsed = await svc.reloader.submit(kind, text, media, f"PUT /v1/{kind}")
        except ValueError as exc:
            errors = getattr(exc, "problems", None) or getattr(exc, "errors", None) or [exc]
            body_errors = [_config_error(e) for e in errors]
            first = body_errors[0]
            raise ApiError(400, first["error"],
                           reason="invalid_config", errors=body_errors, cli=first["cli"],
                           **{k: first[k] for k in ("field", "row", "line", "col") if k in first}) from None
        return json_response({"kind": kind, "version": doc.version, "sha256": doc.sha256,
                              "count": svc.host.count(kind, parsed)})

    get_config.__name__ = f"get_{kind}"
    put_config.__name__ = f"put_{kind}"
    return get_config, put_config


def _config_error(exc: BaseException) -> dict[str, Any]:
    """One problem of a PUT document: its JSON fields, plus ``cli``, the line the CLI prints for a file
    (``<request body>:LINE:COL: what``)."""
    out = {**as_json(exc), "source": "<request body>"}
    where = ":".join(str(p) for p in ("<request body>", out.get("line"), out.get("col")) if p is not None)
    out["cli"] = f"{where}: {describe(exc).removeprefix(location(exc) + ': ') if location(exc) else describe(exc)}"
    return out


def _device_id(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if not device_id or len(device_id) > 256:
        raise ApiError(400, "device_id must be 1 to 256 characters", field="device_id", reason="bad_path")
    return device_id


@requires("read")
async def get_device(request: web.Request) -> web.Response:
    svc = service_of(request)
    device_id = _device_id(request)
    state = await svc.host.run(svc.host.device_state, device_id)
    return json_response({"device_id": device_id, **clean(state)})


@requires("admin")
async def delete_device(request: web.Request) -> web.Response:
    svc = service_of(request)
    device_id = _device_id(request)
    rendered = render(await svc.host.run(svc.host.forget, device_id))
    await svc.publish(rendered)
    return json_response({"device_id": device_id, "erased": True, "events": rendered.events})


@requires("admin")
async def opt_out_device(request: web.Request) -> web.Response:
    svc = service_of(request)
    device_id = _device_id(request)
    body = await read_body(request, 4096)
    flag = True
    if body.strip():
        doc = parse_json(body)
        if not isinstance(doc, dict) or set(doc) - {"opt_out"}:
            raise ApiError(400, 'the body must be {"opt_out": true|false}', field="opt_out", reason="bad_body")
        flag = doc.get("opt_out", True)
        if not isinstance(flag, bool):
            raise ApiError(400, "opt_out must be true or false", field="opt_out", reason="bad_body")
    await svc.host.run(svc.host.set_opt_out, device_id, flag)
    return json_response({"device_id": device_id, "opt_out": flag})


@requires("admin")
async def post_advance(request: web.Request) -> web.Response:
    """Let time pass to ``now`` (event time): debounce exits and TTL expiry due by then (replays, simulations)."""
    svc = service_of(request)
    doc = parse_json(await read_body(request, 4096))
    now = doc.get("now") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or set(doc) - {"now"}:
        raise ApiError(400, 'the body must be {"now": epoch seconds}', field="now", reason="bad_body")
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now) or now < 0:
        raise ApiError(400, "now must be finite epoch seconds", field="now", reason="bad_body")
    if now > time.time() + svc.config.max_skew_s:
        raise ApiError(400, f"now is more than {svc.config.max_skew_s:g} s ahead of the server clock", field="now",
                       reason="bad_body")
    rendered = render(await svc.host.run(svc.host.advance, float(now)))
    await svc.publish(rendered)
    return json_response({"now": now, "devices": rendered.devices(), "stats": rendered.stats})


@requires("read")
async def live_feed(request: web.Request) -> web.StreamResponse:
    svc = service_of(request)
    return await serve_socket(request, svc.hub, svc.sockets)


def _routes() -> list[tuple[str, str, Handler]]:
    out: list[tuple[str, str, Handler]] = []
    for kind in KINDS:
        get_h, put_h = _config_handlers(kind)
        out += [("GET", f"/v1/{kind}", get_h), ("PUT", f"/v1/{kind}", put_h)]
    return [*out,
            ("GET", "/v1/devices/{device_id}", get_device),
            ("DELETE", "/v1/devices/{device_id}", delete_device),
            ("POST", "/v1/devices/{device_id}/opt-out", opt_out_device),
            ("POST", "/v1/advance", post_advance),
            ("GET", "/v1/events", live_feed)]


ROUTES = _routes()

__all__ = ["ROUTES", "delete_device", "get_device", "live_feed", "opt_out_device", "post_advance"]
