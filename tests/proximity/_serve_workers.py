"""Helpers for the multi-worker tests: a scenario, real ``proximity serve`` processes, and a ping driver.

Also runnable by hand (after ``pip install -e .``)::

    python tests/proximity/_serve_workers.py --redis redis://127.0.0.1:6379/0 --workers 3

starts three workers on one Redis, plays the scenario round-robin across them,
plays it again through one in-memory worker, and prints whether the events and
offers are the same.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

KEY = "workers-test-key"
STORES = [("shop-1", 2.3500, 48.8500), ("shop-2", 2.3600, 48.8500), ("shop-3", 2.3700, 48.8500)]
SIZE = 0.002  # degrees: about 150 m x 220 m

CAMPAIGNS = """\
campaigns:
  - id: welcome
    name: Welcome
    priority: 20
    trigger:
      on: enter
      tags: [shop]
    offer:
      title: "Welcome to {store.name}"
      body: "10% off today."
    limits:
      per_device: {max: 1, window: 1d}
      budget: {total: 7}
  - id: come-back
    name: Come back
    priority: 10
    trigger:
      on: exit
      tags: [shop]
    offer:
      title: "Thanks for visiting {store.name}"
      body: "See you soon."
    limits:
      per_device: {max: 2, window: 1d}
"""


def write_scenario(directory: Path) -> dict[str, Path]:
    """Fences, campaigns, a key file and a service config (long debounce: exits come from pings only)."""
    directory.mkdir(parents=True, exist_ok=True)
    features = []
    for fid, lon, lat in STORES:
        ring = [[lon, lat], [lon + SIZE, lat], [lon + SIZE, lat + SIZE], [lon, lat + SIZE], [lon, lat]]
        features.append({"type": "Feature", "id": fid, "properties": {"name": fid.title(), "tags": ["shop"]},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    paths = {
        "fences": directory / "fences.geojson",
        "campaigns": directory / "campaigns.yaml",
        "keys": directory / "keys.txt",
        "config": directory / "service.yaml",
    }
    paths["fences"].write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    paths["campaigns"].write_text(CAMPAIGNS)
    import hashlib

    paths["keys"].write_text(f"driver:sdk,admin:{hashlib.sha256(KEY.encode()).hexdigest()}\n")
    paths["config"].write_text(
        "rate_limit: 0\nadvance_interval_s: 0.5\nengine:\n  profile: crossing\n  gps_debounce_s: 3600\n"
        "  beacon_debounce_s: 3600\n"
    )
    return paths


def ping_batches(now: float, devices: int = 24, steps: int = 12, batch_size: int = 16,
                 seed: int = 7) -> list[list[dict[str, Any]]]:
    """Each device walks outside -> into a shop -> outside -> into another shop, one ping every 10 s.

    Timestamps end at ``now`` (all in the past, within the same minutes), sorted
    by time, then cut into batches: consecutive batches hold the same devices.
    """
    import random

    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    t0 = now - steps * 10 - 5
    for d in range(devices):
        dev = f"dev-{d:03d}"
        shops = [STORES[(d + k) % len(STORES)] for k in range(2)]
        for step in range(steps):
            phase = (step * 4) // steps  # 0 outside, 1 inside shop A, 2 outside, 3 inside shop B
            if phase in (0, 2):
                lon, lat = 2.3400 + rng.uniform(0, 0.04), 48.8400 + rng.uniform(-0.002, 0.0)
            else:
                _, slon, slat = shops[phase // 2]
                lon, lat = slon + SIZE * rng.uniform(0.3, 0.7), slat + SIZE * rng.uniform(0.3, 0.7)
            rows.append({"device_id": dev, "lon": round(lon, 7), "lat": round(lat, 7), "accuracy_m": 8.0,
                         "ts": round(t0 + step * 10 + d * 0.01, 3)})
    rows.sort(key=lambda r: (r["ts"], r["device_id"]))
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def start_worker(paths: dict[str, Path], *, redis: str | None = None, prefix: str = "proximity",
                 workers: int = 1, timeout: float = 60.0) -> tuple[subprocess.Popen[str], str]:
    """Start ``proximity serve`` on a free port; returns the process and its base URL once ready."""
    cmd = [sys.executable, "-m", "proximity", "serve", "--port", "0", "--config", str(paths["config"]),
           "--fences", str(paths["fences"]), "--campaigns", str(paths["campaigns"]), "--keys", str(paths["keys"]),
           "--workers", str(workers), "--log-level", "warning"]
    if redis:
        cmd += ["--redis", redis, "--redis-prefix", prefix]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PROXIMITY_API_KEYS", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = _wait_ready(proc, timeout)
    except BaseException:
        stop_worker(proc)
        raise
    # keep reading its output so a chatty worker never blocks on a full pipe
    threading.Thread(target=_drain, args=(proc,), daemon=True).start()
    return proc, url


def _drain(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(Exception):
        for line in proc.stdout:  # type: ignore[union-attr]
            OUTPUT.append(line)
            del OUTPUT[:-200]


OUTPUT: list[str] = []


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url = None
    assert proc.stdout is not None
    while url is None:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"proximity serve exited ({proc.wait()}) before listening")
        m = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if m:
            url = m.group(1)
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("proximity serve did not start in time")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, _ = request(url, "GET", "/readyz")
            if status == 200:
                return url
        if proc.poll() is not None:
            raise RuntimeError(f"proximity serve exited ({proc.returncode}): {proc.stdout.read()}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("proximity serve did not become ready in time")


def stop_worker(proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def request(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"X-API-Key": KEY, "Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def play(urls: Sequence[str], batches: Sequence[list[dict[str, Any]]]) -> tuple[list[tuple], list[tuple]]:
    """Send batch k to worker k % len(urls), in order; the events and offers of all responses."""
    events: list[tuple] = []
    offers: list[tuple] = []
    for k, rows in enumerate(batches):
        status, body = request(urls[k % len(urls)], "POST", "/v1/pings",
                               {"batch_id": f"b-{k}-{uuid.uuid4().hex[:6]}", "pings": rows})
        if status != 200:
            raise AssertionError(f"batch {k} -> {status}: {body}")
        for dev, out in body["devices"].items():
            events += [(dev, e["kind"], e["fence_id"], e["ts"]) for e in out["events"]]
            offers += [(dev, o["campaign_id"], o["place"], o["ts"]) for o in out["offers"]]
    return sorted(events), sorted(offers)


@contextlib.contextmanager
def workers(paths: dict[str, Path], n: int, **kw: Any) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        urls = []
        for _ in range(n):
            proc, url = start_worker(paths, **kw)
            procs.append(proc)
            urls.append(url)
        yield urls
    finally:
        for proc in procs:
            stop_worker(proc)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", required=True)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--dir", default="/tmp/proximity-workers")
    args = p.parse_args(argv)
    paths = write_scenario(Path(args.dir))
    batches = ping_batches(time.time())
    prefix = f"pxmanual:{uuid.uuid4().hex[:8]}"
    with workers(paths, args.workers, redis=args.redis, prefix=prefix) as urls:
        multi = play(urls, batches)
    with workers(paths, 1) as urls:
        single = play(urls, batches)
    same = multi == single
    print(f"{len(multi[0])} events, {len(multi[1])} offers across {args.workers} workers; "
          f"same as one process: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
