"""``python -m benchmarks redis_memory``: Redis memory per device, per cap entry, per budget entry and per
offer in the outbox, measured with ``MEMORY USAGE`` on real keys written by the real adapters.

It writes, under a fresh key prefix (deleted afterwards): the presence state of ``--devices`` devices
(one ping inside a store each, through ``Engine`` + ``RedisStore``), their frequency caps (``RedisLimiter``:
``--offers`` offers per device under a per-device cap of one campaign, a global per-device cap and a
cooldown), a campaign budget holding every offer, and the outbox (``RedisOutbox``: every offer put,
half of them acked, so delivered marks and pending stream entries both exist). It prints bytes per
unit, from ``MEMORY USAGE key SAMPLES 0`` summed over the keys of each kind, and the growth of
``used_memory`` over the whole run as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _usage(client: Any, pattern: str) -> tuple[int, int]:
    """(bytes, keys) of every key matching ``pattern``."""
    total = n = 0
    for key in client.scan_iter(match=pattern, count=1000):
        total += int(client.memory_usage(key, samples=0) or 0)
        n += 1
    return total, n


def measure(url: str, devices: int, offers: int) -> dict[str, Any]:
    import redis

    from campaigns import CapCheck, Offer, RedisLimiter, RedisOutbox
    from geofence import FenceIndex, circle_fence
    from proximity.batch import PingBatch
    from proximity.engine import Engine
    from proximity.store import RedisStore

    client = redis.Redis.from_url(url)
    prefix = f"pxmem-{uuid.uuid4().hex[:8]}"
    before = int(client.info("memory")["used_memory"])
    try:
        t0 = 1_700_000_000.0
        store = RedisStore(url, prefix=prefix, ttl_s=86400)
        engine = Engine(FenceIndex([circle_fence("store", 2.35, 48.85, 60.0)]), store=store)
        rows = [{"device_id": f"device-{i:07d}", "ts": t0, "lon": 2.35, "lat": 48.85, "accuracy_m": 5}
                for i in range(devices)]
        for i in range(0, devices, 5000):
            engine.process_pings(PingBatch.from_rows(rows[i : i + 5000]))
        limiter = RedisLimiter(url, prefix)
        outbox = RedisOutbox(url, prefix)
        for i in range(devices):
            dev = f"device-{i:07d}"
            for k in range(offers):
                token = f"of_{uuid.uuid4().hex[:24]}"
                now = t0 + 3600 * k
                checks = [
                    CapCheck("budget", "campaign", "camp-1", "total", 10**9, -math.inf, 0.0),
                    CapCheck("per_device 3/7d", "device", dev, "c:camp-1:0:rolling:604800", 10**6,
                             now - 604800, 604800.0),
                    CapCheck("global 10/1d", "device", dev, "g:0:rolling:86400", 10**6, now - 86400, 86400.0),
                    CapCheck("cooldown", "device", dev, "cd:camp-1:store", 10**6, now - 3600, 3600.0),
                ]
                assert limiter.acquire(token, checks, now).ok
                outbox.put(Offer(offer_id=token, campaign_id="camp-1", device_id=dev, fence_id="store", ts=now,
                                 title="Welcome", body="10% off today", deep_link="app://offers/1"))
        claimed = outbox.claim("mem", devices * offers)
        for e in claimed[: len(claimed) // 2]:
            outbox.ack(e)
        after = int(client.info("memory")["used_memory"])
        state, n_state = _usage(client, f"{prefix}:{{*}}:st")
        due, _ = _usage(client, f"{prefix}:due*")
        caps, _ = _usage(client, f"{prefix}:cap:*")
        budget, _ = _usage(client, f"{prefix}:budget:*")
        stream, _ = _usage(client, f"{prefix}:{{outbox}}:stream")
        ids, _ = _usage(client, f"{prefix}:{{outbox}}:ids")
        done, _ = _usage(client, f"{prefix}:{{outbox}}:done")
        entries = devices * offers
        pending = entries - len(claimed) // 2
        out = {
            "devices": devices, "offers_per_device": offers,
            "presence bytes/device (state key + due set)": round((state + due) / max(1, n_state)),
            "cap bytes/device (3 caps)": round(caps / devices),
            "cap bytes/entry (one offer under one cap)": round(caps / (3 * entries)),
            "budget bytes/offer": round(budget / entries),
            "outbox bytes/pending offer (stream entry)": round(stream / max(1, pending)),
            "outbox bytes/offer (id + delivered marks, kept dedup_ttl_s)": round((ids + done) / entries),
            "used_memory growth bytes/device (everything)": round((after - before) / devices),
        }
        store.close()
        limiter.close()
        outbox.close()
        return out
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks redis_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="a Redis to write to (keys deleted after)")
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--offers", type=int, default=3, help="offers per device")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    out = measure(args.redis, args.devices, args.offers)
    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:<{width}}  {v:>8,}")
    print(f"({time.perf_counter() - t:.1f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis_memory.json").write_text(json.dumps(out, indent=2))
    return 0
