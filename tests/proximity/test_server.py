"""The HTTP service over real aiohttp sockets: routes, scopes, errors, limits, idempotency, reload, live feed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proximity.service import create_app, service_of
from proximity.service.auth import KeyRing, hash_key
from proximity.service.collector import YOUNG_THRESHOLD
from proximity.service.config import ServiceConfig

SDK, GATEWAY, ADMIN, READ = "sdk-key-123", "gateway-key-456", "admin-key-789", "read-key-000"
KEYS = KeyRing.parse(
    f"app:sdk:{hash_key(SDK)}\ngw:gateway:{hash_key(GATEWAY)}\nops:admin:{hash_key(ADMIN)}\n"
    f"viewer:read:{hash_key(READ)}"
)


def square(fid: str, lon: float, lat: float, d: float = 0.002, **props: Any) -> dict[str, Any]:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Feature", "id": fid, "properties": {"name": fid, **props},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


def fences_doc(*features: dict[str, Any]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}, indent=1)


STORE_A = square("store-a", 2.350, 48.850)
STORE_B = square("store-b", 2.360, 48.860)
INSIDE_A = (2.351, 48.851)
INSIDE_B = (2.361, 48.861)


def ping(device: str, lonlat: tuple[float, float], ts: float, acc: float = 5.0, **extra: Any) -> dict[str, Any]:
    return {"device_id": device, "lon": lonlat[0], "lat": lonlat[1], "accuracy_m": acc, "ts": ts, **extra}


@pytest.fixture
def fences_file(tmp_path: Path) -> Path:
    p = tmp_path / "fences.geojson"
    p.write_text(fences_doc(STORE_A))
    return p


@pytest.fixture
def make_client(aiohttp_client, fences_file: Path):
    async def make(**overrides: Any):
        # one ping enters and one ping exits: these tests pin the crossing profile's behaviour over HTTP
        cfg = ServiceConfig(**{"fences": str(fences_file), "reload_interval_s": 0.1, "rate_limit": 0,
                               "engine": {"profile": "crossing"}, **overrides})
        server = TestServer(create_app(cfg, keys=KEYS))
        await server.start_server(auto_decompress=False)  # as make_runner() runs it: we gunzip ourselves
        return await aiohttp_client(server)

    return make


def h(key: str, **more: str) -> dict[str, str]:
    return {"X-API-Key": key, **more}


async def test_public_routes(make_client) -> None:
    client = await make_client()
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 200 and body["status"] == "ready" and body["config"]["fences"] == 1
    r = await client.get("/openapi.json")
    assert r.status == 200 and (await r.json())["openapi"].startswith("3.")
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE proximity_pings_total counter" in await r.text()


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [("POST", "/v1/pings", "sdk"), ("POST", "/v1/scans", "gateway,sdk"), ("GET", "/v1/fences", "read"),
     ("PUT", "/v1/campaigns", "admin"), ("GET", "/v1/devices/d1", "read"), ("DELETE", "/v1/devices/d1", "admin"),
     ("POST", "/v1/devices/d1/opt-out", "admin"), ("GET", "/v1/events", "read"),
     ("PUT", "/v1/fences", "admin"), ("POST", "/v1/advance", "admin"), ("GET", "/v1/console/fleet", "read"),
     ("POST", "/v1/campaigns/c1/status", "admin"), ("POST", "/v1/fences/check", "admin")],
)
async def test_keys_and_scopes(make_client, method: str, path: str, scope: str) -> None:
    client = await make_client()
    r = await client.request(method, path, data=b"{}")
    assert r.status == 401
    body = await r.json()
    assert "API key" in body["error"] and body["field"] == "X-API-Key"
    r = await client.request(method, path, data=b"{}", headers=h("not-a-key"))
    assert r.status == 401
    for key, key_scope in ((SDK, "sdk"), (GATEWAY, "gateway"), (ADMIN, "admin"), (READ, "read")):
        r = await client.request(method, path, data=b"{}", headers={"Authorization": f"Bearer {key}"})
        if key_scope in scope.split(",") or (scope == "read" and key_scope == "admin"):  # admin keys may read
            assert r.status not in (401, 403), await r.text()
        else:
            assert r.status == 403
            error = (await r.json())["error"]
            assert all(s in error for s in scope.split(","))


async def test_rate_limit_429_with_retry_after(make_client) -> None:
    client = await make_client(rate_limit=1.0, rate_burst=2.0)
    statuses = [(await client.get("/v1/fences", headers=h(ADMIN))).status for _ in range(2)]
    assert statuses == [200, 200]
    r = await client.get("/v1/fences", headers=h(ADMIN))
    assert r.status == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "rate limit" in (await r.json())["error"]
    # another key has its own bucket
    r = await client.post("/v1/pings", json={"pings": [ping("d", INSIDE_A, time.time())]}, headers=h(SDK))
    assert r.status == 200


async def test_pings_produce_events_per_device(make_client) -> None:
    client = await make_client()
    now = time.time()
    rows = [ping("dev-1", INSIDE_A, now - 10), ping("dev-2", (2.30, 48.80), now - 10)]
    r = await client.post("/v1/pings", json={"pings": rows}, headers=h(SDK))
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["accepted"] == 2 and body["rejected"] == []
    events = body["devices"]["dev-1"]["events"]
    assert [(e["kind"], e["fence_id"]) for e in events] == [("enter", "store-a")]
    assert "dev-2" not in body["devices"]
    # a bare list is accepted too
    r = await client.post("/v1/pings", json=[ping("dev-3", INSIDE_A, now - 5)], headers=h(SDK))
    assert r.status == 200 and (await r.json())["devices"]["dev-3"]["events"][0]["kind"] == "enter"
    metrics = await (await client.get("/metrics")).text()
    assert 'proximity_pings_total{outcome="accepted"} 3' in metrics
    assert 'proximity_events_total{kind="enter",source="gps"} 2' in metrics
    # latency histograms: per route (HTTP) and per engine call
    assert 'proximity_http_request_seconds_count{route="/v1/pings"} 2' in metrics
    assert 'proximity_http_request_seconds_bucket{route="/v1/pings",le="+Inf"} 2' in metrics
    assert 'proximity_engine_batch_seconds_count{kind="pings"} 2' in metrics
    assert 'proximity_http_requests_total{route="/v1/pings",status="200"} 2' in metrics


async def test_partly_bad_batch_processes_good_rows_and_lists_bad_ones(make_client) -> None:
    client = await make_client()
    now = time.time()
    rows = [
        ping("good-1", INSIDE_A, now),
        ping("bad-lat", (2.35, 91.0), now),
        {"device_id": "bad-missing", "lon": 2.35, "lat": 48.85, "ts": now},
        ping("bad-ts", INSIDE_A, "yesterday"),  # type: ignore[arg-type]
        ping("bad-future", INSIDE_A, now + 3600),
        ping("bad-type", ("2.35", 48.85), now) | {"lon": [1]},
        "not an object",
        ping("good-2", INSIDE_A, now),
    ]
    r = await client.post("/v1/pings", json={"pings": rows}, headers=h(SDK))
    assert r.status == 200
    body = await r.json()
    assert body["accepted"] == 2
    assert sorted(body["devices"]) == ["good-1", "good-2"]
    by_row = {e["row"]: e for e in body["rejected"]}
    assert sorted(by_row) == [1, 2, 3, 4, 5, 6]
    assert by_row[1]["field"] == "lat"
    assert by_row[2]["field"] == "accuracy_m"
    assert by_row[3]["field"] == "ts"
    assert by_row[4]["field"] == "ts" and "ahead of the server clock" in by_row[4]["error"]
    assert by_row[5]["field"] == "lon"


async def test_nan_and_infinity_are_rejected_with_row_and_field(make_client) -> None:
    client = await make_client()
    now = time.time()
    text = (f'{{"pings": [{{"device_id": "a", "lon": NaN, "lat": 48.85, "accuracy_m": 5, "ts": {now}}},'
            f'{{"device_id": "b", "lon": 2.35, "lat": 48.85, "accuracy_m": Infinity, "ts": {now}}},'
            f'{{"device_id": "c", "lon": 2.35, "lat": 1e999, "accuracy_m": 5, "ts": {now}}}]}}')
    r = await client.post("/v1/pings", data=text, headers=h(SDK, **{"Content-Type": "application/json"}))
    assert r.status == 422
    body = await r.json()
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "lon"), (1, "accuracy_m"), (2, "lat")]


@pytest.mark.parametrize(
    ("data", "status", "field"),
    [
        (b'{"pings": [', 400, "body"),
        (b"", 400, "body"),
        (b"\xff\xfe", 400, "body"),
        (b'"just a string"', 400, "body"),
        (b'{"pings": {}}', 400, "pings"),
        (b'{"pings": []}', 400, "pings"),
        (b'{"ping": []}', 400, "ping"),
        (b'{"batch_id": 7, "pings": [{}]}', 400, "batch_id"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "body"),
    ],
)
async def test_malformed_bodies_get_400_naming_the_field(make_client, data: bytes, status: int, field: str) -> None:
    client = await make_client()
    r = await client.post("/v1/pings", data=data, headers=h(SDK))
    assert r.status == status, await r.text()
    body = await r.json()
    assert body["field"] == field and body["error"]


async def test_malformed_json_names_line_and_col(make_client) -> None:
    client = await make_client()
    r = await client.post("/v1/pings", data=b'{"pings": [\n  {"a": 1,}\n]}', headers=h(SDK))
    body = await r.json()
    assert r.status == 400 and (body["line"], body["col"]) == (2, 11)


async def test_too_many_rows_and_too_many_bytes_413(make_client) -> None:
    client = await make_client(max_batch=10, max_body_bytes=4000)
    now = time.time()
    r = await client.post("/v1/pings", json={"pings": [ping("d", INSIDE_A, now)] * 11}, headers=h(SDK))
    assert r.status == 413 and (await r.json())["field"] == "pings"
    r = await client.post("/v1/pings", data=b" " * 5000, headers=h(SDK))
    assert r.status == 413 and (await r.json())["field"] == "body"


async def test_gzip_bodies_and_gzip_bombs(make_client) -> None:
    client = await make_client(max_body_bytes=100_000)
    now = time.time()
    payload = json.dumps({"pings": [ping("gz", INSIDE_A, now)]}).encode()
    r = await client.post("/v1/pings", data=gzip.compress(payload), headers=h(SDK, **{"Content-Encoding": "gzip"}))
    assert r.status == 200 and (await r.json())["accepted"] == 1
    # 50 MB of spaces compress to about 50 kB: refused after 100 kB of output, never inflated whole
    bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]", compresslevel=9)
    assert len(bomb) < 100_000
    r = await client.post("/v1/pings", data=bomb, headers=h(SDK, **{"Content-Encoding": "gzip"}))
    assert r.status == 413 and "inflates" in (await r.json())["error"]
    r = await client.post("/v1/pings", data=b"\x1f\x8bnot gzip at all",
                          headers=h(SDK, **{"Content-Encoding": "gzip"}))
    assert r.status == 400 and "gzip" in (await r.json())["error"]
    r = await client.post("/v1/pings", data=gzip.compress(payload)[:-10],
                          headers=h(SDK, **{"Content-Encoding": "gzip"}))
    assert r.status == 400
    r = await client.post("/v1/pings", data=payload, headers=h(SDK, **{"Content-Encoding": "br"}))
    assert r.status == 415


async def test_batch_id_replays_the_first_response(make_client) -> None:
    client = await make_client()
    now = time.time()
    doc = {"batch_id": "b-1", "pings": [ping("idem", INSIDE_A, now)]}
    r1 = await client.post("/v1/pings", json=doc, headers=h(SDK))
    first = await r1.read()
    assert r1.status == 200 and "Idempotent-Replay" not in r1.headers
    r2 = await client.post("/v1/pings", json=doc, headers=h(SDK))
    assert r2.status == 200 and r2.headers["Idempotent-Replay"] == "true"
    assert await r2.read() == first
    metrics = await (await client.get("/metrics")).text()
    assert 'proximity_pings_total{outcome="accepted"} 1' in metrics
    assert "proximity_idempotent_replays_total 1" in metrics
    # a different batch_id is processed
    r3 = await client.post("/v1/pings", json={**doc, "batch_id": "b-2"}, headers=h(SDK))
    assert "Idempotent-Replay" not in r3.headers


async def test_put_fences_validated_before_replacing(make_client, fences_file: Path) -> None:
    client = await make_client()
    bad = fences_doc(STORE_A, square("store-a", 2.36, 48.86))  # duplicate id
    r = await client.put("/v1/fences", data=bad, headers=h(ADMIN, **{"Content-Type": "application/geo+json"}))
    assert r.status == 400
    body = await r.json()
    assert "duplicate" in body["error"] and body["errors"]
    r = await client.put("/v1/fences", data=b'{"type": "FeatureCollection", "features": [\n}',
                         headers=h(ADMIN))
    body = await r.json()
    assert r.status == 400 and body.get("line") == 2
    r = await client.put("/v1/fences", data=b"/etc/passwd", headers=h(ADMIN))
    assert r.status == 400
    r = await client.get("/v1/fences", headers=h(ADMIN))
    assert r.headers["X-Config-Version"] == "1" and await r.text() == fences_file.read_text()
    # a good one replaces it; pings now match the new fence
    r = await client.put("/v1/fences", data=fences_doc(STORE_A, STORE_B), headers=h(ADMIN))
    assert r.status == 200, await r.text()
    assert (await r.json())["version"] == 2 and (await r.json())["count"] == 2
    r = await client.post("/v1/pings", json=[ping("dev-b", INSIDE_B, time.time())], headers=h(SDK))
    assert [e["fence_id"] for e in (await r.json())["devices"]["dev-b"]["events"]] == ["store-b"]


async def test_watched_file_is_hot_reloaded_and_a_bad_file_changes_nothing(make_client, fences_file: Path) -> None:
    client = await make_client()
    fences_file.write_text("{ not json")
    await asyncio.sleep(0.5)
    r = await client.get("/v1/fences", headers=h(ADMIN))
    assert r.headers["X-Config-Version"] == "1"
    metrics = await (await client.get("/metrics")).text()
    assert 'proximity_reloads_total{kind="fences",result="error"}' in metrics
    fences_file.write_text(fences_doc(STORE_A, STORE_B))
    for _ in range(50):
        await asyncio.sleep(0.1)
        r = await client.get("/v1/fences", headers=h(ADMIN))
        if r.headers["X-Config-Version"] == "2":
            break
    assert r.headers["X-Config-Version"] == "2"
    r = await client.post("/v1/pings", json=[ping("dev-b", INSIDE_B, time.time())], headers=h(SDK))
    assert (await r.json())["devices"]["dev-b"]["events"][0]["fence_id"] == "store-b"


async def test_devices_state_opt_out_and_erase(make_client) -> None:
    client = await make_client()
    await client.post("/v1/pings", json=[ping("dev-x", INSIDE_A, time.time())], headers=h(SDK))
    r = await client.get("/v1/devices/dev-x", headers=h(ADMIN))
    assert r.status == 200
    state = await r.json()
    assert state["device_id"] == "dev-x" and "store-a" in json.dumps(state)
    r = await client.post("/v1/devices/dev-x/opt-out", headers=h(ADMIN))
    assert r.status == 200 and (await r.json())["opt_out"] is True
    r = await client.post("/v1/devices/dev-x/opt-out", json={"opt_out": "yes"}, headers=h(ADMIN))
    assert r.status == 400 and (await r.json())["field"] == "opt_out"
    r = await client.delete("/v1/devices/dev-x", headers=h(ADMIN))
    assert r.status == 200 and (await r.json())["erased"] is True
    r = await client.get("/v1/devices/dev-x", headers=h(ADMIN))
    assert "store-a" not in json.dumps(await r.json())


async def test_live_feed_filters(make_client) -> None:
    client = await make_client()
    fences_b = fences_doc(STORE_A, STORE_B)
    await client.put("/v1/fences", data=fences_b, headers=h(ADMIN))
    ws_all = await client.ws_connect("/v1/events", headers=h(ADMIN))
    token = "proximity.key." + base64.urlsafe_b64encode(READ.encode()).decode().rstrip("=")
    ws_b = await client.ws_connect("/v1/events?fence=store-b&kind=enter", protocols=("proximity.v1", token))
    assert ws_b.protocol == "proximity.v1"  # the key is never echoed back
    assert (await ws_all.receive_json())["type"] == "hello"
    hello = await ws_b.receive_json()
    assert hello["filter"]["fence"] == ["store-b"]
    now = time.time()
    await client.post("/v1/pings", json=[ping("f1", INSIDE_A, now), ping("f2", INSIDE_B, now)], headers=h(SDK))
    got_all = [await ws_all.receive_json(timeout=5) for _ in range(2)]
    assert sorted(m["fence_id"] for m in got_all) == ["store-a", "store-b"]
    got_b = await ws_b.receive_json(timeout=5)
    assert (got_b["type"], got_b["kind"], got_b["device_id"]) == ("event", "enter", "f2")
    with pytest.raises(asyncio.TimeoutError):
        await ws_b.receive_json(timeout=0.3)
    r = await client.get("/metrics")
    assert "proximity_feed_clients 2" in await r.text()
    await ws_all.close()
    await ws_b.close()
    bad = await client.get("/v1/events?kind=teleport", headers=h(ADMIN))
    assert bad.status == 400 and (await bad.json())["field"] == "kind"


async def test_unknown_route_and_method_are_json(make_client) -> None:
    client = await make_client()
    r = await client.get("/v1/nothing")
    assert r.status == 404 and "error" in await r.json()
    r = await client.get("/v1/pings", headers=h(SDK))
    assert r.status == 405 and "error" in await r.json()


async def test_graceful_shutdown_closes_feed(aiohttp_server, fences_file: Path) -> None:
    cfg = ServiceConfig(fences=str(fences_file), rate_limit=0, engine={"profile": "crossing"})
    app = create_app(cfg, keys=KEYS)
    server = await aiohttp_server(app)
    import aiohttp

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.make_url("/v1/events"), headers=h(ADMIN))
        await ws.receive_json()
        await server.close()
        msg = await ws.receive(timeout=5)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert service_of(app).ready is False


async def test_advance_fires_debounce_exits(make_client) -> None:
    client = await make_client(advance_interval_s=3600)
    now = time.time()
    await client.post("/v1/pings", json=[ping("walker", INSIDE_A, now - 600)], headers=h(SDK))
    r = await client.post("/v1/advance", json={"now": now - 590}, headers=h(ADMIN))
    assert r.status == 200 and (await r.json())["devices"] == {}
    r = await client.post("/v1/advance", json={"now": now - 400}, headers=h(ADMIN))  # > 60 s without evidence
    events = (await r.json())["devices"]["walker"]["events"]
    assert [(e["kind"], e["cause"]) for e in events] == [("exit", "debounce")]
    for bad in ({"now": "soon"}, {"now": now + 3600}, {"then": 1}, [1]):
        r = await client.post("/v1/advance", json=bad, headers=h(ADMIN))
        assert r.status == 400 and (await r.json())["field"] == "now"
    r = await client.post("/v1/advance", json={"now": now}, headers=h(SDK))
    assert r.status == 403


async def test_a_worker_answers_and_freezes_what_it_loaded_at_start(fences_file: Path) -> None:
    import gc

    import aiohttp

    from proximity.service import bind_socket, serve_forever

    cfg = ServiceConfig(fences=str(fences_file), rate_limit=0, engine={"profile": "crossing"})
    sock = bind_socket("127.0.0.1", 0)
    ready = asyncio.Event()
    frozen: list[int] = []
    thresholds = gc.get_threshold()
    settled: list[tuple[int, ...]] = []

    def on_ready(svc: Any) -> None:
        frozen.append(gc.get_freeze_count())
        settled.append(gc.get_threshold())
        ready.set()

    gc.unfreeze()
    worker = asyncio.create_task(serve_forever(cfg, sock, keys=KEYS, on_ready=on_ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        async with aiohttp.ClientSession() as session:
            r = await session.post(f"http://127.0.0.1:{sock.getsockname()[1]}/v1/pings",
                                   json=[ping("w", INSIDE_A, time.time())], headers=h(SDK))
            assert r.status == 200 and (await r.json())["devices"]["w"]["events"][0]["kind"] == "enter"
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sock.close()
    # the fence index, campaigns and modules loaded at start are out of the collector's sight (short pauses),
    # and young collections wait for more objects (proximity.service.collector)
    assert frozen and frozen[0] > 10_000
    assert settled == [(YOUNG_THRESHOLD, *thresholds[1:])]
