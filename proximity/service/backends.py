"""Every adapter that is "in memory, or in Redis" is chosen here, once, from the config.

Without ``redis`` in the config everything lives in this process (the embedded
default). With it, one synchronous client (used on the engine thread: presence
state, caps, outbox) and one asyncio client (used on the event loop: idempotency,
config versions, rate limits, the live feed's pub/sub) serve every adapter.
Each Redis adapter translates its client's "server away" errors into
:class:`proximity.errors.StoreUnavailable` itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from campaigns import Limiter, Outbox
from proximity.service.auth import RateLimiter, RedisRateLimiter
from proximity.service.config import ServiceConfig
from proximity.service.idempotency import IdempotencyStore, MemoryIdempotency, RedisIdempotency
from proximity.service.reload import ConfigChannel, MemoryChannel, RedisChannel
from proximity.store import MemoryStore, RedisStore, StateStore

# client time-outs: a Redis that does not answer is an outage (503 + Retry-After), not a hung worker
_TIMEOUT_S, _CONNECT_S = 5.0, 2.0


@dataclass
class Backends:
    """The adapters of one worker and the (at most two) Redis clients they share."""

    store: StateStore
    limiter: Limiter
    outbox: Outbox
    idempotency: IdempotencyStore
    channel: ConfigChannel
    rate_limiter: RateLimiter | RedisRateLimiter
    counters: Any = None  # campaigns.counters.ReportCounters: exposures and conversions per campaign
    pending: Any = None  # campaigns.live.PendingStore: exposures waiting for a visit, per device
    redis: Any = None  # redis.Redis: the engine thread's client
    aioredis: Any = None  # redis.asyncio.Redis: the event loop's client (also the live feed's pub/sub)

    @classmethod
    def from_config(cls, config: ServiceConfig) -> Backends:
        from campaigns import MemoryLimiter, MemoryOutbox
        from campaigns.counters import MemoryCounters
        from campaigns.live import MemoryPending

        if not config.redis:
            return cls(MemoryStore(), MemoryLimiter(), MemoryOutbox(), MemoryIdempotency(config.idempotency_ttl_s),
                       MemoryChannel(), RateLimiter(config.rate_limit, config.rate_burst), MemoryCounters(),
                       MemoryPending())
        import redis
        import redis.asyncio as aioredis

        from campaigns import RedisLimiter, RedisOutbox
        from campaigns.redis_counters import RedisCounters, RedisPending

        prefix = config.redis_prefix
        sync = redis.Redis.from_url(config.redis, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_CONNECT_S)
        aio = aioredis.Redis.from_url(config.redis, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_CONNECT_S)
        return cls(
            store=RedisStore(sync, prefix=prefix),
            limiter=RedisLimiter(sync, prefix=prefix),
            outbox=RedisOutbox(sync, prefix=prefix),
            idempotency=RedisIdempotency(aio, prefix, config.idempotency_ttl_s),
            channel=RedisChannel(aio, prefix),
            rate_limiter=RedisRateLimiter(aio, prefix, config.rate_limit, config.rate_burst),
            counters=RedisCounters(sync, prefix=prefix),
            pending=RedisPending(sync, prefix=prefix),
            redis=sync,
            aioredis=aio,
        )

    def close(self) -> None:
        """The engine side: the state store and the synchronous client."""
        with contextlib.suppress(Exception):
            self.store.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.close()

    async def aclose(self) -> None:
        """The event loop side: the idempotency store and the asyncio client."""
        with contextlib.suppress(Exception):
            await self.idempotency.close()
        if self.aioredis is not None:
            with contextlib.suppress(Exception):
                await self.aioredis.aclose()


__all__ = ["Backends"]
