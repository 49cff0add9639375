"""AsyncRedisOutbox on a real Redis and a real cluster: the same outbox as RedisOutbox (either can put,
the other claim), fenced claims, and a delivery loop that keeps the event loop free while Redis
black-holes packets."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from _faultproxy import FaultProxy

from campaigns import AsyncRedisOutbox, Offer, RedisOutbox, StoreUnavailable
from campaigns.dispatch import DeliveryWorker, Subscribers

pytestmark = pytest.mark.redis


def offer(i: int) -> Offer:
    return Offer(offer_id=f"of_{i:04d}", campaign_id="c", device_id=f"d{i}", fence_id="f", ts=1000.0 + i, title="t")


@pytest.fixture(params=["redis", "redis-cluster"])
def where(request: pytest.FixtureRequest) -> tuple[str, str]:
    if request.param == "redis-cluster":
        return request.getfixturevalue("redis_cluster_url"), f"pxtest-{uuid.uuid4().hex[:12]}"
    return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")


async def test_async_and_sync_outboxes_share_one_store_with_fenced_claims(where: tuple[str, str]) -> None:
    url, prefix = where
    sync = RedisOutbox(url, prefix, claim_idle_s=0.3)
    box = await AsyncRedisOutbox.connect(url, prefix, claim_idle_s=0.3)
    try:
        assert box.shards == sync.shards
        for i in range(6):
            assert sync.put(offer(i))
        assert not await box.put(offer(0))  # one store: the id is known
        first = await box.claim("w1", 10)
        assert sorted(e.offer.offer_id for e in first) == [offer(i).offer_id for i in range(6)]
        assert all(e.deliveries == 1 and e.consumer == "w1" for e in first)
        assert await box.renew(first) == [True] * 6
        await asyncio.sleep(0.4)  # w1 stalls past claim_idle_s: w2 takes its claims over
        second = await box.claim("w2", 10)
        assert sorted(e.offer.offer_id for e in second) == sorted(e.offer.offer_id for e in first)
        assert all(e.deliveries == 2 for e in second)
        assert await box.renew(first) == [False] * 6  # w1's leases are gone: it must not deliver
        assert await box.renew(second) == [True] * 6
        assert await box.ack(second[0]) and not await box.ack(first[0])  # one delivered mark per offer
        assert await box.is_delivered(second[0].offer.offer_id) and sync.is_delivered(second[0].offer.offer_id)
        await box.dead(second[1], "refused", 1)
        assert await box.pending() == 4 == sync.pending()
        assert [d.offer for d in sync.dead_letters()] == [second[1].offer]
    finally:
        await box.aclose()
        sync.close()


async def test_the_delivery_loop_never_blocks_the_event_loop_on_a_black_holed_redis(redis_url: str,
                                                                                     redis_prefix: str) -> None:
    """Both outboxes (the blocking one is called in a thread by the worker) behind a black hole: each pass
    ends with StoreUnavailable after the client's timeout, and a 10 ms ticker keeps running meanwhile."""
    from redis.connection import parse_url

    target = parse_url(redis_url)
    with FaultProxy(target.get("host", "127.0.0.1"), int(target.get("port", 6379))) as proxy:
        url = proxy.url(int(target.get("db", 0)))
        sync = RedisOutbox(url, redis_prefix, timeout_s=0.5)
        box = await AsyncRedisOutbox.connect(url, redis_prefix, timeout_s=0.5)
        sync.put(offer(1))
        proxy.blackhole()
        try:
            for outbox in (sync, box):
                worker = DeliveryWorker(outbox, Subscribers(), consumer="w")
                ticks = [0]
                stop = asyncio.Event()

                async def ticker(ticks: list[int] = ticks, stop: asyncio.Event = stop) -> None:
                    while not stop.is_set():
                        await asyncio.sleep(0.01)
                        ticks[0] += 1

                task = asyncio.create_task(ticker())
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as err:
                    await worker.run_once()
                waited = time.monotonic() - started
                stop.set()
                await task
                assert "shared state unavailable" in str(err.value) and "127.0.0.1" not in str(err.value)
                # the pass waited on Redis (at least one client timeout) while the loop kept ticking
                assert waited >= 0.5 and ticks[0] >= 10, (type(outbox).__name__, waited, ticks)
        finally:
            proxy.restore()
            await box.aclose()
            sync.close()


