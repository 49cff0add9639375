"""``proximity serve`` on a real 3-master Redis Cluster: every shared thing on the cluster.

Workers are given one node's URL (the others are learnt). They must give what one in-memory process
gives (events, offers, a campaign budget that runs out), see each other's config changes (sharded
pub/sub on ``{<prefix>:config}``), and ride through a master failover and a slot migration.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.proximity import _serve_workers as sw

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _raw(url: str, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"X-API-Key": sw.KEY, "Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _config_version(url: str, kind: str) -> int:
    status, headers, _ = _raw(url, "GET", f"/v1/{kind}", b"", "text/plain")
    assert status == 200, status
    return int(headers["X-Config-Version"])


def test_two_workers_on_a_cluster_equal_one_process(tmp_path: Path, redis_cluster_url: str,
                                                     redis_prefix: str) -> None:
    paths = sw.write_scenario(tmp_path)
    batches = sw.ping_batches(time.time())
    with sw.workers(paths, 2, redis=redis_cluster_url, prefix=redis_prefix) as urls:
        multi_events, multi_offers = sw.play(urls, batches)
        # a config change on one worker reaches the other (sharded pub/sub, or its poll)
        before = _config_version(urls[1], "campaigns")
        text = paths["campaigns"].read_text().replace("10% off today.", "12% off today.")
        status, _, body = _raw(urls[0], "PUT", "/v1/campaigns", text.encode(), "application/yaml")
        assert status == 200, body
        deadline = time.monotonic() + 10
        while _config_version(urls[1], "campaigns") <= before:
            assert time.monotonic() < deadline, "worker 1 never saw worker 0's campaigns"
            time.sleep(0.1)
        _, _, served = _raw(urls[1], "GET", "/v1/campaigns", b"", "text/plain")
        assert b"12% off today." in served
    with sw.workers(paths, 1) as urls:
        single_events, single_offers = sw.play(urls, batches)
    assert {e[1] for e in single_events} >= {"enter", "exit"}
    assert len([o for o in single_offers if o[1] == "welcome"]) == 7  # the budget runs out
    assert multi_events == single_events
    assert multi_offers == single_offers


def _play_retrying(urls: list[str], batches: list[list[dict[str, Any]]], answers_503: list[float],
                   deadline_s: float = 90.0, pace_s: float = 0.0,
                   timings: list[tuple] | None = None) -> tuple[list[tuple], list[tuple]]:
    """:func:`sw.play`, retrying a 503 with the same ``batch_id`` (an SDK's behaviour) after Retry-After, a
    409 'being processed' (a failed try's lease still running) shortly after, and a request left unanswered.
    ``timings`` gets ``(start, seconds, status or 0 for no answer, url)`` of every try."""
    events: list[tuple] = []
    offers: list[tuple] = []
    timings = [] if timings is None else timings
    end = time.monotonic() + deadline_s
    for k, rows in enumerate(batches):
        batch_id = f"b-{k}-{uuid.uuid4().hex[:6]}"
        attempt = 0
        while True:
            url = urls[(k + attempt) % len(urls)]
            t0 = time.monotonic()
            try:
                status, headers, raw = _raw(url, "POST", "/v1/pings",
                                            json.dumps({"batch_id": batch_id, "pings": rows}).encode(),
                                            "application/json")
                timings.append((t0, time.monotonic() - t0, status, url))
            except (TimeoutError, ConnectionError):
                timings.append((t0, time.monotonic() - t0, 0, url))
                # no answer in 30 s while a master fails over: an SDK retries the same batch_id (idempotent)
                assert time.monotonic() < end, f"batch {k} unanswered after {deadline_s} s"
                attempt += 1
                continue
            body = json.loads(raw)
            if status == 200:
                break
            if status == 409 and "being processed" in str(body.get("error")):
                # the failed try's idempotency lease (1 s, see proximity/service/idempotency.py) has not run
                # out yet: the answer says to retry shortly, as an SDK does
                assert time.monotonic() < end, f"batch {k} still 409 after {deadline_s} s: {body}"
                attempt += 1
                time.sleep(0.3)
                continue
            assert status == 503, (status, body)
            assert float(headers["Retry-After"]) > 0, headers
            answers_503.append(time.monotonic())
            assert time.monotonic() < end, f"batch {k} still 503 after {deadline_s} s: {body}"
            attempt += 1
            time.sleep(0.2)
        for dev, out in body["devices"].items():
            events += [(dev, e["kind"], e["fence_id"], e["ts"]) for e in out["events"]]
            offers += [(dev, o["campaign_id"], o["place"], o["ts"]) for o in out["offers"]]
        time.sleep(pace_s)
    return sorted(events), sorted(offers)


def test_failover_and_slot_migration_under_load_lose_nothing_and_issue_nothing_twice(
        tmp_path: Path, redis_cluster_factory: Any, redis_prefix: str) -> None:

    cluster = redis_cluster_factory(masters=3, replicas=1)
    paths = sw.write_scenario(tmp_path)
    batches = sw.ping_batches(time.time(), devices=24, steps=24, batch_size=8)
    answers_503: list[float] = []
    timings: list[tuple] = []
    result: dict[str, Any] = {}
    with sw.workers(paths, 2, redis=cluster.url, prefix=redis_prefix) as urls:
        def drive() -> None:
            try:
                result["out"] = _play_retrying(urls, batches, answers_503, pace_s=0.25, timings=timings)
            except BaseException as exc:  # reported by the main thread
                result["error"] = exc

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(0.5)
        masters = cluster.masters()
        # 1) a slot migration in the middle of the load: every slot of one master moves to another (MOVED/ASK)
        src, dst = masters[1], masters[2]
        moved = _migrate_some_slots(src["port"], dst["port"], count=16)
        # 2) a master dies (kill -9): its replica takes over after the node timeout
        victim = next(m for m in cluster.masters() if m["port"] != cluster.ports[0])
        under_load = driver.is_alive()
        cluster.kill(victim["port"])
        killed_at = time.monotonic()
        print(f"slots moved {moved}; killed master {victim['port']} under load: {under_load}")
        driver.join(120)
        assert not driver.is_alive(), "the load did not finish"
        if "error" in result:
            raise result["error"]
        multi_events, multi_offers = result["out"]
        print(f"503 answers while a slot had no master: {len(answers_503)}")
        slow = sorted(timings, key=lambda t: -t[1])[:8]
        print("slowest answers (s after kill, duration s, status, worker):",
              [(round(t0 - killed_at, 2), round(d, 2), st, u[-5:]) for t0, d, st, u in slow])
    assert moved > 0 and under_load
    with sw.workers(paths, 1) as urls:
        single_events, single_offers = sw.play(urls, batches)
    assert len([o for o in single_offers if o[1] == "welcome"]) == 7
    assert multi_offers == single_offers  # none twice, none lost, the budget of 7 never exceeded
    assert multi_events == single_events  # no accepted ping's events lost


def _migrate_some_slots(src: int, dst: int, count: int) -> int:
    """Move ``count`` of ``src``'s slots (with their keys) to ``dst`` the way redis-cli does."""
    import _redis_cluster as rc

    src_id = rc.cli(src, "cluster", "myid").strip()
    dst_id = rc.cli(dst, "cluster", "myid").strip()
    slots: list[int] = []
    for line in rc.cli(src, "cluster", "nodes").splitlines():
        parts = line.split()
        if parts and parts[0] == src_id:
            for r in parts[8:]:
                if r.startswith("["):
                    continue
                a, _, b = r.partition("-")
                slots += range(int(a), int(b or a) + 1)
    moved = 0
    for slot in slots[:count]:
        rc.cli(dst, "cluster", "setslot", str(slot), "importing", src_id)
        rc.cli(src, "cluster", "setslot", str(slot), "migrating", dst_id)
        while True:
            keys = rc.cli(src, "cluster", "getkeysinslot", str(slot), "100").split()
            if not keys:
                break
            rc.cli(src, "migrate", "127.0.0.1", str(dst), "", "0", "5000", "keys", *keys)
        for port in (dst, src):
            rc.cli(port, "cluster", "setslot", str(slot), "node", dst_id)
        moved += 1
    return moved


async def test_feed_and_config_messages_cross_workers_on_sharded_pubsub(redis_cluster_url: str,
                                                                        redis_prefix: str) -> None:
    """Two workers' buses and channels on one cluster, each with its own cluster client (as two processes)."""
    import asyncio

    from proximity.service.backends import Backends
    from proximity.service.config import ServiceConfig
    from proximity.service.feed import FeedBus, FeedFilter, FeedHub

    config = ServiceConfig(redis=redis_cluster_url, redis_prefix=redis_prefix)
    a, b = Backends.from_config(config), Backends.from_config(config)
    assert a.cluster and b.cluster
    hub_a, hub_b = FeedHub(), FeedHub()
    bus_a = FeedBus(hub_a, a.aioredis, redis_prefix, cluster=True)
    bus_b = FeedBus(hub_b, b.aioredis, redis_prefix, cluster=True)
    assert bus_a.channel == f"{{{redis_prefix}:feed}}"
    seen_b = hub_b.subscribe(FeedFilter(frozenset(), frozenset(), frozenset(), frozenset()))
    notified: list[str] = []

    async def notify(kind: str) -> None:
        notified.append(kind)

    listener = asyncio.create_task(b.channel.listen(notify))
    bus_a.start()
    bus_b.start()
    try:
        msg = {"type": "event", "kind": "enter", "device_id": "d1", "fence_id": "f1"}
        deadline = time.monotonic() + 10
        while seen_b.queue.empty():  # the subscription may not be open yet: publish until it arrives
            assert time.monotonic() < deadline, "worker b never received worker a's feed message"
            await bus_a.publish([msg])
            await asyncio.sleep(0.2)
        assert json.loads(await seen_b.queue.get())["device_id"] == "d1"
        version = 0
        while "fences" not in notified:
            assert time.monotonic() < deadline, "worker b never heard of worker a's fences"
            doc = await a.channel.publish("fences", f'{{"type": "FeatureCollection", "features": [], "v": {version}}}',
                                          "application/geo+json", "test")
            version = doc.version
            await asyncio.sleep(0.2)
        latest = await b.channel.latest("fences")
        assert latest is not None and latest.version >= version
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await bus_a.stop()
        await bus_b.stop()
        for backends in (a, b):
            await backends.aclose()
            backends.close()
