"""Every adapter that is "in memory, or in Redis" is chosen here, once, from the config.

Without ``redis`` in the config everything lives in this process (the embedded
default). With it, one synchronous client (used on the engine thread: presence
state, caps, outbox) and one asyncio client (used on the event loop: idempotency,
config versions, rate limits, the live feed's pub/sub) serve every adapter.
A Redis Cluster node's URL (or ``redis_cluster: true``) makes both clients cluster
clients and every adapter runs its cluster protocol: each script inside one hash
slot, config and feed messages on sharded pub/sub.
Each Redis adapter translates its client's "server away" errors into
:class:`proximity.errors.StoreUnavailable` itself.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from campaigns import Limiter, Outbox
from proximity.errors import StoreUnavailable
from proximity.service.config import ServiceConfig
from proximity.service.idempotency import IdempotencyStore, MemoryIdempotency, RedisIdempotency
from proximity.service.ratelimit import RateLimiter, RedisRateLimiter, limiters
from proximity.service.reload import ConfigChannel, MemoryChannel, RedisChannel
from proximity.store import MemoryStore, RedisStore, StateStore

log = logging.getLogger("proximity.serve")

# client time-outs: a Redis that does not answer is an outage (503 + Retry-After), not a hung worker
_TIMEOUT_S, _CONNECT_S = 5.0, 2.0


def _clients(config: ServiceConfig) -> tuple[Any, Any, bool]:
    """The engine thread's client, the event loop's client and whether the cluster protocol runs.

    A cluster node's URL gives ``RedisCluster`` clients (sync and asyncio, seeded with that node; they
    learn the other nodes and follow MOVED/ASK); ``redis_cluster: true`` runs the cluster protocol on
    a single Redis too; ``redis_cluster: false`` refuses a cluster node.
    """
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster
    from redis.connection import parse_url

    from proxbase.redis_cluster import cluster_retry
    from proximity._redis.cluster import connect

    url = str(config.redis)
    kw: dict[str, Any] = {"socket_timeout": _TIMEOUT_S, "socket_connect_timeout": _CONNECT_S}
    if config.redis_cluster is False:
        return (redis.Redis.from_url(url, **kw), aioredis.Redis.from_url(url, **kw), False)
    try:
        sync = connect(url, True, **kw)  # asks the server whether it is a cluster node
    except StoreUnavailable:
        if config.redis_cluster:
            raise
        # Redis away at start: a single Redis is assumed (the worker answers 503 until it is back)
        log.warning("Redis did not answer at start: assuming a single Redis, not a cluster")
        sync = redis.Redis.from_url(url, **kw)
    if not isinstance(sync, RedisCluster):
        return sync, aioredis.Redis.from_url(url, **kw), bool(config.redis_cluster)
    options = parse_url(url)
    options.pop("db", None)
    host, port = options.pop("host", "127.0.0.1"), int(options.pop("port", 6379))
    aio = AsyncRedisCluster(startup_nodes=[AsyncClusterNode(host, port)], retry=cluster_retry(asyncio=True),
                            **options, **kw)  # initialised on use
    return sync, aio, True


@dataclass
class Backends:
    """The adapters of one worker and the (at most two) Redis clients they share."""

    store: StateStore
    limiter: Limiter
    outbox: Outbox
    idempotency: IdempotencyStore
    channel: ConfigChannel
    rate_limiter: RateLimiter | RedisRateLimiter  # per key
    counters: Any = None  # campaigns.counters.ReportCounters: exposures and conversions per campaign
    pending: Any = None  # campaigns.live.PendingStore: exposures waiting for a visit, per device
    redis: Any = None  # redis.Redis: the engine thread's client
    aioredis: Any = None  # redis.asyncio.Redis: the event loop's client (also the live feed's pub/sub)
    cluster: bool = False  # every script inside one hash slot; pub/sub sharded (SPUBLISH/SSUBSCRIBE)
    device_limiter: RateLimiter | RedisRateLimiter | None = None  # per device of a key (ingest batches)
    offers: Any = None  # campaigns.redis_offers.RedisOffers: caps and outbox of many decisions in one round trip

    @classmethod
    def from_config(cls, config: ServiceConfig) -> Backends:
        from campaigns import MemoryLimiter, MemoryOutbox
        from campaigns.counters import MemoryCounters
        from campaigns.live import MemoryPending

        if not config.redis:
            rates = limiters(config)
            return cls(MemoryStore(), MemoryLimiter(), MemoryOutbox(), MemoryIdempotency(config.idempotency_ttl_s),
                       MemoryChannel(), rates["key"], MemoryCounters(), MemoryPending(),
                       device_limiter=rates["device"])
        sync, aio, cluster = _clients(config)
        from campaigns import RedisLimiter, RedisOutbox
        from campaigns.redis_counters import RedisCounters, RedisPending
        from campaigns.redis_offers import RedisOffers

        prefix = config.redis_prefix
        rates = limiters(config, aio)
        limiter, outbox = RedisLimiter(sync, prefix=prefix, cluster=cluster), RedisOutbox(sync, prefix=prefix)
        return cls(
            store=RedisStore(sync, prefix=prefix, cluster=cluster, groups=config.redis_groups),
            limiter=limiter,
            outbox=outbox,
            offers=RedisOffers.of(limiter, outbox),
            idempotency=RedisIdempotency(aio, prefix, config.idempotency_ttl_s),
            channel=RedisChannel(aio, prefix, cluster=cluster),
            rate_limiter=rates["key"],
            device_limiter=rates["device"],
            counters=RedisCounters(sync, prefix=prefix),
            pending=RedisPending(sync, prefix=prefix),
            redis=sync,
            aioredis=aio,
            cluster=cluster,
        )

    def close(self) -> None:
        """The engine side: the state store and the synchronous client."""
        with contextlib.suppress(Exception):
            self.store.close()
        if self.redis is not None:
            from proximity._redis.cluster import close

            with contextlib.suppress(Exception):
                close(self.redis)

    async def aclose(self) -> None:
        """The event loop side: the idempotency store and the asyncio client."""
        with contextlib.suppress(Exception):
            await self.idempotency.close()
        if self.aioredis is not None:
            with contextlib.suppress(Exception):
                await self.aioredis.aclose()


__all__ = ["Backends"]
