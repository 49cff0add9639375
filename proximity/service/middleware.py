"""The middleware every request goes through: metrics, one error rendering, keys and rate limits.

Order (outermost first): :func:`observe_middleware` counts and times,
:func:`error_middleware` turns every failure into a JSON answer (one 503 branch:
:class:`proximity.errors.StoreUnavailable`, which every Redis adapter raises when
its server is away), :func:`auth_middleware` checks the key, its scope and its rate.
A handler declares the scope its key needs with :func:`requires`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proximity.errors import StoreUnavailable, as_json
from proximity.service.auth import ApiKey, key_of_subprotocol
from proximity.service.codec import json_response
from proximity.service.errors import ApiError
from proximity.service.ratelimit import Quota, retry_after_header
from proximity.service.worker import API_KEY, RATE_QUOTA, service_of

log = logging.getLogger("proximity.service")
#: the access log: one line per request (``access_log: false`` turns it off)
access_log = logging.getLogger("proximity.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(scope: str | None, *more: str) -> Callable[[Handler], Handler]:
    """Mark a handler with the scope its key needs (``None``: no key needed), or the scopes of which its key
    needs one (``handler.scopes``; ``handler.scope`` is the first)."""

    def mark(handler: Handler) -> Handler:
        handler.scope = scope  # type: ignore[attr-defined]
        handler.scopes = () if scope is None else (scope, *more)  # type: ignore[attr-defined]
        return handler

    return mark


def presented_key(request: web.Request) -> str | None:
    """The key of ``X-API-Key``, ``Authorization: Bearer``, or (browsers cannot set headers on a
    WebSocket) the ``Sec-WebSocket-Protocol`` token ``proximity.key.<base64url of the key>``; never
    the URL, which proxies and access logs keep."""
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return key_of_subprotocol(request.headers.get("Sec-WebSocket-Protocol", ""))


def _route_name(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None) if route is not None else None
    if resource is None or getattr(info, "http_exception", None) is not None:
        return "unmatched"
    return str(resource.canonical)


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    svc = service_of(request)
    route = _route_name(request)
    started = time.perf_counter()
    svc.metrics.in_flight.inc()
    status, size = 500, 0
    try:
        response = await handler(request)
        status, size = response.status, response.content_length or 0
        return response
    finally:
        elapsed = time.perf_counter() - started
        svc.metrics.in_flight.dec()
        svc.metrics.requests.labels(route, str(status)).inc()
        if route != "unmatched":
            svc.metrics.latency.labels(route).observe(elapsed)
        if svc.config.access_log and access_log.isEnabledFor(logging.INFO):  # (its fields cost ~1 % of a request)
            log_access(request, status, elapsed, size)


def log_access(request: web.Request, status: int, seconds: float, size: int) -> None:
    """The access log's line: ``METHOD PATH STATUS DURATIONms BYTES key=NAME`` (the key's name from the key
    file, ``-`` without one; never the key, never the query string)."""
    key = request.get(API_KEY)
    access_log.info("%s %s %d %.1fms %dB key=%s", request.method, request.path, status, seconds * 1000, size,
                    "-" if key is None else key.name)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON ``{"error", "field", ...}``; nothing escapes as a bare 500 page."""
    svc = service_of(request)
    try:
        return await handler(request)
    except ApiError as exc:
        svc.metrics.rejected.labels(exc.reason).inc()
        return json_response(exc.body, exc.status, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response({"error": exc.reason}, exc.status, headers)
    except ValueError as exc:
        if not all(hasattr(exc, a) for a in ("message", "field", "row")):
            raise  # not one of the project's located input errors: a bug, answered below as a 500
        svc.metrics.rejected.labels("bad_body").inc()
        return json_response(as_json(exc), 400)
    except StoreUnavailable as exc:
        # the body names the dependency, never its address or the socket error (those go to the log)
        svc.metrics.rejected.labels("store_unavailable").inc()
        log.warning("%s %s: shared state unavailable: %s", request.method, request.path, exc)
        return json_response({"error": "shared state unavailable; retry after Retry-After (a batch retried with "
                                       "the same batch_id answers what this try committed)",
                              "dependency": "shared state", "reason": "store_unavailable"},
                             503, {"Retry-After": retry_after_header(exc.retry_after_s)})
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("internal error on %s %s", request.method, request.path)
        return json_response({"error": f"internal error ({type(exc).__name__}); this is a bug, please report it"},
                             500)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = getattr(request.match_info, "route", None)
    scopes = getattr(getattr(route, "handler", None), "scopes", ())
    if not scopes:
        return await handler(request)
    svc = service_of(request)
    key = svc.keys.authenticate(presented_key(request))
    if key is None:
        raise ApiError(401, "an API key is required: send X-API-Key: KEY or Authorization: Bearer KEY",
                       field="X-API-Key", reason="unauthenticated", headers={"WWW-Authenticate": "Bearer"})
    if not any(key.allows(s) for s in scopes):
        need = " or ".join(repr(s) for s in scopes)
        raise ApiError(403, f"key {key.name!r} lacks the {need} scope this route needs", field="scope",
                       reason="forbidden")
    request[API_KEY] = key
    quota = await svc.rate_limiter.charge(key.name)
    if quota is not None:
        request[RATE_QUOTA] = quota
        if quota.wait > 0:
            raise _too_many(quota, f"rate limit of {svc.config.rate_limit:g} requests/s for key {key.name!r} exceeded")
    try:
        response = await handler(request)
    except ApiError as exc:
        if RATE_QUOTA in request:
            exc.headers = {**request[RATE_QUOTA].headers(), **exc.headers}
        raise
    if RATE_QUOTA in request and not response.prepared:  # a WebSocket is prepared (its headers sent) already
        response.headers.update(request[RATE_QUOTA].headers())
    return response


def _too_many(quota: Quota, message: str, **extra: Any) -> ApiError:
    """A 429 whose ``Retry-After`` and body's ``retry_after_s`` are the same whole number of seconds."""
    return ApiError(429, f"{message}; retry after {quota.retry_after} s", reason="rate_limited",
                    headers=quota.headers(), retry_after_s=quota.retry_after, limited=quota.what, **extra)


async def charge_devices(request: web.Request, devices: list[str]) -> None:
    """Charge an ingest batch to each device it carries (the key's device buckets, all or none): 429 naming
    the device when one has no token left. The answer's ``RateLimit-*`` fields then report whichever bucket,
    the key's or a device's, is closest to empty."""
    svc = service_of(request)
    if svc.device_limiter is None or not devices:
        return
    quota = await svc.device_limiter.charge(key_of(request).name, devices)
    if quota is None:
        return
    request[RATE_QUOTA] = quota.tighter(request.get(RATE_QUOTA))
    if quota.wait > 0:
        raise _too_many(quota, f"rate limit of {svc.config.device_rate_limit:g} batches/s for device "
                               f"{quota.name!r} exceeded", field="device_id", device_id=quota.name)


def key_of(request: web.Request) -> ApiKey:
    """The key that the auth middleware accepted for this request."""
    return request[API_KEY]


__all__ = ["Handler", "auth_middleware", "charge_devices", "error_middleware", "key_of", "observe_middleware",
           "presented_key", "requires"]
