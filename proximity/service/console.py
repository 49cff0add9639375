"""The web console: ``/console`` (a live map, campaigns, fleet and fences pages) and the data it reads.

The page and its scripts ship in ``proximity/service/console/`` and load nothing
from the internet. The user pastes a key, kept in the browser's session storage;
every call sends it as ``X-API-Key``, the live feed as the WebSocket subprotocol
``proximity.key.<base64url of the key>`` next to ``proximity.v1`` (browsers cannot
set headers on a WebSocket, and a key in the URL ends up in logs). Scopes hold as
everywhere: a ``read`` key sees everything and changes nothing.

=======  ==================================  =====  ==============================================
method   path                                scope  what
=======  ==================================  =====  ==============================================
GET      /console, /console/{asset}          none   the page and its scripts (no data)
GET      /v1/console/session                 read   who the key is, what it may do, map settings
GET      /v1/console/campaigns               read   campaigns with their counts per hour, backlog
GET      /v1/console/fleet                   read   beacons and gateways, health as ``beacons health``
POST     /v1/campaigns/{campaign_id}/status  admin  ``{"status": "paused"|"active"}``: edits the
                                                    campaigns document and reloads it everywhere
POST     /v1/fences/check                    admin  dry run of a GeoJSON upload: problems as
                                                    ``file:line:col``, or the diff against the fences
                                                    in force; nothing changes (apply: ``PUT /v1/fences``)
=======  ==================================  =====  ==============================================

The map's devices come from the live feed: a client that asks for
``kind=positions`` gets, every ``POSITIONS_INTERVAL_S``, the newest position of
each device that pinged meanwhile (nothing is computed while no one asks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from proxbase.tasks import cancel_and_wait
from proximity import __version__
from proximity.errors import as_json, describe, location
from proximity.service.auth import ApiKey
from proximity.service.console_data import DevicePositions, LiveFleet
from proximity.service.console_edit import set_campaign_status
from proximity.service.console_hourly import HourlyCounters, RedisHourly
from proximity.service.middleware import Handler, requires

log = logging.getLogger("proximity.console")
POSITIONS_INTERVAL_S = 0.25
ASSETS = Path(__file__).resolve().parent / "console"
_ASSET_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                ".txt": "text/plain", ".png": "image/png"}

def _json(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)
    return web.Response(body=body, status=status, content_type="application/json")


def _error(status: int, message: str, field: str | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return _json({**body, **extra}, status)


def _key_of(request: web.Request) -> ApiKey | None:
    return next((v for v in request.values() if isinstance(v, ApiKey)), None)


class Console:
    """What the console adds to one worker: counters, the live fleet, device positions, the replay."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        host = svc.host
        redis = svc.backends.aioredis
        self.hourly = HourlyCounters() if redis is None else RedisHourly(redis, svc.config.redis_prefix)
        self.fleet = LiveFleet(lambda: getattr(host, "registry", None))
        # a console on this worker asked for positions, or on another one (the bus knows: see FeedBus.watching)
        self.positions = DevicePositions(lambda: svc.bus.watching("positions"))
        self._edit_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        for name, listener in (("decision_listeners", self.hourly.record), ("ping_listeners", self.positions.observe),
                               ("scan_listeners", self.fleet.observe_scan)):
            listeners = getattr(host, name, None)
            if listeners is not None:
                listeners.append(listener)
        svc.offer_listeners.append(lambda offer: self.hourly.delivered([offer]))

    async def start(self, app: web.Application) -> None:
        self._tasks.append(asyncio.create_task(self._positions_loop(), name="console-positions"))
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="console-counters"))
        speed = float(getattr(self.svc.config, "replay_demo", 0) or 0)
        if speed > 0:
            from proximity.service.demo_replay import DemoReplay

            self._tasks.append(asyncio.create_task(DemoReplay(self.svc, self.fleet, speed).run(),
                                                   name="demo-replay"))

    async def stop(self, app: web.Application) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.hourly.flush()
            except Exception as exc:  # Redis away: the counts wait in the process for the next flush
                log.warning("console counters not flushed: %s", exc)

    async def _positions_loop(self) -> None:
        while True:
            await asyncio.sleep(POSITIONS_INTERVAL_S)
            rows = self.positions.take()
            if rows:
                await self.svc.bus.publish([{"type": "positions", "devices": rows}])


CONSOLE: web.AppKey[Console] = web.AppKey("proximity_console", Console)


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


@requires(None)
async def console_page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("asset") or "index.html"
    path = (ASSETS / name).resolve()
    if path.parent != ASSETS or path.suffix not in _ASSET_TYPES or not path.is_file():
        return _error(404, f"no console asset {name!r}", field="asset")
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob: *; "
                                          "connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'"}
    return web.Response(body=path.read_bytes(), content_type=_ASSET_TYPES[path.suffix], headers=headers)


@requires(None)
async def console_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


@requires("read")
async def console_session(request: web.Request) -> web.Response:
    console = _console(request)
    key = _key_of(request)
    cfg = console.svc.config
    return _json({
        "key": None if key is None else key.name,
        "scopes": [] if key is None else sorted(key.scopes),
        "can_change": bool(key is not None and key.allows("admin")),
        "version": __version__,
        "tile_url": getattr(cfg, "console_tile_url", None),
        "tile_attribution": getattr(cfg, "console_tile_attribution", None),
        "replay_demo": getattr(cfg, "replay_demo", 0) or 0,
        "demo": bool(cfg.demo),
        "config": {k: d.version for k, d in console.svc.reloader.loaded.items()},
    })


@requires("read")
async def console_campaigns(request: web.Request) -> web.Response:
    console = _console(request)
    rules = getattr(console.svc.host, "campaigns", None)
    campaigns = list(getattr(getattr(rules, "campaigns", None), "campaigns", ()) or ())
    counts = await console.hourly.report([c.id for c in campaigns])
    outbox = getattr(console.svc.host, "outbox", None)
    try:
        pending = await console.svc.host.run(outbox.pending) if outbox is not None else None
        dropped = await console.svc.host.run(outbox.drop_counts) if outbox is not None else None
    except Exception:  # the page still shows the counters when Redis is away
        pending = dropped = None
    reports = await _reports(console.svc.host, [c.id for c in campaigns])
    out = []
    for c in campaigns:
        trig = c.trigger
        out.append({"id": c.id, "name": c.name, "status": c.status, "priority": c.priority,
                    "trigger": {"on": trig.on, "fences": sorted(trig.fences) if trig.fences is not None else None,
                                "tags": sorted(trig.tags) if trig.tags is not None else None,
                                "zones": sorted(trig.zones) if trig.zones is not None else None},
                    **counts[c.id], "report": reports.get(c.id)})
    return _json({"campaigns": out, "outbox_pending": pending, "outbox_dropped": dropped, "shared": isinstance(console.hourly, RedisHourly),
                  "now": time.time()})


async def _reports(host: Any, campaign_ids: list[str], min_exposed: int = 30) -> dict[str, Any]:
    """Conversions and lift per campaign (what ``GET /v1/campaigns/{id}/report`` answers), ``None`` for a
    campaign without one yet; read here so a read key sees them and the page makes no failing request."""
    report = getattr(host, "campaign_report", None)
    if report is None:
        return {}

    def all_reports() -> dict[str, Any]:
        return {cid: report(cid, min_exposed) for cid in campaign_ids}

    try:
        return dict(await host.run(all_reports))
    except Exception as exc:  # Redis away: the counters still show
        log.warning("campaign reports unavailable: %s", exc)
        return {}


@requires("read")
async def console_fleet(request: web.Request) -> web.Response:
    return _json(_console(request).fleet.report())


@requires("admin")
async def campaign_status(request: web.Request) -> web.Response:
    console = _console(request)
    campaign_id = request.match_info["campaign_id"]
    try:
        doc = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        return _error(400, 'the body must be {"status": "paused"|"active"}', field="body")
    status = doc.get("status") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or set(doc) != {"status"} or status not in ("active", "paused"):
        return _error(400, 'the body must be {"status": "paused"|"active"}', field="status")
    svc = console.svc
    async with console._edit_lock:  # read, edit, submit: one at a time in this worker
        current = svc.reloader.loaded.get("campaigns")
        if current is None:
            return _error(404, "no campaigns are loaded", field="campaigns")
        try:
            text = set_campaign_status(current.text, current.media_type, campaign_id, status)
        except KeyError:
            return _error(404, f"no campaign {campaign_id!r}", field="campaign_id")
        if text == current.text:
            return _json({"campaign_id": campaign_id, "status": status, "version": current.version,
                          "changed": False})
        try:
            new, _ = await svc.reloader.submit("campaigns", text, current.media_type,
                                               f"POST /v1/campaigns/{campaign_id}/status")
        except ValueError as exc:  # the edit of a valid document stays valid; say so if not
            return _error(400, describe(exc), field="campaigns")
    return _json({"campaign_id": campaign_id, "status": status, "version": new.version, "changed": True})


@requires("admin")
async def fences_check(request: web.Request) -> web.Response:
    console = _console(request)
    svc = console.svc
    source = (request.query.get("source") or "<upload>")[:200]
    body = await request.read()
    if len(body) > svc.config.max_body_bytes:
        return _error(413, f"body is over the limit of {svc.config.max_body_bytes} bytes", field="body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _json({"valid": False, "errors": [{"error": f"not UTF-8 (byte {exc.start})",
                                                   "cli": f"{source}: not UTF-8 (byte {exc.start})"}]})
    try:
        fences = await svc.host.run(svc.host.validate, "fences", text, "application/geo+json", source)
    except ValueError as exc:
        return _json({"valid": False, "errors": [_problem(exc, source)]})
    return _json({"valid": True, "count": len(fences), "diff": fence_diff(svc.host.fences, fences)})


def _problem(exc: BaseException, source: str) -> dict[str, Any]:
    out = {**as_json(exc), "source": source}
    where = ":".join(str(p) for p in (source, out.get("line"), out.get("col")) if p is not None)
    text = describe(exc)
    if location(exc):
        text = text.removeprefix(location(exc) + ": ")
    out["cli"] = f"{where}: {text}"
    return out


def fence_diff(old: Any, new: Any, *, limit: int = 200) -> dict[str, Any]:
    """Fences ``added``, ``removed`` and ``changed`` (geometry or properties) by id, and how many are the same."""
    import shapely

    before = {f.id: f for f in old}
    after = {f.id: f for f in new}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    common = sorted(set(before) & set(after))
    changed = []
    if common:
        a = [before[i] for i in common]
        b = [after[i] for i in common]
        same_shape = shapely.equals_exact([f.geometry for f in a], [f.geometry for f in b], tolerance=0.0)
        for i, fa, fb, same in zip(common, a, b, same_shape, strict=True):
            if not same or dict(fa.properties) != dict(fb.properties) or fa.name != fb.name:
                changed.append(i)
    return {"added": added[:limit], "removed": removed[:limit], "changed": changed[:limit],
            "counts": {"added": len(added), "removed": len(removed), "changed": len(changed),
                       "unchanged": len(common) - len(changed), "before": len(before), "after": len(after)}}


def routes() -> list[tuple[str, str, Handler]]:
    return [
        ("GET", "/console", console_redirect),
        ("GET", "/console/", console_page),
        ("GET", "/console/{asset}", console_page),
        ("GET", "/v1/console/session", console_session),
        ("GET", "/v1/console/campaigns", console_campaigns),
        ("GET", "/v1/console/fleet", console_fleet),
        ("POST", "/v1/campaigns/{campaign_id}/status", campaign_status),
        ("POST", "/v1/fences/check", fences_check),
    ]


def openapi_paths(op: Callable[..., dict[str, Any]], err: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The console's paths for the service's OpenAPI document (``op(id, summary, scope, responses)``)."""
    page = {"200": {"description": "The console (HTML, scripts, styles).", "content": {"text/html": {}}},
            "404": err("No such asset.")}
    json_ok: dict[str, Any] = {"content": {"application/json": {}}}
    return {
        "/console": {"get": op("console_redirect", "Redirects to /console/.", None,
                               {"302": {"description": "To /console/."}})},
        "/console/": {"get": op("console_page", "The web console: live map, campaigns, fleet, fences.", None, page)},
        "/console/{asset}": {
            "parameters": [{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": op("console_asset", "A script or style sheet of the console.", None, page)},
        "/v1/console/session": {"get": op(
            "console_session", "The key's name and scopes, whether it may change things, map settings.", "read",
            {"200": {"description": "The session.", **json_ok}})},
        "/v1/console/campaigns": {"get": op(
            "console_campaigns", "Campaigns with, per hour, events matched, offers issued, held, dropped, refusals "
            "per cap and delivered; the backlog (summed over every worker with Redis); the outbox's pending offers.",
            "read", {"200": {"description": "Campaign counters.", **json_ok}})},
        "/v1/console/fleet": {"get": op(
            "console_fleet", "Beacons (last heard, RSSI, battery, temperature, status as `proximity beacons "
            "health`) and gateways (up or down).", "read", {"200": {"description": "The fleet.", **json_ok}})},
        "/v1/campaigns/{campaign_id}/status": {
            "parameters": [{"name": "campaign_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "post": op("campaign_status", "Pause or resume a campaign: edits the campaigns document in force "
                       "and reloads it on every worker.", "admin", {
                           "200": {"description": "The new status and config version.", **json_ok},
                           "400": err("The body is not {\"status\": \"paused\"|\"active\"}."),
                           "404": err("No such campaign, or no campaigns loaded.")},
                       requestBody={"required": True, "content": {"application/json": {"schema": {
                           "type": "object", "required": ["status"],
                           "properties": {"status": {"enum": ["active", "paused"]}}}}}})},
        "/v1/fences/check": {"post": op(
            "fences_check", "Dry run of a fences upload: `valid`, the problems as `file:line:col` (`?source=` "
            "names the file) or the diff against the fences in force. Nothing changes.", "admin", {
                "200": {"description": "The verdict.", **json_ok}, "413": err("Body too large.")},
            parameters=[{"name": "source", "in": "query", "schema": {"type": "string"},
                         "description": "The uploaded file's name, used in the problems' locations."}],
            requestBody={"required": True, "content": {"application/geo+json": {}}})},
    }


def register_console(app: web.Application, svc: Any) -> Console:
    """Add the console's routes to ``app`` and hook its counters into ``svc`` (one call in the app factory)."""
    console = Console(svc)
    app[CONSOLE] = console
    for method, path, handler in routes():
        app.router.add_route(method, path, handler, name=handler.__name__ + ("_root" if path == "/console/" else ""))
    app.on_startup.append(console.start)
    app.on_shutdown.insert(0, console.stop)
    return console


__all__ = ["CONSOLE", "Console", "fence_diff", "openapi_paths", "register_console", "routes"]
