"""``--via http``: the simulation against real ``proximity serve`` workers over loopback HTTP.

The feeder writes the city's fences, beacon registry and the scenario's
campaigns to a temporary directory, starts ``python -m proximity serve
--workers N`` on a free port of 127.0.0.1 (with Redis when N > 1: workers
share state there), waits for ``/readyz``, posts the pings to ``/v1/pings``
in batches of ``run.http_batch`` (one device's pings of a round always in one
batch, rounds in order, batches of a round concurrently) and the phones'
beacon sightings to ``/v1/scans`` (one body per phone, the phone as the
observer), collects the events and offers from the responses, and stops the
workers (SIGTERM: graceful shutdown) at the end.

Simulated time and the service's clock: the workers call ``engine.advance``
on the wall clock, which a simulated day (in the past) cannot drive; the
feeder turns that loop off (``advance_interval_s``) and lets simulated time
pass itself with ``POST /v1/advance`` (admin) at the end of every slice, as
the in-process runner calls ``Engine.advance``: debounce exits come on the
simulated clock. (With several workers the state is in Redis, and whichever
worker takes the call advances every device due.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import SimError
from sim.runner import Feeder, Simulation
from sim.sensors import Pings, Sightings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpFeeder(Feeder):
    def __init__(self, sim: Simulation, *, workers: int = 2, redis_url: str | None = None,
                 redis_prefix: str | None = None, start_timeout_s: float = 60.0) -> None:
        import aiohttp

        from proximity.events import Event

        self._Event = Event
        self.sim = sim
        self.workers = max(1, int(workers))
        self.batch = sim.scenario.run.http_batch
        self.notes: list[str] = []
        if sim.scenario.tracker and len(sim.sightings):
            self.notes.append(
                "via http: 'proximity serve' takes no beacon tracker settings, so the workers range beacons with "
                f"the tracker's defaults, not the scenario's tracker: {dict(sim.scenario.tracker)}"
            )
        self.stats: dict[str, int] = {"pings": 0, "sightings": 0, "requests": 0, "late": 0, "rejected": 0}
        self.campaigns = None
        self._dir = tempfile.TemporaryDirectory(prefix="proximity-sim-http-")
        d = Path(self._dir.name)
        (d / "fences.geojson").write_text(json.dumps(sim.world.to_geojson()), encoding="utf-8")
        (d / "beacons.yaml").write_text(sim.registry_yaml(), encoding="utf-8")
        self.key = secrets.token_urlsafe(24)
        (d / "keys").write_text(f"sim:sdk,gateway,admin:{hashlib.sha256(self.key.encode()).hexdigest()}\n",
                                encoding="utf-8")
        cfg = {"advance_interval_s": 10_000_000, "rate_limit": 0, "max_batch": max(1000, self.batch), "replay": True,
               "max_scan_rows": 10_000, "engine": dict(sim.scenario.engine)}
        (d / "config.yaml").write_text(json.dumps(cfg), encoding="utf-8")
        self.port = _free_port()
        cmd = [sys.executable, "-m", "proximity", "serve", "--config", str(d / "config.yaml"),
               "--keys", str(d / "keys"), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(self.workers), "--fences", str(d / "fences.geojson"), "--no-demo",
               "--log-level", "warning"]
        if sim.world.beacons:
            cmd += ["--beacons", str(d / "beacons.yaml")]
        path = sim.scenario.campaigns_path()
        if path is not None:
            import campaigns
            import geofence

            self.campaigns = campaigns.load_campaigns(path, geofence.load_geojson(sim.world.to_geojson()))
            cmd += ["--campaigns", str(path)]
        self._owns_prefix = False
        if self.workers > 1 or redis_url:
            self.redis_url: str | None = redis_url or "redis://127.0.0.1:6379/0"
            self.prefix = redis_prefix or f"sim:{uuid.uuid4().hex[:10]}"
            self._owns_prefix = redis_prefix is None
            cmd += ["--redis", self.redis_url, "--redis-prefix", self.prefix]
        else:
            self.redis_url = None
        self._log = open(d / "serve.log", "w+b")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.session: aiohttp.ClientSession = self.loop.run_until_complete(self._session())
        try:
            self._wait_ready(start_timeout_s)
        except BaseException:
            self.close()
            raise

    async def _session(self) -> Any:
        import aiohttp

        return aiohttp.ClientSession(headers={"X-API-Key": self.key},
                                     connector=aiohttp.TCPConnector(limit=8 * self.workers, force_close=False),
                                     timeout=aiohttp.ClientTimeout(total=120))

    def _wait_ready(self, timeout: float) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout

        async def ready() -> bool:
            try:
                async with self.session.get(f"{self.base}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SimError(f"'proximity serve' exited with {self.proc.returncode}: {self._tail()}", field="via")
            if self.loop.run_until_complete(ready()):
                return
            time.sleep(0.2)
        raise SimError(f"'proximity serve' was not ready after {timeout:g} s: {self._tail()}", field="via")

    def _tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-2000:].strip()

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        async with self.session.post(f"{self.base}{path}", json=body) as r:
            doc = await r.json(content_type=None)
            if r.status >= 400:
                raise SimError(f"POST {path}: HTTP {r.status}: {json.dumps(doc)[:500]}", field="via")
        self.stats["requests"] += 1
        self.stats["rejected"] += len(doc.get("rejected") or [])
        st = doc.get("stats") or {}
        self.stats["late"] += int(st.get("late", 0) or 0)
        events: list[Any] = []
        offers: list[Any] = []
        for per in (doc.get("devices") or {}).values():
            events += [self._Event.from_dict(e) for e in per.get("events", ())]
            offers += list(per.get("offers", ()))
        return events, offers

    async def _gather(self, posts: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
        results = await asyncio.gather(*(self._post(p, b) for p, b in posts))
        events: list[Any] = []
        offers: list[Any] = []
        for ev, of in results:
            events += ev
            offers += of
        return events, offers

    def pings(self, device_id: np.ndarray, p: Pings) -> tuple[list[Any], list[Any]]:
        n_batches = max(1, int(np.ceil(len(p) / self.batch)))
        which = p.device % n_batches  # a device's pings stay in one batch (no reordering between batches)
        posts = []
        for b in range(n_batches):
            idx = np.flatnonzero(which == b)
            if not len(idx):
                continue
            rows = [{"device_id": str(device_id[i]), "lon": float(p.lon[i]), "lat": float(p.lat[i]),
                     "accuracy_m": float(p.accuracy_m[i]), "ts": float(p.ts[i]), "speed": float(p.speed[i])}
                    for i in idx]
            posts.append(("/v1/pings", {"batch_id": uuid.uuid4().hex, "pings": rows}))
        self.stats["pings"] += len(p)
        return self.loop.run_until_complete(self._gather(posts))

    def sightings(self, observer: np.ndarray, keys: np.ndarray, s: Sightings) -> tuple[list[Any], list[Any]]:
        posts = []
        order = np.argsort(s.device, kind="stable")
        dev = s.device[order]
        starts = np.flatnonzero(np.r_[True, dev[1:] != dev[:-1]])
        ends = np.r_[starts[1:], len(dev)]
        for a, b in zip(starts, ends, strict=True):
            idx = order[a:b]
            rows = [{"ts": float(s.ts[i]), "rssi": float(s.rssi[i]), "key": str(keys[i]),
                     "tx_power": float(s.tx_power[i])} for i in idx]
            posts.append(("/v1/scans", {"gateway_id": str(observer[idx[0]]), "batch_id": uuid.uuid4().hex,
                                        "sent_at": float(s.ts[idx].max()), "sightings": rows}))
        self.stats["sightings"] += len(s)
        return self.loop.run_until_complete(self._gather(posts))

    def advance(self, now: float) -> tuple[list[Any], list[Any]]:
        """Simulated time passes to ``now`` in the workers (their own wall-clock loop is off)."""
        return self.loop.run_until_complete(self._gather([("/v1/advance", {"now": float(now)})]))

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            self.loop.run_until_complete(self.session.close())
            self.session = None  # type: ignore[assignment]
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.loop.close()
        self._log.close()
        if self._owns_prefix and self.redis_url:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            try:
                keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
                for i in range(0, len(keys), 500):
                    client.delete(*keys[i:i + 500])
            finally:
                client.close()
        self._dir.cleanup()
