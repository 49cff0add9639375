"""The fault suite's parts: a scenario, `proximity serve --workers 2` on a real Redis behind a cuttable
proxy, a driver that retries each batch with its batch_id until it is answered 200, a fault schedule
(cuts mid-stream swept over the bytes of the batches in flight, refusals, black holes, kill -9 of a
worker), a /healthz probe, and the comparison with an in-process replay on the memory store.

Used by ``tests/proximity/test_faults.py``; the figures of one run come back as a dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

KEY = "fault-suite-key"
STORES = [("shop-1", 2.3500, 48.8500), ("shop-2", 2.3600, 48.8500), ("shop-3", 2.3700, 48.8500)]
SIZE = 0.002  # degrees
# The plan's pings start about 40 minutes ago: the campaigns take events up to a day old as live.
CAMPAIGNS = """\
campaigns:
  - id: welcome
    name: Welcome
    priority: 20
    max_event_age: 1d
    trigger: {on: enter, tags: [shop]}
    offer: {title: "Welcome to {store.name}"}
    limits:
      per_device: {max: 1, window: 1d}
  - id: come-back
    name: Come back
    priority: 10
    max_event_age: 1d
    trigger: {on: exit, tags: [shop]}
    offer: {title: "Thanks for visiting {store.name}"}
    limits:
      per_device: {max: 2, window: 1d}
"""
ENGINE = {"gps_debounce_s": 3600, "beacon_debounce_s": 3600}  # exits come from pings only, not from time


def write_scenario(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    features = []
    for fid, lon, lat in STORES:
        ring = [[lon, lat], [lon + SIZE, lat], [lon + SIZE, lat + SIZE], [lon, lat + SIZE], [lon, lat]]
        features.append({"type": "Feature", "id": fid, "properties": {"name": fid, "tags": ["shop"]},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    paths = {"fences": directory / "fences.geojson", "campaigns": directory / "campaigns.yaml",
             "keys": directory / "keys.txt", "config": directory / "service.yaml",
             "offers": directory / "offers.jsonl"}
    paths["fences"].write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    paths["campaigns"].write_text(CAMPAIGNS)
    paths["keys"].write_text(f"driver:sdk,admin:{hashlib.sha256(KEY.encode()).hexdigest()}\n")
    paths["config"].write_text("rate_limit: 0\nadvance_interval_s: 1\nshutdown_timeout_s: 10\nengine:\n"
                               + "".join(f"  {k}: {v}\n" for k, v in ENGINE.items()))
    return paths


def batches(now: float, groups: int, per_group: int, steps: int, steps_per_batch: int,
            seed: int) -> list[list[list[dict[str, Any]]]]:
    """``out[g]``: group g's batches, in the order they must be sent. Each device walks outside, into a
    shop, out, into another, out, into the first again, and over (phases of 6 pings, 10 s apart, 8 m
    outside and 12 m inside, as a phone's accuracy degrades indoors: the default profile enters a shop on
    its third or fourth fix inside)."""
    rng = random.Random(seed)
    out = []
    t0 = now - steps * 10 - 60
    for g in range(groups):
        rows_by_step: list[list[dict[str, Any]]] = [[] for _ in range(steps)]
        for d in range(per_group):
            dev = f"dev-{g:02d}-{d}"
            shops = [STORES[(g + d + k) % len(STORES)] for k in range(2)]
            for s in range(steps):
                phase = (s // 6 + d) % 6
                if phase % 2 == 0:
                    lon, lat = 2.3400 + rng.uniform(0, 0.04), 48.8400 + rng.uniform(-0.002, 0.0)
                else:
                    _, slon, slat = shops[(phase // 2) % 2]
                    lon, lat = slon + SIZE * rng.uniform(0.3, 0.7), slat + SIZE * rng.uniform(0.3, 0.7)
                rows_by_step[s].append({"device_id": dev, "lon": round(lon, 7), "lat": round(lat, 7),
                                        "accuracy_m": 12.0 if phase % 2 else 8.0,
                                        "ts": round(t0 + s * 10 + d * 0.01, 3)})
        out.append([[r for rows in rows_by_step[s:s + steps_per_batch] for r in rows]
                    for s in range(0, steps, steps_per_batch)])
    return out


@contextlib.contextmanager
def serve(paths: dict[str, Path], redis_url: str, prefix: str, workers: int = 2) -> Iterator[tuple[Any, str]]:
    """``proximity serve --workers N`` on a free port; yields (process, base URL)."""
    cmd = [sys.executable, "-m", "proximity", "serve", "--port", "0", "--config", str(paths["config"]),
           "--fences", str(paths["fences"]), "--campaigns", str(paths["campaigns"]), "--keys", str(paths["keys"]),
           "--workers", str(workers), "--redis", redis_url, "--redis-prefix", prefix,
           "--offers-file", str(paths["offers"]), "--log-level", os.environ.get("PROXIMITY_FAULT_LOG_LEVEL", "error")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PROXIMITY_API_KEYS", None)
    # its own process group: a start that fails kills the workers too (they would run on, orphaned)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + float(os.environ.get("PROXIMITY_FAULT_START_S", "90"))
    assert proc.stdout is not None
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            _kill_group(proc)
            raise RuntimeError(f"proximity serve exited ({proc.wait()}): {''.join(lines)}")
        lines.append(line)
        m = re.search(r"listening on (http://[\d.]+:\d+)", line)
        url = m.group(1) if m else None
    if url is None:
        _kill_group(proc)
        raise RuntimeError("proximity serve did not start")

    def drain() -> None:
        with contextlib.suppress(Exception):
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                del lines[:-300]

    threading.Thread(target=drain, daemon=True).start()
    proc.output = lines  # type: ignore[attr-defined]
    ready = 0
    while ready < 10 and time.monotonic() < deadline:  # both workers up: ten /readyz answered 200 in a row
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                ready = ready + 1 if r.status == 200 else 0
        except OSError:
            ready = 0
        time.sleep(0.05)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_group(proc)
        with contextlib.suppress(Exception):
            proc.stdout.close()


def _kill_group(proc: Any) -> None:
    """kill -9 what is left of the service's process group (its workers, when the supervisor is gone)."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Run:
    """What one run saw."""

    answers: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # (group, batch) -> 200 body
    attempts: Counter[str] = field(default_factory=Counter)
    faulted: set[tuple[int, int]] = field(default_factory=set)
    faults: Counter[str] = field(default_factory=Counter)
    healthz_max_s: float = 0.0
    healthz_slowest: list[tuple[float, int, str]] = field(default_factory=list)  # (ms, pid, fault then)
    healthz_blackhole_max_s: float = 0.0
    healthz_connect_max_s: float = 0.0  # the TCP handshake (the kernel's), kept apart from the answer
    healthz_restart_max_s: float = 0.0  # answers of a worker started after a kill -9, in its first 5 s
    seen: dict[int, float] = field(default_factory=dict)  # worker pid -> when /healthz first saw it
    killed_at: float = 0.0
    healthz_failures: int = 0
    pids: set[int] = field(default_factory=set)
    blackholed: bool = False
    current: str = "none"  # the fault being inflicted


async def drive(url: str, plan: list[list[list[dict[str, Any]]]], run: Run, tag: str,
                deadline: float, done: asyncio.Event) -> None:
    """Send every group's batches in order (groups concurrently) until ``done`` (then each group finishes the
    batch it is on); each batch is retried with its batch_id until it is answered 200."""
    headers = {"X-API-Key": KEY}
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def group(g: int) -> None:
            last: Any = None
            for k, rows in enumerate(plan[g]):
                if done.is_set():
                    return
                body = {"batch_id": f"{tag}-g{g}-b{k}", "pings": rows}
                while True:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"batch {g}/{k} not answered 200 before the deadline: attempts "
                                             f"{dict(run.attempts)}, last answer {last}")
                    try:
                        async with session.post(f"{url}/v1/pings", json=body, headers=headers) as r:
                            status, doc = r.status, await r.json(content_type=None)
                    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
                        status, doc = 0, repr(exc)
                    run.attempts[str(status)] += 1
                    last = (status, doc)
                    if status == 200:
                        run.answers[(g, k)] = doc
                        break
                    if status not in (0, 409, 503):
                        raise AssertionError(f"batch {g}/{k}: {status} {doc}")
                    if status == 503:
                        assert "Retry-After" in r.headers and "redis://" not in json.dumps(doc), doc
                    run.faulted.add((g, k))
                    await asyncio.sleep(0.1 + random.random() * 0.2)
                await asyncio.sleep(0.05)

        await asyncio.gather(*(group(g) for g in range(len(plan))))


async def probe_healthz(url: str, run: Run, stop: asyncio.Event) -> None:
    """/healthz every 50 ms on a new connection each time (as a liveness probe does; the kernel hands it
    to any worker, so a worker just restarted after a kill -9 is probed too), timed from the established
    connection to the body: the worker's answer. The TCP handshake is the kernel's, not the worker's, and
    on a loaded machine a SYN dropped once costs the client a 1 s retransmission timer whatever the worker
    does, so the connect time is kept apart (``healthz_connect_max_s``)."""
    connected: dict[str, float] = {}

    async def on_connected(session: Any, ctx: Any, params: Any) -> None:
        connected["at"] = time.perf_counter()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connected)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), connector=connector,
                                     trace_configs=[trace]) as session:
        while not stop.is_set():
            started = time.perf_counter()
            connected.clear()
            try:
                async with session.get(f"{url}/healthz") as r:
                    doc = await r.json()
                    pid = int(doc["pid"])
                    run.pids.add(pid)
                end = time.perf_counter()
                took = end - connected.get("at", started)
                run.healthz_connect_max_s = max(run.healthz_connect_max_s, connected.get("at", started) - started)
                first = run.seen.setdefault(pid, time.monotonic())
                restarting = bool(run.killed_at and first > run.killed_at and time.monotonic() - first < 5.0)
                if restarting:
                    run.healthz_restart_max_s = max(run.healthz_restart_max_s, took)
                run.healthz_max_s = max(run.healthz_max_s, took)
                run.healthz_slowest = sorted([*run.healthz_slowest, (round(took * 1000, 1), int(doc["pid"]),
                                                                     run.current)], reverse=True)[:3]
                if run.blackholed and not restarting:  # a restarted worker's first answers: recorded above
                    run.healthz_blackhole_max_s = max(run.healthz_blackhole_max_s, took)
            except (TimeoutError, aiohttp.ClientError):
                run.healthz_failures += 1  # a worker just killed: its connection reset
            await asyncio.sleep(0.05)


async def inflict(proxy: Any, supervisor: Any, run: Run, done: asyncio.Event, rng: random.Random,
                  sweep: int) -> None:
    """The fault schedule, then ``done``: first cuts mid-stream after n bytes, n swept from 0 up to
    ``sweep`` (the cuts land in every step of the batches in flight: idempotency claim, load, save,
    caps, outbox, answer record), then, shuffled, cuts, cuts after a random n, refusals (0.3-1 s),
    black holes (0.5-1.5 s) and kill -9 of a worker, 0.3-0.8 s apart."""
    step = max(1, sweep // 16)
    for n in range(0, sweep, step):
        run.current = "cut_after sweep"
        proxy.cut_after(n)
        run.faults["cut_after"] += 1
        await asyncio.sleep(0.25)
    chaos = ["cut"] * 3 + ["cut_after"] * 3 + ["refuse"] * 2 + ["blackhole"] * 2 + ["kill"] * 2
    rng.shuffle(chaos)
    for kind in chaos:
        run.current = kind
        if kind == "cut":
            proxy.cut()
        elif kind == "cut_after":
            proxy.cut_after(rng.randrange(0, sweep))
        elif kind == "refuse":
            proxy.refuse()
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            proxy.restore()
        elif kind == "blackhole":
            proxy.blackhole()
            run.blackholed = True
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            run.blackholed = False
            proxy.restore()
        else:
            for _ in range(40):  # a worker pid seen by /healthz since the last kill
                alive = [p for p in run.pids if p != supervisor.pid and _alive(p)]
                if alive:
                    break
                await asyncio.sleep(0.1)
            if not alive:
                continue
            os.kill(rng.choice(sorted(alive)), signal.SIGKILL)
            run.killed_at = time.monotonic()
            run.pids.clear()
        run.faults[kind] += 1
        run.current = f"after {kind}"
        await asyncio.sleep(rng.uniform(0.3, 0.8))
    done.set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def event_key(dev: str, e: dict[str, Any]) -> tuple[Any, ...]:
    return (dev, e["kind"], e["fence_id"], e["ts"], e.get("cause"), e.get("dwell_s"))


def compare(plan: list[list[list[dict[str, Any]]]], answers: dict[tuple[int, int], dict[str, Any]],
            oracle: dict[tuple[int, int], dict[str, Any]]) -> dict[str, int]:
    """Every event and offer of every answer against the oracle's, batch by batch and in total."""
    got_e: Counter[tuple[Any, ...]] = Counter()
    want_e: Counter[tuple[Any, ...]] = Counter()
    got_o: Counter[str] = Counter()
    want_o: Counter[str] = Counter()
    mismatched = 0
    for key in oracle:
        mine = answers.get(key, {"devices": {}})
        a = sorted(event_key(d, e) for d, out in mine["devices"].items() for e in out["events"])
        b = sorted(event_key(d, e) for d, out in oracle[key]["devices"].items() for e in out["events"])
        ao = sorted(o["offer_id"] for out in mine["devices"].values() for o in out["offers"])
        bo = sorted(o["offer_id"] for out in oracle[key]["devices"].values() for o in out["offers"])
        mismatched += (a != b) or (ao != bo)
        got_e.update(a)
        want_e.update(b)
        got_o.update(ao)
        want_o.update(bo)
    return {
        "events_compared": sum(want_e.values()),
        "offers_compared": sum(want_o.values()),
        "events_lost": sum((want_e - got_e).values()),
        "events_extra": sum((got_e - want_e).values()),
        "events_duplicated": sum(c - 1 for c in got_e.values() if c > 1),
        "offers_lost": sum((want_o - got_o).values()),
        "offers_extra": sum((got_o - want_o).values()),
        "offers_duplicated": sum(c - 1 for c in got_o.values() if c > 1),
        "batches_mismatched": int(mismatched),
    }


def delivered(path: Path) -> Counter[str]:
    """Offer ids in the JSONL sink (a torn last line from a kill -9 is skipped)."""
    out: Counter[str] = Counter()
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            out[json.loads(line)["offer_id"]] += 1
    return out


__all__ = ["KEY", "Run", "batches", "compare", "delivered", "drive", "inflict", "probe_healthz", "serve",
           "write_scenario"]
