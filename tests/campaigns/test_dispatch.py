"""Dispatchers against real sockets: a local webhook receiver that fails, times out and recovers."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from campaigns import MemoryOutbox, Offer
from campaigns.dispatch import (
    DeliveryWorker,
    Fanout,
    JsonlSink,
    Subscribers,
    WebhookDispatcher,
    sign,
    verify_signature,
)

SECRET = "s3cret"
ROOT = Path(__file__).parents[2]


def offer(i: int) -> Offer:
    return Offer(offer_id=f"of_{i:04d}", campaign_id="c", device_id=f"d{i}", fence_id="f", ts=1000.0 + i, title=f"t{i}")


class Receiver:
    """A webhook endpoint that checks signatures and dedups on the idempotency key.

    ``script(n)`` says what to do with the n-th request: ``"up"`` (200), ``"fail"``
    (503), ``"slow"`` (takes the offer, then answers too late for the client:
    the sender sees a timeout and must retry the same key), ``"reject"`` (400).
    """

    def __init__(self, script: Any = None) -> None:
        self.script = script or (lambda n, key: "up")
        self.requests = 0
        self.bad_signatures = 0
        self.taken: Counter[str] = Counter()  # offers processed (dedup by key: at most 1 each)
        self.duplicates = 0
        self.attempt_headers: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        n = self.requests
        body = await request.read()
        ts = request.headers.get("X-Proximity-Timestamp", "")
        if not verify_signature(SECRET, ts, body, request.headers.get("X-Proximity-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        key = request.headers["Idempotency-Key"]
        doc = json.loads(body)
        assert doc["idempotency_key"] == key == doc["offer"]["offer_id"]
        self.attempt_headers.append(int(request.headers["X-Proximity-Attempt"]))
        action = self.script(n, key)
        if action == "fail":
            return web.Response(status=503)
        if action == "reject":
            return web.Response(status=400)
        if key in self.taken:
            self.duplicates += 1
        else:
            self.taken[key] += 1
        if action == "slow":
            await asyncio.sleep(1.5)
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(receiver.app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook"


def hook(url: str, **kw: Any) -> WebhookDispatcher:
    settings: dict[str, Any] = {"timeout_s": 0.5, "max_attempts": 10, "backoff_base_s": 0.02, "backoff_max_s": 0.2,
                                "rng": random.Random(7)}
    settings.update(kw)
    return WebhookDispatcher(url, SECRET, **settings)


async def test_webhook_outage_every_offer_delivered_exactly_once(outbox: Any) -> None:
    """The same outage through the memory outbox and the Redis stream (``outbox`` fixture)."""
    def script(n: int, key: str) -> str:
        if n <= 12:
            return "fail"  # down
        if n <= 24:
            return "slow"  # up but too slow: it takes the offer, the sender times out and retries
        return "up"  # recovered

    receiver = Receiver(script)
    runner, url = await serve(receiver)
    ids = [offer(i).offer_id for i in range(30)]
    for i in range(30):
        outbox.put(offer(i))
    dispatcher = hook(url)
    worker = DeliveryWorker(outbox, dispatcher, consumer="w1", batch=50, concurrency=8)
    try:
        report = await asyncio.wait_for(worker.run_once(), 60)
    finally:
        await dispatcher.aclose()
        await runner.cleanup()
    assert set(receiver.taken) == set(ids), report  # all arrived
    assert all(c == 1 for c in receiver.taken.values())  # the receiver processed each once
    assert receiver.duplicates > 0  # ... though some were sent more than once (lost answers)
    assert report.delivered == 30 and report.duplicate_acks == 0 and report.dead == 0 and report.errors == 0
    assert all(outbox.is_delivered(i) for i in ids) and outbox.pending() == 0
    # every attempt is counted (a request timed out before the receiver saw it still counts as one)
    assert dispatcher.attempts == report.attempts >= receiver.requests > 30
    assert max(receiver.attempt_headers) > 1 and receiver.bad_signatures == 0


async def test_dead_letters_after_the_attempt_limit_and_on_refusal() -> None:
    receiver = Receiver(lambda n, key: "fail" if key == "of_0001" else "reject" if key == "of_0002" else "up")
    runner, url = await serve(receiver)
    outbox = MemoryOutbox()
    for i in range(4):
        outbox.put(offer(i))
    dispatcher = hook(url, max_attempts=4)
    worker = DeliveryWorker(outbox, dispatcher)
    try:
        report = await worker.run_once()
    finally:
        await dispatcher.aclose()
        await runner.cleanup()
    assert report.delivered == 2 and report.dead == 2
    dead = {d.offer.offer_id: d for d in outbox.dead_letters()}
    assert dead["of_0001"].attempts == 4 and "gave up after 4 attempts (HTTP 503)" in dead["of_0001"].reason
    assert dead["of_0002"].attempts == 1 and "HTTP 400" in dead["of_0002"].reason
    assert outbox.pending() == 0


async def test_retry_after_and_backoff_with_jitter() -> None:
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)

    def script(n: int, key: str) -> str:
        return "fail" if n <= 3 else "up"

    receiver = Receiver(script)
    runner, url = await serve(receiver)
    d = hook(url, sleep=fake_sleep, backoff_base_s=1.0, backoff_max_s=3.0)
    try:
        assert await d.deliver(offer(1)) == 4
    finally:
        await d.aclose()
        await runner.cleanup()
    assert len(waits) == 3
    for attempt, w in enumerate(waits, start=1):
        cap = min(3.0, 2 ** (attempt - 1))
        assert cap / 2 <= w <= cap  # exponential, capped, jittered
    assert len(set(waits)) == 3


def test_signatures() -> None:
    body = b'{"a":1}'
    sig = sign(SECRET, "1700000000.000", body)
    assert sig.startswith("v1=") and len(sig) == 67
    assert verify_signature(SECRET, "1700000000.000", body, sig, now=1700000010)
    assert not verify_signature(SECRET, "1700000000.000", body + b" ", sig, now=1700000010)
    assert not verify_signature("other", "1700000000.000", body, sig, now=1700000010)
    assert not verify_signature(SECRET, "1700000000.000", body, sig, now=1700009999)  # too old: replay
    assert not verify_signature(SECRET, "soon", body, sig)


async def test_a_crashing_target_leaves_the_offer_for_a_later_pass() -> None:
    class Flaky:
        name = "flaky"

        def __init__(self) -> None:
            self.calls = 0
            self.got: list[str] = []

        async def deliver(self, o: Offer) -> int:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("client blew up")
            self.got.append(o.offer_id)
            return 1

        async def aclose(self) -> None:
            pass

    clock = [0.0]
    outbox = MemoryOutbox(claim_idle_s=10, clock=lambda: clock[0])
    outbox.put(offer(1))
    target = Flaky()
    a = DeliveryWorker(outbox, target, consumer="a")
    b = DeliveryWorker(outbox, target, consumer="b")
    assert (await a.run_once()).errors == 1
    assert (await b.run_once()).claimed == 0  # still claimed by a
    clock[0] = 11
    assert (await b.run_once()).delivered == 1
    assert target.got == ["of_0001"] and outbox.pending() == 0


@pytest.mark.redis
async def test_a_killed_worker_leaves_its_offers_to_another(redis_url: str, redis_prefix: str) -> None:
    from campaigns import RedisOutbox

    box = RedisOutbox(redis_url, redis_prefix, claim_idle_s=1.0)
    ids = [offer(i).offer_id for i in range(8)]
    for i in range(8):
        box.put(offer(i))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "_claim_and_die.py"), redis_url, redis_prefix, "5"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    doomed = line.split()
    assert len(doomed) == 5
    receiver = Receiver()
    runner, url = await serve(receiver)
    dispatcher = hook(url)
    worker = DeliveryWorker(box, dispatcher, consumer="survivor")
    try:
        first = await worker.run_once()  # the fresh ones (the doomed worker's are not idle yet, unless slow)
        await asyncio.sleep(1.1)
        second = await worker.run_once()  # the doomed worker's, claimed over
    finally:
        await dispatcher.aclose()
        await runner.cleanup()
    assert first.delivered >= 3 and first.delivered + second.delivered == 8
    assert first.duplicate_acks == second.duplicate_acks == 0
    assert set(receiver.taken) == set(ids) and all(c == 1 for c in receiver.taken.values())
    assert box.pending() == 0 and all(box.is_delivered(i) for i in ids)
    box.client.close()


async def test_jsonl_sink_subscribers_and_fanout(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out" / "offers.jsonl")
    subs = Subscribers()
    seen: list[str] = []
    q, unsubscribe_q = subs.queue(maxsize=2)

    def boom(o: Offer) -> None:
        raise ValueError("subscriber bug")

    async def async_cb(o: Offer) -> None:
        seen.append(o.offer_id)

    subs.subscribe(boom)
    unsubscribe = subs.subscribe(async_cb)
    fan = Fanout([sink, subs])
    outbox = MemoryOutbox()
    for i in range(3):
        outbox.put(offer(i))
    report = await DeliveryWorker(outbox, fan).run_once()
    assert report.delivered == 3
    lines = [json.loads(x) for x in (tmp_path / "out" / "offers.jsonl").read_text().splitlines()]
    assert [x["offer_id"] for x in lines] == ["of_0000", "of_0001", "of_0002"]
    assert Offer.from_dict(lines[1]) == offer(1)
    assert seen == ["of_0000", "of_0001", "of_0002"]
    assert subs.errors == 3  # the bad subscriber never stopped the others
    assert q.qsize() == 2 and subs.dropped == 1 and (await q.get()).offer_id == "of_0001"
    unsubscribe()
    unsubscribe_q()
    assert len(subs) == 1
