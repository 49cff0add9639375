"""Operations routes (no key): ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``, ``/openapi.json``."""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from proximity import __version__
from proximity.service.codec import json_response
from proximity.service.metrics import CONTENT_TYPE
from proximity.service.middleware import Handler, requires
from proximity.service.openapi import openapi_spec
from proximity.service.worker import service_of

log = logging.getLogger("proximity.service")


@requires(None)
async def metrics(request: web.Request) -> web.Response:
    svc = service_of(request)
    return web.Response(body=svc.metrics.registry.render().encode("utf-8"),
                        headers={"Content-Type": CONTENT_TYPE})


@requires(None)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "pid": os.getpid(), "version": __version__})


@requires(None)
async def readyz(request: web.Request) -> web.Response:
    svc = service_of(request)
    problems: list[str] = []
    if not svc.ready:
        problems.append(svc.not_ready_reason or "not started")
    if svc.backends.aioredis is not None:
        try:
            await asyncio.wait_for(svc.backends.aioredis.ping(), 1.0)
        except Exception as exc:  # the answer names the dependency, not its address
            log.warning("readyz: shared state unreachable: %s", exc or type(exc).__name__)
            problems.append("shared state (redis) unreachable")
    body = {"status": "ready" if not problems else "not ready", "problems": problems,
            "config": {k: d.version for k, d in svc.reloader.loaded.items()}, "pid": os.getpid()}
    if problems:
        return json_response({"error": "; ".join(problems), **body}, 503, {"Retry-After": "1"})
    return json_response(body)


@requires(None)
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi_spec(service_of(request).config))


ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/metrics", metrics),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/openapi.json", openapi_json),
]

__all__ = ["ROUTES", "healthz", "metrics", "openapi_json", "readyz"]
