"""Bounded resources: a body that never arrives gets 408 and its connection closed; /metrics labels come
only from the registry (an invented gateway_id goes under "unregistered")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from proximity.service import create_app, make_runner
from proximity.service.config import ServiceConfig, example_path
from tests.proximity.test_server import GATEWAY, KEYS, SDK


async def _serve(cfg: ServiceConfig) -> tuple[web.AppRunner, int]:
    runner = make_runner(create_app(cfg, keys=KEYS), cfg)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_a_body_that_never_arrives_gets_408_and_the_connection_closes() -> None:
    cfg = ServiceConfig(demo=True, body_timeout_s=0.5)
    runner, port = await _serve(cfg)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /v1/pings HTTP/1.1\r\nHost: x\r\nX-API-Key: {SDK}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 1000\r\n\r\n[{".encode())
        await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), 30)  # read() returns at EOF: the server closed it
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"field":"body"' in answer and time.monotonic() - started < 30
        writer.close()
    finally:
        await runner.cleanup()


async def test_invented_gateway_ids_share_one_metrics_label(tmp_path: Path, aiohttp_client) -> None:
    cfg = ServiceConfig(demo=True, beacons=str(example_path("beacons.yaml")), rate_limit=0)
    client = await aiohttp_client(create_app(cfg, keys=KEYS))
    for i in range(20):
        body = {"gateway_id": f"invented-{i}", "batch_id": f"b{i}", "sent_at": time.time(), "sightings": []}
        r = await client.post("/v1/scans", json=body, headers={"X-API-Key": GATEWAY})
        assert r.status == 200, await r.text()
    metrics = await (await client.get("/metrics")).text()
    lines = [line for line in metrics.splitlines() if line.startswith("proximity_scans_total{")]
    assert lines == ['proximity_scans_total{gateway="unregistered"} 20'], lines
