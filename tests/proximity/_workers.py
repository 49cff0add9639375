"""An engine worker process for the two-process Redis test (``test_engine_processes.py``).

    python tests/proximity/_workers.py --redis URL --prefix P --input batches.json --out events.jsonl

Reads ping batches (lists of JSON rows), counts itself ready (``<prefix>:ready``),
waits until the key ``<prefix>:go`` exists (so both workers start together), applies every batch with an :class:`Engine` on the
shared Redis store, and writes each event it produced as one JSON line. Exits 0, or
2 with the error on stderr. Everything is bounded: it gives up waiting after 30 s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

LON0, LAT0 = 2.35, 48.85
M_LAT = 1 / 111_320.0
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
#: (id, east m, north m, radius m): two overlapping stores, three apart
FENCES = [("s1", 0, 0, 40), ("s2", 60, 0, 40), ("s3", 300, 0, 30), ("s4", 0, 300, 50), ("s5", 300, 300, 20)]


def fences() -> list[object]:
    from geofence import circle_fence

    return [circle_fence(fid, LON0 + dx * M_LON, LAT0 + dy * M_LAT, r, properties={"dwell_s": 120})
            for fid, dx, dy, r in FENCES]


def engine(redis_url: str, prefix: str) -> object:
    from geofence import FenceIndex
    from proximity.engine import Engine, EngineConfig
    from proximity.store import RedisStore

    return Engine(FenceIndex(fences()), store=RedisStore(redis_url, prefix=prefix, ttl_s=3600),
                  config=EngineConfig(max_future_skew_s=None))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        import redis

        from proximity.batch import PingBatch

        with open(args.input, encoding="utf-8") as fh:
            batches = json.load(fh)
        eng = engine(args.redis, args.prefix)
        eng.process_pings(PingBatch.from_rows([]))  # type: ignore[attr-defined]  (loads the compiled kernels)
        client = redis.Redis.from_url(args.redis)
        client.incr(f"{args.prefix}:ready")
        deadline = time.monotonic() + 30
        while not client.exists(f"{args.prefix}:go"):
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal within 30 s")
            time.sleep(0.005)
        with open(args.out, "w", encoding="utf-8") as out:
            for rows in batches:
                result = eng.process_pings(PingBatch.from_rows(rows))  # type: ignore[attr-defined]
                for e in result.events:
                    out.write(json.dumps(e.to_dict()) + "\n")
        print(json.dumps({"retries": eng.store.retries}))  # type: ignore[attr-defined]
        return 0
    except Exception as exc:  # reported to the test through stderr and the exit code
        print(f"worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
