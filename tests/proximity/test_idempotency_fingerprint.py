"""A reused batch_id with another body is refused (422), never answered with the first body's response:
the body's fingerprint is kept with the idempotency record, in memory and in Redis (pending and done)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from proximity.service.idempotency import MemoryIdempotency, RedisIdempotency, batch_key, fingerprint
from tests.proximity.test_server import INSIDE_A, SDK, fences_file, h, ping  # noqa: F401 (a fixture)
from tests.proximity.test_server import make_client as make_client  # a fixture


def test_fingerprint_is_of_the_document_not_its_spelling() -> None:
    a = {"batch_id": "b", "pings": [{"lon": 1.5, "lat": 2, "device_id": "d"}]}
    b = {"pings": [{"device_id": "d", "lat": 2, "lon": 1.5}], "batch_id": "b"}
    assert fingerprint(a) == fingerprint(b)  # keys in another order: the same body
    assert fingerprint(a) != fingerprint({**a, "pings": [{"lon": 1.5, "lat": 2.5, "device_id": "d"}]})
    assert len(fingerprint(a)) == 32 and int(fingerprint(a), 16) >= 0
    assert fingerprint({"n": 10**30}) != fingerprint({"n": 10**30 + 1})  # beyond 64 bits: still exact


async def _store_contract(store: Any) -> None:
    one, two = "a" * 32, "b" * 32
    claim = await store.claim("k1", one)
    assert claim.state == "new"
    pending = await store.claim("k1", two)
    assert (pending.state, pending.fingerprint) == ("pending", one)
    assert await store.renew("k1", claim.token)
    assert await store.complete("k1", claim.token, 200, b'{"ok":true}')
    done = await store.claim("k1", two)
    assert (done.state, done.stored, done.fingerprint) == ("done", (200, b'{"ok":true}'), one)
    # a body that starts like a fingerprint is kept whole
    c2 = await store.claim("k2", one)
    assert await store.complete("k2", c2.token, 201, b"0123456789abcdef0123456789abcdef tail")
    assert (await store.claim("k2", one)).stored == (201, b"0123456789abcdef0123456789abcdef tail")
    # released: a new claim, with the new body's fingerprint
    c3 = await store.claim("k3", one)
    await store.release("k3", c3.token)
    assert (await store.claim("k3", two)).state == "new"
    assert (await store.claim("k3", one)).fingerprint == two


async def test_memory_store_keeps_the_fingerprint_pending_and_done() -> None:
    await _store_contract(MemoryIdempotency(ttl=60))


@pytest.mark.redis
async def test_redis_store_keeps_the_fingerprint_pending_and_done(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        store = RedisIdempotency(client, redis_prefix, ttl=60)
        await _store_contract(store)
        raw = await client.get(f"{redis_prefix}:idem:k1")
        assert raw == b"200 " + b"a" * 32 + b' {"ok":true}'  # <status> <fingerprint> <body>
        await client.set(f"{redis_prefix}:idem:old", b'200 {"old":1}')  # a record of the previous format
        old = await store.claim("old", "c" * 32)
        assert (old.state, old.stored, old.fingerprint) == ("done", (200, b'{"old":1}'), "")
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_cluster_store_keeps_the_fingerprint(redis_cluster_url: str, redis_prefix: str) -> None:
    from proximity.service.backends import Backends
    from proximity.service.config import ServiceConfig

    backends = Backends.from_config(ServiceConfig(redis=redis_cluster_url, redis_prefix=redis_prefix))
    try:
        assert backends.cluster
        await _store_contract(backends.idempotency)
    finally:
        backends.close()
        await backends.aclose()


async def _reuse(client: Any) -> None:
    now = time.time()
    first = {"batch_id": "reused-1", "pings": [ping("fp-1", INSIDE_A, now)]}
    r1 = await client.post("/v1/pings", json=first, headers=h(SDK))
    assert r1.status == 200
    same = await client.post("/v1/pings", data=b" " + json.dumps(first, indent=2).encode(),
                             headers=h(SDK, **{"Content-Type": "application/json"}))
    assert same.status == 200 and same.headers.get("Idempotent-Replay") == "true"  # the same body: a replay
    other = {"batch_id": "reused-1", "pings": [ping("fp-2", INSIDE_A, now)]}
    r2 = await client.post("/v1/pings", json=other, headers=h(SDK))
    body = await r2.json()
    assert r2.status == 422, body
    assert "Idempotent-Replay" not in r2.headers
    assert body["field"] == "batch_id" and "reused-1" in body["error"] and "different body" in body["error"]
    state = await (await client.get("/v1/devices/fp-2", headers=h("admin-key-789"))).json()
    assert "store-a" not in str(state)  # the second body was not processed either


async def test_reused_batch_id_with_another_body_is_422_in_memory(make_client: Any) -> None:
    await _reuse(await make_client())


@pytest.mark.redis
async def test_reused_batch_id_with_another_body_is_422_on_redis(aiohttp_client, tmp_path, redis_url: str,
                                                                  redis_prefix: str) -> None:
    from aiohttp.test_utils import TestServer

    from proximity.service import create_app
    from proximity.service.config import ServiceConfig
    from tests.proximity.test_server import KEYS, STORE_A, fences_doc

    fences = tmp_path / "fences.geojson"
    fences.write_text(fences_doc(STORE_A))
    cfg = ServiceConfig(fences=str(fences), redis=redis_url, redis_prefix=redis_prefix, rate_limit=0,
                        engine={"profile": "crossing"})
    server = TestServer(create_app(cfg, keys=KEYS))
    await server.start_server(auto_decompress=False)
    await _reuse(await aiohttp_client(server))


async def test_reused_batch_id_while_the_first_is_pending_is_422() -> None:
    from proximity.service.errors import ApiError
    from proximity.service.idempotency import idempotent
    from proximity.service.metrics import ServiceMetrics

    store, metrics = MemoryIdempotency(ttl=60), ServiceMetrics()
    claim = await store.claim(batch_key("s", "b1"), "a" * 32)
    assert claim.state == "new"

    async def work(key: str | None) -> Any:
        raise AssertionError("never runs")

    with pytest.raises(ApiError) as same:
        await idempotent(store, metrics, "s", "b1", work, "a" * 32)
    assert same.value.status == 409  # the same body: still being processed
    with pytest.raises(ApiError) as other:
        await idempotent(store, metrics, "s", "b1", work, "b" * 32)
    assert other.value.status == 422 and other.value.body["field"] == "batch_id"


@pytest.mark.redis
async def test_a_stuck_batch_stops_renewing_its_claim_so_a_retry_takes_it_over(redis_url: str,
                                                                               redis_prefix: str) -> None:
    """A batch whose work hangs keeps its lease only ``max_hold_s``; then a retry is processed afresh (not
    answered 409 for as long as the first hangs), and the stuck request cannot overwrite the retry's record."""
    import asyncio

    import redis.asyncio as aioredis
    from aiohttp import web

    from proximity.service.idempotency import idempotent
    from proximity.service.metrics import ServiceMetrics

    client = aioredis.Redis.from_url(redis_url)
    store = RedisIdempotency(client, redis_prefix, ttl=60, lease_s=0.2)
    release = asyncio.Event()

    async def stuck(key: str | None) -> web.Response:
        await release.wait()
        return web.json_response({"try": "first"})

    async def retry(key: str | None) -> web.Response:
        return web.json_response({"try": "retry"})

    metrics = ServiceMetrics()
    try:
        first = asyncio.create_task(idempotent(store, metrics, "s", "b1", stuck, "f" * 32, max_hold_s=0.4))
        await asyncio.sleep(0.1)
        assert (await store.claim(batch_key("s", "b1"), "f" * 32)).state == "pending"  # held while renewed
        answers = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                answers.append(await idempotent(store, metrics, "s", "b1", retry, "f" * 32))
                break
            except Exception as exc:  # the 409 while the first still holds its lease
                assert getattr(exc, "status", None) == 409, exc
                await asyncio.sleep(0.1)
        assert answers and json.loads(answers[0].body) == {"try": "retry"}
        release.set()
        assert json.loads((await first).body) == {"try": "first"}  # the stuck request still answers its client
        done = await store.claim(batch_key("s", "b1"), "f" * 32)
        assert done.state == "done" and json.loads(done.stored[1]) == {"try": "retry"}  # not overwritten
    finally:
        release.set()
        await client.aclose()
