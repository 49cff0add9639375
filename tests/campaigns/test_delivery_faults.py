"""Exactly once per sink under faults: delivery workers (real processes) on a real Redis behind a cuttable
proxy, delivering to a shared JSONL file and a webhook, while the proxy refuses, black-holes and cuts
Redis and workers are killed with SIGKILL mid-delivery.

Every issued offer id must be in the JSONL file exactly once and must reach the webhook (which may see
an id again only when an ack was lost; it then carries the same Idempotency-Key), and the outbox must
end empty with every offer marked delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _faultproxy import FaultProxy  # tests/_faultproxy.py (tests/conftest.py puts tests/ on the path)
from aiohttp import web

from campaigns import MemoryOutbox, Offer, RedisOutbox, StoreUnavailable
from campaigns.dispatch import DeliveryWorker, Fanout, JsonlSink, Subscribers

ROOT = Path(__file__).parents[2]
WORKER = Path(__file__).parent / "_deliver_worker.py"


def offer(i: int) -> Offer:
    return Offer(offer_id=f"of_{i:05d}", campaign_id="c", device_id=f"d{i % 50}", fence_id="f", ts=1000.0 + i,
                 title=f"t{i}")


class Hook:
    """A webhook receiver that records every request's Idempotency-Key (raw, duplicates included) and
    takes a little time, so that workers are killed while requests are in flight."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.keys.append(request.headers["Idempotency-Key"])
        await asyncio.sleep(random.uniform(0.02, 0.2))
        return web.json_response({"ok": True})


def spawn(proxy_url: str, prefix: str, path: Path, hook: str, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(WORKER), proxy_url, prefix, str(path), hook, name, "1.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise AssertionError(f"the delivery worker did not start: {line or 'no output'} (exit {proc.returncode})")
    return proc


@pytest.mark.redis
@pytest.mark.slow
async def test_every_offer_reaches_each_sink_once_under_redis_faults_and_kill_9(
        redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    from redis.connection import parse_url

    target = parse_url(redis_url)
    hook = Hook()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    direct = RedisOutbox(redis_url, redis_prefix, claim_idle_s=1.0)  # the producer: not behind the proxy
    path = tmp_path / "offers.jsonl"
    rng = random.Random(13)
    n = 300
    workers: dict[str, subprocess.Popen[str]] = {}
    with FaultProxy(target.get("host", "127.0.0.1"), int(target.get("port", 6379))) as proxy:
        db = int(target.get("db", 0))
        try:
            for name in ("a", "b"):
                workers[name] = await asyncio.to_thread(spawn, proxy.url(db), redis_prefix, path, hook_url, name)

            async def produce() -> None:
                for i in range(n):
                    await asyncio.to_thread(direct.put, offer(i))
                    if i % 20 == 19:
                        await asyncio.sleep(0.25)

            async def kill(name: str, generation: int) -> None:
                workers[name].send_signal(signal.SIGKILL)
                await asyncio.to_thread(workers[name].wait)
                workers[name].stdout.close()  # type: ignore[union-attr]
                workers[name] = await asyncio.to_thread(spawn, proxy.url(db), redis_prefix, path, hook_url,
                                                        f"{name}{generation}")

            producer = asyncio.create_task(produce())
            faults = []
            await asyncio.sleep(0.7)
            proxy.cut()  # every Redis connection reset mid-stream
            faults.append("cut")
            await asyncio.sleep(0.5)
            await kill("a", 1)  # SIGKILL, most likely between a send and its ack
            faults.append("kill -9 a")
            await asyncio.sleep(0.5)
            proxy.refuse()
            await asyncio.sleep(1.5)
            proxy.restore()
            faults.append("refused 1.5 s")
            await asyncio.sleep(0.5)
            proxy.blackhole()
            await asyncio.sleep(2.0)
            proxy.restore()
            faults.append("black-holed 2 s")
            for _ in range(3):
                await asyncio.sleep(0.3)
                proxy.cut_after(rng.randrange(50, 3000))
            faults.append("3 cuts mid-stream")
            await kill("b", 1)
            faults.append("kill -9 b")
            await producer
            for _ in range(600):  # until every offer is delivered (bounded: 60 s)
                if await asyncio.to_thread(direct.pending) == 0:
                    break
                await asyncio.sleep(0.1)
        finally:
            for proc in workers.values():
                proc.kill()
                proc.wait()
                proc.stdout.close()  # type: ignore[union-attr]
            await runner.cleanup()
    issued = {offer(i).offer_id for i in range(n)}
    lines = Counter(json.loads(x)["offer_id"] for x in path.read_text().splitlines())
    keys = Counter(hook.keys)
    print(f"faults: {faults}; jsonl lines {sum(lines.values())}, webhook requests {len(hook.keys)} "
          f"({len(hook.keys) - len(keys)} repeated Idempotency-Keys), proxy {proxy.stats}")
    assert direct.pending() == 0
    assert set(lines) == issued and max(lines.values()) == 1  # the file: every offer exactly once
    assert set(keys) == issued  # the webhook: every offer arrived (repeats carry the same key)
    assert all(direct.is_delivered(i) for i in issued) and direct.dead_letters() == []
    direct.close()


class AckFails:
    """A MemoryOutbox whose first ``n`` acks fail as a refused Redis would."""

    def __init__(self, n: int, **kw: Any) -> None:
        self.box = MemoryOutbox(**kw)
        self.fail = n
        self.claim_idle_s = self.box.claim_idle_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)

    def ack(self, entry: Any) -> bool:
        if self.fail > 0:
            self.fail -= 1
            raise StoreUnavailable("shared state unavailable (offer outbox: ConnectionError); retry")
        return self.box.ack(entry)

    def ack_many(self, entries: Any) -> list[Any]:  # (the worker batches acks: each fails as ``ack`` would)
        out: list[Any] = []
        for entry in entries:
            try:
                out.append(self.ack(entry))
            except StoreUnavailable as exc:
                out.append(exc)
        return out


class CountedAcks:
    """A RedisOutbox (real Redis) that counts its ack calls, and whose first ``fail`` ``ack_many`` calls
    raise as a Redis gone away would."""

    def __init__(self, box: Any, fail: int = 0) -> None:
        self.box, self.fail, self.calls = box, fail, 0
        self.claim_idle_s = box.claim_idle_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)

    def ack(self, entry: Any) -> bool:
        self.calls += 1
        return bool(self.box.ack(entry))

    def ack_many(self, entries: Any) -> list[Any]:
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise StoreUnavailable("shared state unavailable (offer outbox: ConnectionError); retry")
        return list(self.box.ack_many(entries))


@pytest.mark.redis
async def test_the_acks_of_a_pass_share_round_trips_and_a_failed_call_is_retried(
        redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    box = RedisOutbox(redis_url, redis_prefix, claim_idle_s=30.0)
    try:
        outbox = CountedAcks(box, fail=1)
        for i in range(40):
            outbox.put(offer(i))
        sink = JsonlSink(tmp_path / "o.jsonl")
        worker = DeliveryWorker(outbox, Fanout([sink]), consumer="w")
        first = await worker.run_once()
        # every offer sent once; the acks went in a few calls (not one each), and the call that failed
        # left its entries to be acked again, not sent again
        assert first.claimed == 40 and first.delivered + first.ack_failures == 40 and first.ack_failures > 0
        assert outbox.calls <= 20  # (one call an ack: 40)
        second = await worker.run_once()
        assert second.delivered == first.ack_failures and second.claimed == 0
        assert box.pending() == 0 and all(box.is_delivered(offer(i).offer_id) for i in range(40))
        lines = Counter(json.loads(x)["offer_id"] for x in (tmp_path / "o.jsonl").read_text().splitlines())
        assert len(lines) == 40 and max(lines.values()) == 1
    finally:
        box.close()


async def test_a_lost_ack_is_retried_and_never_sends_again(tmp_path: Path) -> None:
    clock = [0.0]
    outbox = AckFails(3, claim_idle_s=1.0, clock=lambda: clock[0])
    for i in range(5):
        outbox.put(offer(i))
    subs = Subscribers()
    got: list[str] = []
    subs.subscribe(lambda o: got.append(o.offer_id))
    sink = JsonlSink(tmp_path / "o.jsonl")
    worker = DeliveryWorker(outbox, Fanout([sink, subs]), consumer="w")
    first = await worker.run_once()
    assert first.ack_failures == 3 and first.delivered == 2
    clock[0] = 5.0  # the unacked claims went idle: another worker takes them over ...
    other = DeliveryWorker(outbox, Fanout([sink, subs]), consumer="other")
    outbox.fail = 0
    taken = await other.run_once()
    assert taken.claimed == 3 and taken.delivered == 3  # ... and sends them again: the sinks drop them
    assert sink.duplicates == 3 and subs.duplicates == 3
    again = await worker.run_once()  # the first worker's pending acks now land (already marked delivered)
    assert again.duplicate_acks == 3 and again.delivered == 0
    assert sorted(got) == [offer(i).offer_id for i in range(5)]  # each once (delivered concurrently: any order)
    assert sorted(json.loads(x)["offer_id"] for x in (tmp_path / "o.jsonl").read_text().splitlines()) == sorted(got)
    assert outbox.pending() == 0


async def test_a_worker_whose_ack_failed_acks_a_reclaimed_entry_without_sending_it(tmp_path: Path) -> None:
    clock = [0.0]
    outbox = AckFails(1, claim_idle_s=1.0, clock=lambda: clock[0])
    outbox.put(offer(1))
    sent: list[str] = []

    class Target:
        name = "t"

        async def deliver(self, o: Offer) -> int:
            sent.append(o.offer_id)
            return 1

        async def aclose(self) -> None:
            pass

    worker = DeliveryWorker(outbox, Target(), consumer="w")
    await worker.run_once()
    worker._unacked.clear()  # the retry list lost (as if it gave up): the entry comes back to this worker
    clock[0] = 5.0
    outbox.box._claimed = {k: ("someone", 0.0, o, n) for k, (_, _, o, n) in outbox.box._claimed.items()}
    report = await worker.run_once()
    assert report.already_delivered == 1 and report.delivered == 1 and sent == ["of_00001"]


def test_the_jsonl_sink_deduplicates_across_processes_sharing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    a, b = JsonlSink(path), JsonlSink(path)
    assert a.write(offer(1)) and not b.write(offer(1))  # b reads what a appended
    assert b.write(offer(2)) and not a.write(offer(2))
    path.write_bytes(path.read_bytes() + b'{"offer_id":"of_00003","torn')  # a crash mid-write
    c = JsonlSink(path)  # a new process: seeded from the file's tail
    assert not c.write(offer(1)) and c.write(offer(3))
    ids = []
    for line in path.read_text().splitlines():
        try:
            ids.append(json.loads(line)["offer_id"])
        except ValueError:
            ids.append("torn")
    assert ids == ["of_00001", "of_00002", "torn", "of_00003"]
    path.write_text("")  # truncated (rotated): ids already delivered stay remembered, new ones are appended
    assert not a.write(offer(1)) and a.write(offer(4))
    assert [json.loads(x)["offer_id"] for x in path.read_text().splitlines()] == ["of_00004"]


def test_import_campaigns_does_not_import_redis() -> None:
    code = "import sys, campaigns, campaigns.dispatch; assert 'redis' not in sys.modules; campaigns.RedisOutbox"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_store_unavailable_is_a_connection_error_without_an_address() -> None:
    import redis

    from campaigns import _redis

    err = _redis.unavailable(redis.ConnectionError("Error 111 connecting to 10.1.2.3:6379. Refused."), "outbox")
    assert isinstance(err, ConnectionError) and "10.1.2.3" not in str(err) and err.retry_after_s == 1.0
