"""Several workers on one real Redis: shared presence, idempotency, config reload, live feed; Redis away -> 503."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from aiohttp.test_utils import TestServer

from proximity.service import create_app
from proximity.service.config import ServiceConfig
from proximity.service.worker import APP_STATE
from tests.proximity.test_server import (
    ADMIN,
    INSIDE_A,
    INSIDE_B,
    KEYS,
    SDK,
    STORE_A,
    STORE_B,
    fences_doc,
    h,
    ping,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def fences_file(tmp_path: Path) -> Path:
    p = tmp_path / "fences.geojson"
    p.write_text(fences_doc(STORE_A))
    return p


@pytest.fixture
def make_worker(aiohttp_client, fences_file: Path, redis_url: str, redis_prefix: str):
    async def make(url: str | None = None, **overrides: Any):
        # one ping enters and one ping exits: these tests pin the crossing profile's behaviour over HTTP
        cfg = ServiceConfig(**{"fences": str(fences_file), "redis": url or redis_url, "redis_prefix": redis_prefix,
                               "reload_interval_s": 0.2, "rate_limit": 0, "engine": {"profile": "crossing"},
                               **overrides})
        server = TestServer(create_app(cfg, keys=KEYS))
        await server.start_server(auto_decompress=False)
        return await aiohttp_client(server)

    return make


async def test_presence_is_shared_no_duplicate_enter(make_worker) -> None:
    a, b = await make_worker(), await make_worker()
    now = time.time()
    ra = await (await a.post("/v1/pings", json=[ping("shared-1", INSIDE_A, now - 20)], headers=h(SDK))).json()
    rb = await (await b.post("/v1/pings", json=[ping("shared-1", INSIDE_A, now - 10)], headers=h(SDK))).json()
    assert [e["kind"] for e in ra["devices"]["shared-1"]["events"]] == ["enter"]
    assert "shared-1" not in rb["devices"]  # already inside, whichever worker the ping lands on
    state = await (await b.get("/v1/devices/shared-1", headers=h(ADMIN))).json()
    assert "store-a" in str(state)
    await a.delete("/v1/devices/shared-1", headers=h(ADMIN))
    state = await (await b.get("/v1/devices/shared-1", headers=h(ADMIN))).json()
    assert "store-a" not in str(state)


async def test_batch_id_replayed_by_another_worker(make_worker) -> None:
    a, b = await make_worker(), await make_worker()
    doc = {"batch_id": "retry-me", "pings": [ping("idem-r", INSIDE_A, time.time())]}
    r1 = await a.post("/v1/pings", json=doc, headers=h(SDK))
    body1 = await r1.read()
    r2 = await b.post("/v1/pings", json=doc, headers=h(SDK))
    assert r2.headers.get("Idempotent-Replay") == "true"
    assert await r2.read() == body1
    metrics = await (await b.get("/metrics")).text()
    assert 'proximity_pings_total{outcome="accepted"}' not in metrics  # b processed nothing


async def test_admin_put_reaches_every_worker(make_worker) -> None:
    a, b = await make_worker(), await make_worker()
    r = await a.put("/v1/fences", data=fences_doc(STORE_A, STORE_B), headers=h(ADMIN))
    assert r.status == 200 and (await r.json())["version"] == 2
    for _ in range(50):
        r = await b.get("/v1/fences", headers=h(ADMIN))
        if r.headers["X-Config-Version"] == "2":
            break
        await asyncio.sleep(0.05)
    assert r.headers["X-Config-Version"] == "2"
    r = await b.post("/v1/pings", json=[ping("on-b", INSIDE_B, time.time())], headers=h(SDK))
    assert (await r.json())["devices"]["on-b"]["events"][0]["fence_id"] == "store-b"
    # a bad PUT on b changes nothing anywhere
    r = await b.put("/v1/fences", data=b'{"type": "FeatureCollection"}', headers=h(ADMIN))
    assert r.status == 400
    await asyncio.sleep(0.3)
    assert (await a.get("/v1/fences", headers=h(ADMIN))).headers["X-Config-Version"] == "2"


async def test_live_feed_sees_events_of_every_worker(make_worker) -> None:
    a, b = await make_worker(), await make_worker()
    ws = await b.ws_connect("/v1/events?kind=enter", headers=h(ADMIN))
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await asyncio.sleep(0.2)  # b's subscription to the feed channel is up
    await a.post("/v1/pings", json=[ping("via-a", INSIDE_A, time.time())], headers=h(SDK))
    msg = await ws.receive_json(timeout=5)
    assert (msg["type"], msg["kind"], msg["device_id"]) == ("event", "enter", "via-a")
    await ws.close()


async def test_positions_are_made_only_while_a_console_of_some_worker_watches(make_worker) -> None:
    a, b = await make_worker(), await make_worker()
    bus_a = a.server.app[APP_STATE].bus
    await asyncio.sleep(0.3)  # a's first look at the watch keys
    assert not bus_a.watching("positions")  # no console anywhere: a keeps no positions
    await a.post("/v1/pings", json=[ping("unseen", INSIDE_A, time.time() - 1)], headers=h(SDK))
    ws = await b.ws_connect("/v1/events?kind=positions", headers=h(ADMIN))
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    deadline = time.monotonic() + 5
    while not bus_a.watching("positions") and time.monotonic() < deadline:  # b's announcement reaches a
        await asyncio.sleep(0.01)
    assert bus_a.watching("positions")
    await a.post("/v1/pings", json=[ping("seen-via-a", INSIDE_A, time.time())], headers=h(SDK))
    msg = await ws.receive_json(timeout=5)
    assert msg["type"] == "positions" and [d[0] for d in msg["devices"]] == ["seen-via-a"]
    await ws.close()


async def test_what_one_turn_publishes_goes_in_one_message_in_order(redis_url: str, redis_prefix: str) -> None:
    import json

    import redis.asyncio as aioredis

    from proximity.service.feed import FeedBus, FeedHub

    client, listener = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    bus = FeedBus(FeedHub(), client, redis_prefix)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(bus.channel)
        assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
        for n in range(3):  # e.g. a delivery pass's offers
            await bus.publish([{"type": "offer", "n": n}])
        await bus.publish([{"type": "event", "n": 3}, {"type": "event", "n": 4}])
        got = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)
            if msg is not None:
                got.append([m["n"] for m in json.loads(msg["data"])])
        assert got == [[0, 1, 2, 3, 4]]
    finally:
        await bus.stop()
        await pubsub.aclose()
        await client.aclose()
        await listener.aclose()


class TcpProxy:
    """A loopback TCP proxy to Redis, on its own thread, that the test can cut and restore.

    It keeps its listening port for its whole life (a cut drops every open
    connection and refuses new ones), so no other process can take the port
    between a cut and the restore.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.down = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _start(self) -> None:
        self.down = False
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        self.down = True
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.writers.clear()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self.loop).result(10)

    def close(self) -> None:
        async def drain() -> None:
            if self.server is not None:
                self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def test_redis_away_gives_503_with_retry_after_and_nothing_half_applied(make_worker, redis_url: str) -> None:
    u = urlparse(redis_url)
    proxy = TcpProxy(u.hostname or "127.0.0.1", u.port or 6379)
    proxy.start()
    try:
        await _outage(proxy, make_worker, u)
    finally:
        proxy.close()


async def _outage(proxy: TcpProxy, make_worker: Any, u: Any) -> None:
    client = await make_worker(url=f"redis://127.0.0.1:{proxy.port}{u.path or '/0'}")
    now = time.time()
    r = await client.post("/v1/pings", json=[ping("outage", INSIDE_A, now - 30)], headers=h(SDK))
    assert r.status == 200
    proxy.cut()
    r = await client.post("/v1/pings", json={"batch_id": "during-outage", "pings": [ping("outage", INSIDE_B, now - 20)]},
                          headers=h(SDK))
    assert r.status == 503, await r.text()
    assert int(r.headers["Retry-After"]) >= 1 and "retry" in (await r.json())["error"]
    r = await client.post("/v1/pings", json=[ping("outage", INSIDE_B, now - 20)], headers=h(SDK))
    assert r.status == 503
    r = await client.get("/readyz")
    assert r.status == 503 and "redis" in (await r.json())["error"]
    for method, path, data in (("PUT", "/v1/fences", fences_doc(STORE_A, STORE_B)), ("DELETE", "/v1/devices/outage", ""),
                               ("GET", "/v1/devices/outage", "")):
        r = await client.request(method, path, data=data, headers=h(ADMIN))
        assert r.status == 503, (method, path, await r.text())
        assert int(r.headers["Retry-After"]) >= 1
    proxy.start()  # Redis is back
    for _ in range(40):
        r = await client.get("/readyz")
        if r.status == 200:
            break
        await asyncio.sleep(0.1)
    assert r.status == 200
    r = await client.get("/v1/devices/outage", headers=h(ADMIN))
    assert "store-a" in str(await r.json()) and "store-b" not in str(await r.json())  # neither erased nor moved
    r = await client.get("/v1/fences", headers=h(ADMIN))
    assert r.headers["X-Config-Version"] == "1"  # the PUT during the outage changed nothing
    r = await client.post("/v1/pings", json={"batch_id": "during-outage", "pings": [ping("outage", INSIDE_B, now - 20)]},
                          headers=h(SDK))
    assert r.status == 200 and "Idempotent-Replay" not in r.headers  # the failed try was not remembered
    proxy.cut()


async def test_rate_limit_is_one_bucket_per_key_across_workers(make_worker) -> None:
    a, b = await make_worker(rate_limit=0.5, rate_burst=3), await make_worker(rate_limit=0.5, rate_burst=3)
    statuses = [(await w.get("/v1/fences", headers=h(ADMIN))).status for w in (a, b, a)]
    assert statuses == [200, 200, 200]
    r = await b.get("/v1/fences", headers=h(ADMIN))  # the key's 4th request, whichever worker: over the burst
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert (await a.get("/v1/fences", headers=h(ADMIN))).status == 429
    # another key draws from its own bucket
    r = await a.post("/v1/pings", json=[ping("rl", INSIDE_A, time.time())], headers=h(SDK))
    assert r.status == 200
