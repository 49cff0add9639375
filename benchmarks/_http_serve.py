"""What the HTTP benchmarks share: the city (fences, campaigns, keys), the peer server, ``proximity serve``
started and stopped, a process tree's CPU time (``benchmarks.http``, ``benchmarks.http_small``)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEY = "bench-key"
BATCH = 500
#: the HTTP benchmarks' latency target, both modes: p99 under this many ms (client side) at half load
P99_TARGET_MS = 20.0
N_STORES = 1000
N_DEVICES = 20_000
MARK = b"7777777777.7"  # placeholder for each pass's time (seconds, 1 decimal: :func:`stamp`) in every ts
#: a ping's place in its pass, in microseconds after the pass's time, wraps here (0.1 s: one tenth of :func:`stamp`)
PASS_US = 100_000


def stamp(previous: float) -> tuple[float, bytes]:
    """A new pass's time and its text for ``MARK``: 0.1 s after the previous pass's (the span of a pass's own
    offsets, :data:`PASS_US`), or about the wall clock if that is later. Every device's ts grows from ping
    to ping, within a pass and from pass to pass, however fast passes go, and never runs ahead of the clock
    by more than 0.1 s a pass (a pass a second later would drift into the service's future-skew limit when
    passes are quick)."""
    t = round(max(previous + 0.1, time.time() - 1.0), 1)
    return t, f"{t:.1f}".encode()


def home_spots(stores: list[list[float]], rng: random.Random) -> list[tuple[float, float]]:
    """Each device's home spot: a quarter of the devices inside a store, the others anywhere in the city."""
    home = []
    for d in range(N_DEVICES):
        if d % 4 == 0:
            lon, lat = stores[d % len(stores)]
            home.append((lon + 0.0002, lat + 0.0002))
        else:
            home.append((2.25 + rng.uniform(0, 0.2), 48.80 + rng.uniform(0, 0.2)))
    return home


def ping_row(rng: random.Random, home: list[tuple[float, float]], d: int, k: int) -> str:
    """Device ``d``'s ping (JSON): from its home spot with a few metres of jitter, 1% from a random spot;
    its ts is ``MARK`` (the pass's time, to the tenth of a second) plus ``k % PASS_US`` microseconds, so the
    pings of a pass (``k``: the ping's place in it) are in time order."""
    if rng.random() < 0.01:
        lon, lat = 2.25 + rng.uniform(0, 0.2), 48.80 + rng.uniform(0, 0.2)
    else:
        lon, lat = home[d][0] + rng.uniform(-3e-5, 3e-5), home[d][1] + rng.uniform(-3e-5, 3e-5)
    return (f'{{"device_id":"d{d:05d}","lon":{lon:.6f},"lat":{lat:.6f},"accuracy_m":8,'
            f'"ts":{MARK.decode()}{k % PASS_US:05d}}}')


def _city(directory: Path, seed: int = 1) -> dict[str, Path]:
    """1000 store polygons over a 0.2 x 0.2 degree district, campaigns with caps, a key file."""
    import hashlib

    rng = random.Random(seed)
    features: list[dict[str, Any]] = []
    for i in range(N_STORES):
        lon, lat = 2.25 + rng.uniform(0, 0.2), 48.80 + rng.uniform(0, 0.2)
        d = rng.uniform(0.0004, 0.0012)
        ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
        features.append({"type": "Feature", "id": f"s{i:04d}",
                         "properties": {"name": f"Store {i}", "tags": ["coffee" if i % 3 == 0 else "shop"]},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    paths = {k: directory / n for k, n in (("fences", "fences.geojson"), ("campaigns", "campaigns.yaml"),
                                          ("keys", "keys.txt"), ("config", "service.yaml"))}
    paths["fences"].write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    paths["campaigns"].write_text(
        "defaults:\n  limits:\n    per_device:\n      - {max: 3, window: 24h}\n"
        "campaigns:\n"
        "  - id: coffee\n    name: Coffee\n    priority: 20\n    trigger: {on: enter, tags: [coffee]}\n"
        "    offer: {title: 'Hello {store.name}', body: '1 euro off'}\n"
        "    limits:\n      per_device: {max: 1, window: 1d}\n      budget: {total: 100000}\n"
        "  - id: shop\n    name: Shop\n    priority: 10\n    trigger: {on: enter, tags: [shop]}\n"
        "    offer: {title: 'Welcome', body: '10% off'}\n    limits:\n      per_device: {max: 1, window: 1d}\n"
    )
    paths["keys"].write_text(f"bench:sdk:{hashlib.sha256(KEY.encode()).hexdigest()}\n")
    # no rate limits: a benchmark's few hundred phones post far faster than real ones would (a per-device
    # limit would answer most of the SDK-shaped requests 429, cheaply, and flatter the CPU per request)
    paths["config"].write_text(f"rate_limit: 0\ndevice_rate_limit: 0\nmax_batch: {BATCH}\nmax_body_bytes: 4194304\n")
    paths["stores"] = directory / "stores.json"
    paths["stores"].write_text(json.dumps([f["geometry"]["coordinates"][0][0] for f in features]))
    return paths


def _baseline_server(port_file: str) -> None:
    """The peer: an aiohttp app that reads and parses the body, nothing else."""
    import orjson
    from aiohttp import web

    async def pings(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        return web.json_response({"accepted": len(doc["pings"])})

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/v1/pings", pings)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        Path(port_file).write_text(str(site._server.sockets[0].getsockname()[1]))  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(run())


def start_baseline(port_file: Path, limit_s: float = 60.0) -> tuple[Any, str]:
    """Start the peer (:func:`_baseline_server`) in a process of its own; returns it and its URL.

    Raises when it exits or does not listen within ``limit_s`` (an import error in the child, say),
    instead of waiting for its port forever."""
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(target=_baseline_server, args=(str(port_file),), daemon=True)
    proc.start()
    deadline = time.monotonic() + limit_s
    while not port_file.exists():
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the peer (bare aiohttp app) did not start: exit code {proc.exitcode}")
        time.sleep(0.05)
    time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``; just ``[pid]`` elsewhere)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds used so far by these processes (Linux ``/proc``), else ``None``."""
    total = 0.0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return total


def machine_seconds() -> tuple[float, float] | None:
    """``(busy, all)`` seconds of every core since boot (``/proc/stat``: all but idle and iowait; steal counts
    as busy: the guest could not run), else ``None``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / tick, sum(fields) / tick


def cores_busy(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float:
    """How many of the machine's cores were busy on average between two :func:`machine_seconds` (NaN unknown):
    the server, the load generators and every neighbour together."""
    if before is None or after is None or after[1] <= before[1]:
        return float("nan")
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def settle(pids: list[int], quiet_cpu_share: float = 0.05, step: float = 0.5, limit: float = 60.0) -> float:
    """Wait until the server's processes are quiet (under ``quiet_cpu_share`` of a core over ``step`` seconds, at
    most ``limit`` seconds); the CPU seconds they used meanwhile.

    Before a phase this lets what the warm-up caused (its offers' deliveries, acks) finish outside the measured
    CPU; after a phase, the CPU of what the phase's own requests left queued is counted with them."""
    start = _cpu_seconds(pids)
    if start is None:
        return 0.0
    last, deadline = start, time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(step)
        now = _cpu_seconds(pids)
        if now is None:
            break
        if now - last < quiet_cpu_share * step:
            return now - start
        last = now
    return last - start


def _start_serve(paths: dict[str, Path], workers: int, redis: str | None) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "proximity", "serve", "--port", "0", "--config", str(paths["config"]),
           "--fences", str(paths["fences"]), "--campaigns", str(paths["campaigns"]), "--keys", str(paths["keys"]),
           "--workers", str(workers), "--log-level", "error"]
    if redis:
        cmd += ["--redis", redis, "--redis-prefix", f"pxbench:{os.getpid()}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if m:
            url = m.group(1)
            break
    else:
        raise RuntimeError(f"proximity serve did not start: {proc.wait()}")
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("proximity serve did not become ready")


def _stop(proc: Any) -> None:
    if isinstance(proc, subprocess.Popen):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout:
            proc.stdout.close()
    else:
        proc.terminate()
        proc.join(10)


def _clear_redis(redis: str) -> None:
    """Remove this run's keys (on a cluster: from every master, one key per command)."""
    from redis.cluster import RedisCluster

    from proximity._redis.cluster import close, connect

    r = connect(redis, True)
    nodes = [r.get_redis_connection(n) for n in r.get_primaries()] if isinstance(r, RedisCluster) else [r]
    for node in nodes:
        pipe = node.pipeline(transaction=False)
        for key in node.scan_iter(match=f"pxbench:{os.getpid()}*", count=1000):
            pipe.unlink(key)
        pipe.execute()
    close(r)
