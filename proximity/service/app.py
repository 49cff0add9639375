"""The HTTP service: the aiohttp application of one worker, its routes, and how a worker runs.

``create_app(config)`` builds the :class:`aiohttp.web.Application`;
``proximity serve`` runs it (see :mod:`proximity.commands.serve`). Run it with
``auto_decompress=False`` on the runner (:func:`make_runner` does) so that the
service itself gunzips request bodies under its size limit, guarding against
gzip bombs.

Routes and scopes (the OpenAPI document at ``/openapi.json`` says the same; a
test keeps them equal):

=======  ==============================  ========  ==========================================
method   path                            scope     what
=======  ==============================  ========  ==========================================
POST     /v1/pings                       sdk       a batch of location pings
POST     /v1/scans                       gateway   a batch of BLE sightings from a gateway (or,
                                         | sdk     with an sdk key, phones' sightings with observer_id)
GET      /v1/fences                      read      GeoJSON fences in force
PUT      /v1/fences                      admin     GeoJSON fences (validated, then replaced)
GET/PUT  /v1/campaigns                   read/adm  campaign YAML (or JSON)
GET/PUT  /v1/beacons                     read/adm  beacon registry YAML
GET      /v1/devices/{id}                read      a device's presence state
DELETE   /v1/devices/{id}                admin     erase a device everywhere
POST     /v1/devices/{id}/opt-out        admin     opt a device out of (or back into) offers
POST     /v1/advance                     admin     time passes to ``now``: due exits (replays)
GET      /v1/events                      read      WebSocket live feed (filters: kind, fence,
                                                   campaign, device); the key in a header or,
                                                   from a browser, as the subprotocol
                                                   ``proximity.key.<base64url of the key>``
(console) /console, /v1/console/...      see       :mod:`proximity.service.console`
GET      /metrics, /healthz, /readyz,    none
         /openapi.json
=======  ==============================  ========  ==========================================

Each group of routes is one module with a ``ROUTES`` list (:mod:`.ingest`,
:mod:`.admin`, :mod:`.ops`); :func:`routes` joins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from aiohttp import web

from proximity.service import admin, ingest, ops, reports
from proximity.service.auth import KeyRing
from proximity.service.codec import BODY_TIMEOUT
from proximity.service.collector import CollectorWatch, settle_collector
from proximity.service.config import ServiceConfig
from proximity.service.console import register_console
from proximity.service.guard import LISTEN_BACKLOG, GuardedSite
from proximity.service.host import EngineHost
from proximity.service.metrics import ServiceMetrics
from proximity.service.middleware import Handler, auth_middleware, error_middleware, observe_middleware
from proximity.service.worker import APP_STATE, Service, service_of

log = logging.getLogger("proximity.service")


def routes() -> list[tuple[str, str, Handler]]:
    """Every (method, path, handler) the app registers; the OpenAPI test reads this through the app."""
    return [*ingest.ROUTES, *admin.ROUTES, *reports.ROUTES, *ops.ROUTES]


def create_app(config: ServiceConfig | None = None, *, keys: KeyRing | None = None, host: EngineHost | None = None,
               metrics: ServiceMetrics | None = None, warm_on_start: bool = True) -> web.Application:
    """The aiohttp application of one worker. ``host`` replaces the engine host (tests only). With
    ``warm_on_start=False`` the app starts not ready and :meth:`Service.warm_up` makes it ready (as
    :func:`serve_forever` does once it listens, so ``/readyz`` answers 503 while the kernels compile)."""
    config = config or ServiceConfig(demo=True)
    svc = Service(config, keys=keys, host=host, metrics=metrics, warm_on_start=warm_on_start)
    app = web.Application(middlewares=[observe_middleware, error_middleware, auth_middleware],
                          client_max_size=config.max_body_bytes)
    app[APP_STATE] = svc
    app[BODY_TIMEOUT] = config.body_timeout_s
    for method, path, handler in routes():
        app.router.add_route(method, path, handler, name=handler.__name__)
    register_console(app, svc)
    watch = CollectorWatch(svc.metrics)

    async def on_startup(app: web.Application) -> None:
        watch.install()
        await svc.start()

    async def on_shutdown(app: web.Application) -> None:
        await svc.stop()
        await svc.close_sockets()

    async def on_cleanup(app: web.Application) -> None:
        watch.uninstall()
        await svc.cleanup()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def make_runner(app: web.Application, config: ServiceConfig) -> web.AppRunner:
    """The runner of a worker's app: no auto-decompression (the service gunzips under its size limit), no
    access log, no signal handling (the worker's own); a connection that has not sent a request's headers
    ``header_timeout_s`` after it opened or got its last answer is closed (aiohttp's keep-alive timeout
    runs until a request's headers are complete)."""
    return web.AppRunner(app, auto_decompress=False, shutdown_timeout=config.shutdown_timeout_s,
                         access_log=None, handle_signals=False, keepalive_timeout=config.header_timeout_s)


async def listen(runner: web.AppRunner, sock: socket.socket, config: ServiceConfig) -> GuardedSite:
    """Start serving ``runner``'s app on ``sock``, at most ``config.max_connections`` connections at once
    (see :mod:`proximity.service.guard`); returns the started site."""
    app = runner.app
    rejected = service_of(app).metrics.rejected.labels("too_many_connections") if APP_STATE in app else None
    site = GuardedSite(runner, sock, config, on_refused=rejected.inc if rejected is not None else lambda: None)
    await site.start()
    return site


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (inheritable, so worker processes can share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


async def serve_forever(config: ServiceConfig, sock: socket.socket, *, keys: KeyRing,
                        on_ready: Callable[[Service], None] | None = None) -> None:
    """Run one worker on ``sock`` until SIGTERM/SIGINT, then shut down gracefully."""
    import signal

    app = create_app(config, keys=keys, warm_on_start=False)
    runner = make_runner(app, config)
    await runner.setup()
    # With other workers on the shared socket (a worker restarted after a crash, or the first ones starting
    # together), a worker takes connections only once it is warm: until then the kernel hands every
    # connection to the others, so no request, /healthz included, waits for this worker's warm-up (the
    # compiler and the cache loads share the interpreter with the event loop: a kill -9 restart once held a
    # /healthz 2.8 s). Alone, it listens first, so /readyz can say 503 "warming up" meanwhile.
    early = config.workers == 1
    if early:
        await listen(runner, sock, config)
    await service_of(app).warm_up()  # /readyz says 503 "warming up" until then; on_ready after it
    # What exists now (modules, fences, campaigns, the engine) lives as long as the worker: move it out of
    # the collector's sight, so a full collection walks only what requests create (measured under load: full
    # collections went from ~80 ms pauses to ~4 ms), and collect the young generation less often (see
    # proximity.service.collector). Done after the warm-up, before it reports ready.
    settle_collector()
    if not early:
        await listen(runner, sock, config)
    if on_ready is not None:
        on_ready(service_of(app))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("worker %d shutting down: no new connections, finishing in-flight batches", os.getpid())
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await runner.cleanup()


__all__ = ["bind_socket", "create_app", "listen", "make_runner", "routes", "serve_forever", "service_of"]
