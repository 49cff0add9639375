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
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
                  config=EngineConfig(max_future_skew_s=None, profile="crossing"))


def run_workers(script: Path, tmp_path: Path, redis_url: str, prefix: str, inputs: list[Any],
                timeout_s: float = 240) -> list[Any]:
    """Start one ``script`` process (this module's ``main`` with some ``engine``) per entry of ``inputs`` (its
    ping batches), let them go together once all are ready, and return every event they wrote."""
    import redis

    from proximity.events import Event

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    client = redis.Redis.from_url(redis_url)
    procs, outs = [], []
    try:
        for k, batches in enumerate(inputs):
            src, out = tmp_path / f"in{k}.json", tmp_path / f"out{k}.jsonl"
            src.write_text(json.dumps(batches))
            outs.append(out)
            procs.append(subprocess.Popen(
                [sys.executable, str(script), "--redis", redis_url, "--prefix", prefix, "--input", str(src),
                 "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=root))
        deadline = time.monotonic() + 60
        while int(client.get(f"{prefix}:ready") or 0) < len(procs):
            assert time.monotonic() < deadline, "workers did not get ready within 60 s"
            assert all(p.poll() is None for p in procs), "a worker died while starting"
            time.sleep(0.01)
        client.set(f"{prefix}:go", 1)
        for p in procs:
            out_text, err = p.communicate(timeout=timeout_s)
            assert p.returncode == 0, err.decode()
            print("worker:", out_text.decode().strip())  # compare-and-set conflicts it retried
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        client.close()
    return [Event.from_dict(json.loads(line)) for out in outs for line in out.read_text().splitlines()]


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
