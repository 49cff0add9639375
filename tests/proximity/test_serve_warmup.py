"""`proximity serve` warms its kernels before it says it is ready: /readyz answers 503 meanwhile, the
"listening" banner comes after, and a request after the warm-up compiles nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proximity.service import bind_socket, serve_forever
from proximity.service.auth import KeyRing, hash_key
from proximity.service.config import ServiceConfig
from proximity.service.host import EngineHost

ROOT = Path(__file__).resolve().parents[2]
SDK = "sdk-key-123"
KEYS = KeyRing.parse(f"app:sdk:{hash_key(SDK)}")


async def test_readyz_says_warming_up_until_the_kernels_are_warm(monkeypatch: Any) -> None:
    release = threading.Event()
    original = EngineHost.warm_up

    def slow_warm_up(self: EngineHost) -> float:
        release.wait(60)  # the engine thread compiles for as long as the test wants
        return original(self)

    monkeypatch.setattr(EngineHost, "warm_up", slow_warm_up)
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ready = asyncio.Event()
    worker = asyncio.create_task(serve_forever(ServiceConfig(demo=True, rate_limit=0), sock, keys=KEYS,
                                               on_ready=lambda svc: ready.set()))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # the site answers while the engine thread is busy warming up
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/readyz") as r:
                        body = await r.json()
                        break
                await asyncio.sleep(0.05)
            assert r.status == 503 and "warming up" in json.dumps(body)
            assert not ready.is_set()
            release.set()
            await asyncio.wait_for(ready.wait(), 120)
            async with session.get(f"{url}/readyz") as r:
                assert r.status == 200
    finally:
        release.set()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


WARM_THEN_REQUEST = """
import json, time
from proximity.service.config import ServiceConfig
from proximity.service.host import EngineHost
from proximity.service.metrics import ServiceMetrics
from proximity.service.reload import KINDS
import geofence._kernels, proximity._kernels, proximity._kernels_visit, proximity._kernels_ids, beacons._kernels
from proxbase.jit import Kernel

def compiled():
    mods = (geofence._kernels, proximity._kernels, proximity._kernels_visit, proximity._kernels_ids, beacons._kernels,
            *MODS)
    return {f"{m.__name__}.{n}": len(k.signatures) for m in mods for n, k in vars(m).items() if isinstance(k, Kernel)}

import sys
redis_args = dict(redis=sys.argv[1], redis_prefix=sys.argv[2]) if len(sys.argv) > 2 else {}
if len(sys.argv) > 3:  # the cluster protocol (grouped key layout) on that Redis
    redis_args["redis_cluster"] = True
if redis_args:
    import proximity._redis._kernels_codec
    MODS = (proximity._redis._kernels_codec,)
else:
    MODS = ()
cfg = ServiceConfig(demo=True, **redis_args)
host = EngineHost(cfg, ServiceMetrics())
for kind, path in cfg.resolved_paths().items():
    if path is not None:
        host.apply(kind, host.validate(kind, path.read_text(), "application/yaml", str(path)))
host.warm_up()
before = compiled()
now = time.time()
rows = [{"device_id": "d1", "lon": 2.344674, "lat": 48.862634, "accuracy_m": 5, "ts": now - 30},
        {"device_id": "d2", "lon": 2.0, "lat": 48.0, "accuracy_m": 5, "ts": now - 20}]
result, accepted, rejected = host.process_pings(rows, now)
key = next(iter(host.registry.beacons))
doc = {"gateway_id": "gw-store-01", "batch_id": "b1", "sent_at": now,
       "sightings": [{"ts": now - 10, "rssi": -60, "key": key, "tx_power": -59}]}
host.process_scans(doc, now)
host.engine.advance(now + 3600)
after = compiled()
print(json.dumps({"accepted": accepted, "before": before, "after": after}))
"""


def _warm_then_request(tmp_path: Path, *args: str) -> dict[str, Any]:
    # a process of its own: the kernels this test process already compiled would hide a miss
    got = subprocess.run([sys.executable, "-c", WARM_THEN_REQUEST, *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, check=False)
    assert got.returncode == 0, got.stderr
    doc: dict[str, Any] = json.loads(got.stdout.splitlines()[-1])
    assert doc["accepted"] == 2
    assert doc["before"]["geofence._kernels.match"] == 1 and doc["before"]["proximity._kernels.transition"] == 1
    # pings, sightings and advancing time all ran through one compiled signature of the transition kernel
    assert doc["after"]["proximity._kernels.transition"] == 1
    assert {k: v for k, v in doc["after"].items() if doc["before"][k] != v} == {}
    return doc


def test_after_the_warm_up_a_request_compiles_nothing(tmp_path: Path) -> None:
    _warm_then_request(tmp_path)


@pytest.mark.redis
@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster-mode"])
def test_with_redis_state_the_warm_up_compiles_the_codec_too(tmp_path: Path, redis_url: str,
                                                              redis_prefix: str, cluster: bool) -> None:
    """The Redis store's codec loops (parse, copy, compare) and its key layout's (device groups) are compiled
    before the worker is ready: its first pings, sightings and advance compile nothing, in cluster mode too."""
    doc = _warm_then_request(tmp_path, redis_url, redis_prefix, *(["cluster"] if cluster else []))
    # (the helpers they call, ``_get8`` ..., are compiled into them: loaded from the cache, they have no code)
    codec = {k: v for k, v in doc["before"].items()
             if k.startswith("proximity._redis._kernels_codec.") and not k.rpartition(".")[2].startswith("_")}
    assert set(codec) == {f"proximity._redis._kernels_codec.{n}" for n in (
        "count_records", "decode_into", "encode_state", "gather_ranges", "name_groups", "parse_values", "ranges_differ",
        "save_blobs")}
    assert all(v >= 1 for v in codec.values())


def test_serve_prints_listening_after_the_warm_up(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "proximity", "serve", "--port", "0", "--log-level", "info"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                break
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    text = "".join(lines)
    assert "listening on" in text, text
    warm = next(i for i, line in enumerate(lines) if "kernels ready in" in line)
    listening = next(i for i, line in enumerate(lines) if "listening on" in line)
    assert warm < listening
