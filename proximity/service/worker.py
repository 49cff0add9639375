"""What one worker holds (config, keys, metrics, backends, the engine host, the feed, reload, the loops)
and its lifecycle; handlers reach it with :func:`service_of`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from proximity import __version__
from proximity.service.auth import ApiKey, KeyRing
from proximity.service.coalesce import Coalescer
from proximity.service.config import ServiceConfig
from proximity.service.feed import FeedBus, FeedHub, close_sockets
from proximity.service.host import EngineHost
from proximity.service.loops import Loops
from proximity.service.metrics import ServiceMetrics
from proximity.service.ratelimit import Quota
from proximity.service.reload import KINDS, ConfigDoc, Reloader, media_type_for
from proximity.service.render import Rendered, offer_message

log = logging.getLogger("proximity.service")


class Service:
    """One worker: config, keys, limits, metrics, the engine host, the feed, reload and the loops."""

    def __init__(self, config: ServiceConfig, *, keys: KeyRing | None = None, host: EngineHost | None = None,
                 metrics: ServiceMetrics | None = None, warm_on_start: bool = True) -> None:
        self.config = config
        self.warm_on_start = warm_on_start
        self.metrics = metrics or ServiceMetrics()
        self.metrics.info.labels(str(os.getpid()), __version__).set(1)
        self.keys = keys if keys is not None else KeyRing()
        self.host = host if host is not None else EngineHost(config, self.metrics)
        self.backends = self.host.backends
        self.idempotency = self.backends.idempotency
        self.rate_limiter = self.backends.rate_limiter
        self.device_limiter = self.backends.device_limiter
        self.coalescer = (Coalescer(self.host, config.coalesce_max_pings, self.metrics,
                                    config.coalesce_window_ms / 1000) if config.coalesce
                          else None)
        self.hub = FeedHub(config.feed_queue, self.metrics)
        self.bus = FeedBus(self.hub, self.backends.aioredis, config.redis_prefix,
                           cluster=self.backends.cluster)
        self.reloader = Reloader(self.backends.channel, self.host.validate, self._apply,
                                 interval=config.reload_interval_s,
                                 on_error=lambda kind, exc: self.metrics.reloads.labels(kind, "error").inc())
        self.loops = Loops(config, self.host, self.metrics, self.publish, self.feed_offer)
        self.ready = False
        self.not_ready_reason = "starting"
        self.sockets: set[web.WebSocketResponse] = set()
        #: called with each offer's feed message as it leaves the outbox (the console counts deliveries)
        self.offer_listeners: list[Callable[[Mapping[str, Any]], None]] = []

    async def _apply(self, doc: ConfigDoc, parsed: Any) -> None:
        await self.host.run(self.host.apply, doc.kind, parsed)
        self.metrics.reloads.labels(doc.kind, "ok").inc()
        self.metrics.config_version.labels(doc.kind).set(doc.version)

    # -- lifecycle

    async def start(self) -> None:
        """Load the configuration (files, or the latest in Redis), then start the background tasks."""
        paths = self.config.resolved_paths()
        for kind in KINDS:
            path = paths.get(kind)
            if path is not None:
                text = path.read_text(encoding="utf-8")
                await self.reloader.submit(kind, text, media_type_for(path), str(path))
                self.reloader.watch(kind, path)
                self.reloader.watchers[kind].prime(text)
            else:
                await self.reloader.refresh(kind)
        self.bus.start()
        self.reloader.start()
        self.loops.start()
        if self.warm_on_start:
            await self.warm_up()
        else:
            self.not_ready_reason = "warming up: compiling the kernels (first run only)"

    async def warm_up(self) -> float:
        """Compile (or load from the cache) the kernels a request runs, then report ready: on a cold cache the
        first request would otherwise wait for the compiler. Requests that come meanwhile wait their turn."""
        log.info("worker %d: warming up the kernels", os.getpid())
        seconds = float(await self.host.run(self.host.warm_up))
        log.info("worker %d: kernels ready in %.1f s", os.getpid(), seconds)
        self.ready = True
        self.not_ready_reason = ""
        return seconds

    async def stop(self) -> None:
        self.ready = False
        self.not_ready_reason = "shutting down"
        await self.loops.stop()
        await self.reloader.stop()
        await self.bus.stop()

    async def close_sockets(self) -> None:
        await close_sockets(self.hub, self.sockets)

    async def cleanup(self) -> None:
        """After in-flight requests finished: flush the outbox, stop the engine thread, close Redis."""
        try:
            await asyncio.wait_for(self.loops.flush_outbox(), self.config.shutdown_timeout_s)
        except Exception as exc:
            log.warning("outbox flush at shutdown did not finish: %s", exc)
        await self.loops.close()
        await self.host.close()
        await self.backends.aclose()

    async def flush_outbox(self) -> None:
        await self.loops.flush_outbox()

    # -- results to metrics and the live feed

    async def publish(self, rendered: Rendered) -> None:
        """Count a result's events and offers, and send its events to the live feed (offers reach the feed
        when the delivery loop takes them out of the outbox)."""
        for e in rendered.result.events:
            self.metrics.events.labels(e.kind, e.source).inc()
        for o in rendered.result.offers:
            self.metrics.offers.labels(o.campaign_id).inc()
        await self.bus.publish(rendered.feed())

    async def feed_offer(self, offer: Any) -> None:
        message = offer_message(offer)
        for listener in self.offer_listeners:
            listener(message)
        await self.bus.publish([message])


APP_STATE: web.AppKey[Service] = web.AppKey("proximity_service", Service)
API_KEY: web.RequestKey[ApiKey] = web.RequestKey("proximity_api_key", ApiKey)
#: the rate-limit state a request's answer reports (``RateLimit-*`` headers)
RATE_QUOTA: web.RequestKey[Quota] = web.RequestKey("proximity_rate_quota", Quota)


def service_of(where: web.Request | web.Application) -> Service:
    """The worker of a request (or of an app)."""
    app = where.app if isinstance(where, web.Request) else where
    return app[APP_STATE]


__all__ = ["API_KEY", "APP_STATE", "RATE_QUOTA", "Service", "service_of"]
