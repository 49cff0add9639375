"""Rate limits per key and per device: all-or-none charges, RateLimit-* headers (draft-06), a 429 whose
Retry-After agrees with its body, shared through Redis and inside one slot on Redis Cluster."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proximity.service.ratelimit import RateLimiter, RedisRateLimiter
from tests.proximity.test_auth import FakeClock as Clock
from tests.proximity.test_server import INSIDE_A, SDK, fences_file, h, ping  # noqa: F401 (a fixture)
from tests.proximity.test_server import make_client as make_client  # a fixture


def test_a_batch_is_charged_to_every_device_or_to_none() -> None:
    clock = Clock()
    rl = RateLimiter(rate=1.0, burst=2, clock=clock, what="device")
    assert rl.take_all("app", ["a"]).wait == 0.0
    assert rl.take_all("app", ["a"]).remaining == 0.0
    refused = rl.take_all("app", ["b", "a"])  # a is empty: b is not charged either
    assert refused.wait == pytest.approx(1.0) and refused.name == "a" and refused.what == "device"
    assert rl.take_all("app", ["b"]).remaining == 1.0
    assert rl.take_all("other-app", ["a"]).wait == 0.0  # devices' buckets belong to a key
    clock.t += 1.0
    quota = rl.take_all("app", ["a", "b"])
    assert quota.wait == 0.0 and quota.remaining == pytest.approx(0.0) and quota.reset == pytest.approx(2.0)
    assert quota.headers() == {"RateLimit-Limit": "2", "RateLimit-Remaining": "0", "RateLimit-Reset": "2"}
    assert RateLimiter(rate=0).take_all("app", ["a"]) is None  # 0: off


@given(st.lists(st.tuples(st.floats(0, 3), st.sampled_from(["k1", "k2"]), st.sets(st.sampled_from("abcdef"), min_size=1)),
                max_size=60))
def test_buckets_full_again_are_dropped_and_every_answer_stays_the_same(
        steps: list[tuple[float, str, set[str]]]) -> None:
    """A worker forgets the buckets that refilled (as Redis expires them): it keeps those not full again, drops
    those full for a whole refill time, and answers as a limiter that keeps every bucket (the reference below)."""
    clock, rate, burst = Clock(), 2.0, 3.0
    rl = RateLimiter(rate=rate, burst=burst, clock=clock, what="device")
    kept: dict[tuple[str, str], tuple[float, float]] = {}  # the reference: every bucket, forever
    for gap, key, devices in steps:
        clock.t += gap
        members = sorted(devices)
        levels = [min(burst, lv + (clock.t - at) * rate)
                  for lv, at in (kept.get((key, m), (burst, clock.t)) for m in members)]
        ok = all(lv >= 1 for lv in levels)
        for m, lv in zip(members, levels, strict=True):
            kept[(key, m)] = (lv - 1 if ok else lv, clock.t)
        quota = rl.take_all(key, members)
        assert quota is not None and (quota.wait == 0) == ok
        assert quota.remaining == pytest.approx(min(kept[(key, m)][0] for m in members))
        assert set(rl._buckets) <= set(kept)
        not_full = {b for b, (lv, at) in kept.items() if lv + (clock.t - at) * rate < burst - 1e-9}
        assert not_full <= set(rl._buckets)  # a bucket not yet full again is kept
        refilled = [b for b, (lv, at) in kept.items() if at + (burst - lv) / rate <= clock.t - burst / rate]
        assert not set(refilled) & set(rl._buckets)  # full again for a whole refill time: dropped


@given(st.lists(st.tuples(st.floats(0, 2), st.sets(st.sampled_from("abcd"), min_size=1)), max_size=40))
def test_no_device_exceeds_rate_times_time_plus_burst(steps: list[tuple[float, set[str]]]) -> None:
    clock, rate, burst = Clock(), 2.0, 3.0
    rl = RateLimiter(rate=rate, burst=burst, clock=clock)
    allowed = dict.fromkeys("abcd", 0)
    for gap, devices in steps:
        clock.t += gap
        quota = rl.take_all("k", sorted(devices))
        assert quota is not None
        if quota.wait == 0:
            for d in devices:
                allowed[d] += 1
        else:
            assert quota.retry_after >= 1 and quota.headers()["Retry-After"] == str(quota.retry_after)
    elapsed = sum(g for g, _ in steps)
    assert all(n <= burst + rate * elapsed + 1e-9 for n in allowed.values())


async def test_device_limit_over_http_with_headers_and_retry_after(make_client: Any) -> None:
    client = await make_client(rate_limit=100, rate_burst=100, device_rate_limit=0.02, device_rate_burst=2)
    now = time.time()

    async def post(*devices: str) -> Any:
        return await client.post("/v1/pings", json=[ping(d, INSIDE_A, now) for d in devices], headers=h(SDK))

    r = await post("d1")
    assert r.status == 200
    assert (r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]) == ("2", "1")  # the device's: tighter
    assert 1 <= int(r.headers["RateLimit-Reset"]) <= 50
    assert (await post("d1")).status == 200
    r = await post("d2", "d1")
    body = await r.json()
    assert r.status == 429, body
    assert body["device_id"] == "d1" and body["limited"] == "device" and body["field"] == "device_id"
    assert int(r.headers["Retry-After"]) == body["retry_after_s"] >= 1
    assert r.headers["RateLimit-Remaining"] == "0"
    assert (await post("d2")).status == 200  # d2 was not charged for the refused batch: two tokens left
    assert (await post("d2")).status == 200
    assert (await post("d2")).status == 429
    r = await client.get("/v1/fences", headers=h("admin-key-789"))  # not ingest: the key's bucket only
    assert r.status == 200 and r.headers["RateLimit-Limit"] == "100"
    assert "RateLimit-Limit" not in (await client.get("/healthz")).headers  # no key, no limit


async def test_key_limit_429_body_agrees_with_retry_after(make_client: Any) -> None:
    client = await make_client(rate_limit=0.01, rate_burst=1)
    assert (await client.get("/v1/fences", headers=h("admin-key-789"))).status == 200
    r = await client.get("/v1/fences", headers=h("admin-key-789"))
    body = await r.json()
    assert r.status == 429 and body["limited"] == "key"
    assert int(r.headers["Retry-After"]) == body["retry_after_s"] and 1 <= body["retry_after_s"] <= 100
    assert f"retry after {body['retry_after_s']} s" in body["error"]
    assert r.headers["RateLimit-Limit"] == "1" and r.headers["RateLimit-Remaining"] == "0"


async def test_a_scan_is_charged_to_its_observers_not_to_its_gateway(make_client: Any) -> None:
    client = await make_client(rate_limit=100, rate_burst=100, device_rate_limit=0.01, device_rate_burst=1)
    now = time.time()
    key = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1"

    def scan(batch: str, observer: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {"ts": now, "rssi": -60, "key": key}
        if observer:
            row["observer_id"] = observer
        return {"gateway_id": "gw-1", "batch_id": batch, "sent_at": now, "sightings": [row]}

    gw = {"X-API-Key": "gateway-key-456"}
    first = await client.post("/v1/scans", json=scan("s1", "phone-1"), headers=gw)
    assert first.status != 429
    again = await client.post("/v1/scans", json=scan("s2", "phone-1"), headers=gw)
    assert again.status == 429 and (await again.json())["device_id"] == "phone-1"
    for batch in ("s3", "s4", "s5"):  # what the gateway heard itself: its key's bucket only
        assert (await client.post("/v1/scans", json=scan(batch, None), headers=gw)).status != 429


@pytest.mark.redis
async def test_device_buckets_are_shared_by_workers_through_redis(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    one, two = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    try:
        a = RedisRateLimiter(one, redis_prefix, 0.01, 2, what="device")  # a token per 100 s: no race with the
        b = RedisRateLimiter(two, redis_prefix, 0.01, 2, what="device")  # clock on a busy machine
        assert (await a.charge("app", ["d1", "d2"])).wait == 0.0
        quota = await b.charge("app", ["d2"])
        assert quota.wait == 0.0 and 0 <= quota.remaining < 1 and quota.headers()["RateLimit-Remaining"] == "0"
        refused = await a.charge("app", ["d1", "d2"])
        assert refused.wait > 0 and refused.name == "d2"
        assert (await b.charge("app", ["d1"])).wait == 0.0  # d1 was not charged by the refused call
        assert await one.exists(a.key("app", "d1")) and a.key("app", "d1").startswith(f"{redis_prefix}:ratelimit:{{app}}:d:")
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.redis
async def test_device_buckets_of_a_key_share_one_slot_on_redis_cluster(redis_cluster_url: str,
                                                                       redis_prefix: str) -> None:
    from redis.crc import key_slot

    from proximity.service.backends import Backends
    from proximity.service.config import ServiceConfig

    backends = Backends.from_config(ServiceConfig(redis=redis_cluster_url, redis_prefix=redis_prefix,
                                                  device_rate_limit=0.01, device_rate_burst=3))
    try:
        limiter = backends.device_limiter
        assert isinstance(limiter, RedisRateLimiter) and backends.cluster
        devices = [f"phone-{i}" for i in range(40)]
        assert len({key_slot(limiter.key("app", d).encode()) for d in devices}) == 1
        assert (await limiter.charge("app", devices)).wait == 0.0
        # the buckets are in the cluster (not the worker's local fallback): 2 tokens left in each
        for d in devices[:3]:
            assert 2 <= float(await backends.aioredis.hget(limiter.key("app", d), "tokens")) < 3
        key = backends.rate_limiter
        assert isinstance(key, RedisRateLimiter) and (await key.charge("app")).wait == 0.0
    finally:
        backends.close()
        await backends.aclose()


def test_the_devices_a_batch_is_charged_to() -> None:
    from proximity.service.bodies import devices_of

    rows: list[Any] = [{"device_id": "a"}, [1], {"device_id": {"x": 1}}, {"device_id": "b"}, {"device_id": "a"},
                       "s", {}, {"device_id": ""}]
    assert devices_of(rows, "device_id") == ["a", "b"]  # bad rows are refused, not charged
    assert devices_of([{"observer_id": "p"}, {"ts": 1}, {"observer_id": "p"}], "observer_id") == ["p"]
