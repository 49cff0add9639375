"""The console's server side over real aiohttp sockets: assets, session, scopes, the feed's key and positions,
pause and resume, the fences dry run, the fleet and the campaign counters (no browser needed)."""

from __future__ import annotations

import asyncio
import base64
import difflib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import EddystoneTLM, EddystoneUID, encode_advertisement
from proximity.service import create_app
from proximity.service.auth import KeyRing, hash_key, key_of_subprotocol
from proximity.service.config import ServiceConfig, example_path
from proximity.service.console_data import LiveFleet
from proximity.service.console_edit import set_campaign_status

ADMIN, READ, SDK, GW = "admin-key-1", "read-key-2", "sdk-key-3", "gw-key-4"
KEYS = KeyRing.parse(f"ops:admin:{hash_key(ADMIN)}\nviewer:read:{hash_key(READ)}\napp:sdk:{hash_key(SDK)}\n"
                     f"gw:gateway:{hash_key(GW)}")
CAMPAIGNS = """\
# the test's campaigns
campaigns:
  - id: hello          # says hello
    name: Hello
    trigger: {on: enter}
    offer: {title: "Hello"}
    limits:
      per_device: {max: 1, window: 1h}
  - id: other
    trigger: {on: exit}
    offer: {title: "Bye"}
"""


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def token(key: str) -> str:
    return "proximity.key." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


@pytest.fixture
def make_client(aiohttp_client, tmp_path: Path):
    async def make(**overrides: Any):
        campaigns = tmp_path / "campaigns.yaml"
        campaigns.write_text(CAMPAIGNS)
        # one ping enters: these tests pin the crossing profile's behaviour in the console
        cfg = ServiceConfig(**{"fences": str(example_path("fences.geojson")), "campaigns": str(campaigns),
                               "beacons": str(example_path("beacons.yaml")), "rate_limit": 0,
                               "engine": {"profile": "crossing"},  # one ping inside enters: short tests
                               "reload_interval_s": 0.1, **overrides})
        server = TestServer(create_app(cfg, keys=KEYS))
        await server.start_server(auto_decompress=False)
        return await aiohttp_client(server)

    return make


STORE_01 = (2.34467, 48.86263)  # inside the demo's store-01


def ping(device: str, lonlat: tuple[float, float] = STORE_01, ts: float | None = None) -> dict[str, Any]:
    return {"device_id": device, "lon": lonlat[0], "lat": lonlat[1], "accuracy_m": 5, "ts": ts or time.time()}


# ----------------------------------------------------------------------------------- page and session


async def test_the_page_and_its_assets_need_no_key_and_nothing_from_the_internet(make_client) -> None:
    client = await make_client()
    r = await client.get("/console", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/console/"
    r = await client.get("/console/")
    page = await r.text()
    assert r.status == 200 and r.content_type == "text/html" and "default-src 'self'" in r.headers[
        "Content-Security-Policy"]
    for src in ("map.js", "app.js", "console.css"):
        assert src in page
        asset = await client.get(f"/console/{src}")
        assert asset.status == 200
        assert "http://" not in await asset.text() and "https://" not in await asset.text()
    for bad in ("/console/..%2Fserver.py", "/console/missing.js", "/console/console.py"):
        r = await client.get(bad)
        assert r.status == 404 and "error" in await r.json()


async def test_session_says_who_the_key_is_and_whether_it_may_change_things(make_client) -> None:
    client = await make_client(console_tile_url="http://tiles.local/{z}/{x}/{y}.png")
    r = await client.get("/v1/console/session", headers=h(READ))
    doc = await r.json()
    assert r.status == 200 and doc["key"] == "viewer" and doc["scopes"] == ["read"] and doc["can_change"] is False
    assert doc["tile_url"] == "http://tiles.local/{z}/{x}/{y}.png"
    doc = await (await client.get("/v1/console/session", headers=h(ADMIN))).json()
    assert doc["can_change"] is True
    assert (await client.get("/v1/console/session", headers=h(SDK))).status == 403
    assert (await client.get("/v1/console/session")).status == 401


def test_a_tile_url_without_its_placeholders_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\{z\}, \{x\} and \{y\}"):
        ServiceConfig(console_tile_url="http://tiles.local/tile.png")


# ----------------------------------------------------------------------------------- the feed's key


def test_key_of_subprotocol() -> None:
    assert key_of_subprotocol(f"proximity.v1, {token('px_é-key')}") == "px_é-key"
    assert key_of_subprotocol("proximity.v1") is None
    assert key_of_subprotocol("proximity.key.!!!") is None
    assert key_of_subprotocol("proximity.key.") is None


async def test_the_feed_takes_the_key_as_a_subprotocol_never_from_the_url(make_client) -> None:
    client = await make_client()
    ws = await client.ws_connect("/v1/events", protocols=("proximity.v1", token(READ)))
    assert ws.protocol == "proximity.v1" and (await ws.receive_json())["type"] == "hello"
    await ws.close()
    assert (await client.get("/v1/events?key=" + READ)).status == 401  # a key in the URL counts for nothing
    r = await client.get("/v1/events?key=" + READ, headers=h(READ))  # and is refused with the reason
    body = await r.json()
    assert r.status == 400 and body["field"] == "key" and "never taken from the URL" in body["error"]
    r = await client.get("/v1/events", headers={"Sec-WebSocket-Protocol": token("wrong"), "Connection": "Upgrade",
                                                "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status == 401
    r = await client.get("/v1/events", headers={"Sec-WebSocket-Protocol": token(SDK)})
    assert r.status == 403


async def test_positions_reach_only_the_clients_that_ask_for_them(make_client) -> None:
    client = await make_client()
    plain = await client.ws_connect("/v1/events", headers=h(READ))
    pos = await client.ws_connect("/v1/events?kind=positions,enter", headers=h(READ))
    for ws in (plain, pos):
        assert (await ws.receive_json())["type"] == "hello"
    # no pause: the console records positions from the first ping after a watcher connected
    now = time.time()
    rows = [ping("d1", ts=now - 2), ping("d1", (2.35, 48.86), now - 1), ping("d2", ts=now),
            ping("d3", ts=now + 3600)]  # refused by the engine (future): not on the map either
    assert (await client.post("/v1/pings", json=rows, headers=h(SDK))).status == 200
    got: dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "positions" not in got:
        msg = await pos.receive_json(timeout=5)
        got[msg["type"]] = msg
    devices = {d[0]: d for d in got["positions"]["devices"]}
    assert devices["d1"][1:3] == [2.35, 48.86] and devices["d2"][1:3] == list(STORE_01)  # the newest of each
    assert "d3" not in devices
    kinds = set()
    with pytest.raises(asyncio.TimeoutError):
        while True:
            kinds.add((await plain.receive_json(timeout=0.6))["type"])
    assert "positions" not in kinds  # a client that did not ask gets no positions
    await plain.close()
    await pos.close()


# ----------------------------------------------------------------------------------- pause and resume


async def test_pause_and_resume_edit_the_document_and_reload_it(make_client) -> None:
    client = await make_client()
    assert (await client.post("/v1/pings", json=[ping("a")], headers=h(SDK))).status == 200
    r = await client.post("/v1/campaigns/hello/status", json={"status": "paused"}, headers=h(ADMIN))
    doc = await r.json()
    assert r.status == 200 and doc["changed"] is True
    text = await (await client.get("/v1/campaigns", headers=h(READ))).text()
    assert "status: paused" in text and "# says hello" in text and "# the test's campaigns" in text
    body = await (await client.post("/v1/pings", json=[ping("b")], headers=h(SDK))).json()
    assert body["devices"]["b"]["offers"] == []
    again = await (await client.post("/v1/campaigns/hello/status", json={"status": "paused"}, headers=h(ADMIN))).json()
    assert again["changed"] is False and again["version"] == doc["version"]
    r = await client.post("/v1/campaigns/hello/status", json={"status": "active"}, headers=h(ADMIN))
    assert r.status == 200
    body = await (await client.post("/v1/pings", json=[ping("c")], headers=h(SDK))).json()
    assert [o["campaign_id"] for o in body["devices"]["c"]["offers"]] == ["hello"]
    stats = await (await client.get("/v1/console/campaigns", headers=h(READ))).json()
    hello = next(c for c in stats["campaigns"] if c["id"] == "hello")
    assert hello["status"] == "active" and hello["trigger"]["on"] == "enter"
    assert sum(x["issued"] for x in hello["hours"]) == 2 and sum(x["outcomes"]["paused"] for x in hello["hours"]) == 1
    assert sum(x["matched"] for x in hello["hours"]) == 3


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"status": "stopped"}, 400, "status"), ({"status": "paused", "x": 1}, 400, "status"), (["paused"], 400, "status")])
async def test_pause_refuses_bad_bodies(make_client, body: Any, status: int, field: str) -> None:
    client = await make_client()
    r = await client.post("/v1/campaigns/hello/status", json=body, headers=h(ADMIN))
    assert r.status == status and (await r.json())["field"] == field
    r = await client.post("/v1/campaigns/hello/status", data=b"{not json", headers=h(ADMIN))
    assert r.status == 400
    r = await client.post("/v1/campaigns/nope/status", json={"status": "paused"}, headers=h(ADMIN))
    assert r.status == 404 and (await r.json())["field"] == "campaign_id"
    r = await client.post("/v1/campaigns/hello/status", json={"status": "paused"}, headers=h(READ))
    assert r.status == 403


def test_set_campaign_status_keeps_the_authors_text() -> None:
    text = example_path("campaigns.yaml").read_text()
    paused = set_campaign_status(text, "application/yaml", "coffee-welcome", "paused")
    added = [ln for ln in difflib.ndiff(text.splitlines(), paused.splitlines()) if ln[:1] in "+-"]
    assert added == ["+     status: paused"]  # one line more, the rest as written (comments too)
    assert set_campaign_status(paused, "application/yaml", "coffee-welcome", "active").replace(
        "    status: active\n", "") == text
    assert set_campaign_status(text, "application/yaml", "winter-sale-paused", "active").count("status: active") == 1
    flow = "campaigns: [{id: x, trigger: {on: enter}, offer: {title: t}}]\n"
    assert "status: paused" in set_campaign_status(flow, "application/yaml", "x", "paused")
    js = json.dumps({"campaigns": [{"id": "x", "status": "active"}]})
    assert json.loads(set_campaign_status(js, "application/json", "x", "paused"))["campaigns"][0]["status"] == "paused"
    with pytest.raises(KeyError):
        set_campaign_status(text, "application/yaml", "nope", "paused")


# ----------------------------------------------------------------------------------- fences dry run


async def test_fences_check_names_file_line_col_and_changes_nothing(make_client) -> None:
    client = await make_client()
    before = await (await client.get("/v1/fences", headers=h(READ))).text()
    bad = before.replace('"Polygon"', '"Polygone"', 1)
    r = await client.post("/v1/fences/check?source=shops.geojson", data=bad.encode(), headers=h(ADMIN))
    doc = await r.json()
    assert r.status == 200 and doc["valid"] is False
    problem = doc["errors"][0]
    line = bad[: bad.index('"Polygone"')].count("\n") + 1
    assert problem["cli"].startswith(f"shops.geojson:{line}:") and problem["line"] == line
    assert await (await client.get("/v1/fences", headers=h(READ))).text() == before
    fc = json.loads(before)
    fc["features"][0]["properties"]["name"] = "Renamed"
    fc["features"] = [*fc["features"][:-1], {"type": "Feature", "id": "new-1", "properties": {"radius_m": 10},
                                              "geometry": {"type": "Point", "coordinates": [2.35, 48.86]}}]
    doc = await (await client.post("/v1/fences/check", json=fc, headers=h(ADMIN))).json()
    removed = json.loads(before)["features"][-1]["id"]
    assert doc["valid"] is True and doc["diff"]["added"] == ["new-1"] and doc["diff"]["removed"] == [removed]
    assert doc["diff"]["changed"] == [fc["features"][0]["id"]]
    assert doc["diff"]["counts"]["unchanged"] == len(fc["features"]) - 2
    assert await (await client.get("/v1/fences", headers=h(READ))).text() == before
    r = await client.post("/v1/fences/check", data=b"\xff\xfe", headers=h(ADMIN))
    assert (await r.json())["valid"] is False
    assert (await client.post("/v1/fences/check", json=fc, headers=h(READ))).status == 403


# ----------------------------------------------------------------------------------- the fleet


async def test_fleet_from_scans_battery_from_tlm_and_gateways_up_or_down(make_client) -> None:
    client = await make_client()
    now = time.time()
    uid = EddystoneUID(bytes.fromhex("edd1ebeac04e5defa017"), bytes.fromhex("000003000001"), -20)
    tlm = EddystoneTLM(battery_mv=2300, temperature_c=21.5, adv_count=10, uptime_s=100.0)
    sightings = [
        {"ts": now - 2, "rssi": -70, "raw": encode_advertisement([uid]).hex(), "address": "AA:00:00:00:00:01"},
        {"ts": now - 1, "rssi": -71, "raw": encode_advertisement([tlm]).hex(), "address": "AA:00:00:00:00:01"},
        {"ts": now - 1, "rssi": -64, "key": "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1", "tx_power": -59},
        {"ts": now, "rssi": -60, "key": "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1", "tx_power": -59},
        {"ts": now, "rssi": -80, "key": "ibeacon:11111111-2222-3333-4444-555555555555/9/9"},
    ]
    r = await client.post("/v1/scans", json={"gateway_id": "gw-store-03", "batch_id": "b1", "sent_at": now,
                                             "sightings": sightings}, headers=h(GW))
    assert r.status == 200, await r.text()
    doc = await (await client.get("/v1/console/fleet", headers=h(READ))).json()
    beacons = {b["key"]: b for b in doc["beacons"]}
    eddy = beacons["eddystone:edd1ebeac04e5defa017/000003000001"]
    assert (eddy["battery_mv"], eddy["temperature_c"], eddy["status"]) == (2300, 21.5, "low_battery")
    ib = beacons["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1"]
    assert ib["status"] == "ok" and ib["last_rssi"] == -60 and ib["sightings"] == 2 and ib["heard_by"] == ["gw-store-03"]
    assert beacons["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/2/1"]["status"] == "silent"
    assert [u["key"] for u in doc["unregistered"]] == ["ibeacon:11111111-2222-3333-4444-555555555555/9/9"]
    gws = {g["gateway_id"]: g["status"] for g in doc["gateways"]}
    assert gws["gw-store-03"] == "up" and gws["gw-store-01"] == "down"
    assert doc["silent_after_s"] == 600 and doc["low_battery_mv"] == 2500  # proximity beacons health's


class _Registry:
    def __init__(self) -> None:
        self.beacons: dict[str, Any] = {}
        self.gateways: dict[str, Any] = {}

    def advertiser(self, key: str) -> None:
        return None


@settings(max_examples=60)
@given(st.lists(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["g1", "g2", "p"]),
                                   st.integers(-100, -30), st.integers(0, 50)), max_size=12), max_size=5))
def test_live_fleet_grouping_matches_a_row_by_row_oracle(batches: list[list[tuple[str, str, int, int]]]) -> None:
    fleet = LiveFleet(lambda: _Registry())
    oracle: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "last": None, "rssi": None, "by": set()})
    for batch in batches:
        if batch:
            keys, obs, rssi, ts = zip(*batch, strict=True)
            fleet.observe(np.array(keys, dtype=object), np.array(obs, dtype=object), np.array(rssi, float),
                          np.array(ts, float))
        for k, o, r, t in batch:
            e = oracle[k]
            e["n"] += 1
            e["by"].add(o)
            if e["last"] is None or t >= e["last"]:
                e["last"], e["rssi"] = float(t), float(r)
    got = {u["key"]: u for u in fleet.report(now=100.0)["unregistered"]}
    assert set(got) == set(oracle)
    for k, e in oracle.items():
        assert (got[k]["sightings"], got[k]["last_seen"], got[k]["heard_by"]) == (e["n"], e["last"], sorted(e["by"]))
        # the RSSI of the newest sighting (any of those at the newest time when several tie)
        assert got[k]["last_rssi"] in {float(r) for b in batches for kk, _, r, t in b if kk == k and t == e["last"]}


# ----------------------------------------------------------------------------------- hourly counters


def _decisions(seed: int, n: int) -> list[Any]:
    from types import SimpleNamespace

    from campaigns.decider import Verdict

    rng = np.random.default_rng(seed)
    outcomes = ["offer", "held", "blocked", "dropped", "outranked", "paused", "schedule", "audience"]
    out = []
    for _ in range(n):
        verdicts = tuple(Verdict(str(rng.choice(["c1", "c2", "c3"])), str(o), "why",
                                 str(rng.choice(["per_device 1/1d", "budget total 5"])) if o == "blocked" else None)
                         for o in rng.choice(outcomes, size=int(rng.integers(0, 3))))
        out.append(SimpleNamespace(event=SimpleNamespace(ts=1_800_000_000.0 + float(rng.integers(0, 5 * 3600))),
                                   verdicts=verdicts))
    return out


@pytest.mark.redis
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_redis_hourly_counters_sum_every_workers_counts_as_the_memory_twin_does(
        redis_url: str, redis_prefix: str, seed: int) -> None:
    import redis.asyncio as aioredis

    from proximity.service.console_hourly import HourlyCounters, RedisHourly

    decisions = _decisions(seed, 300)
    offers = [{"campaign_id": "c1", "ts": 1_800_000_000.0 + 60 * i} for i in range(7)]
    memory = HourlyCounters()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    workers = [RedisHourly(c, redis_prefix) for c in clients]
    try:
        for i, d in enumerate(decisions):  # the decisions land on either worker
            memory.record(d)
            workers[i % 2].record(d)
        memory.delivered(offers)
        workers[1].delivered(offers)
        for w in workers:  # each worker's console loop flushes every second
            await w.flush()
        now = 1_800_000_000.0 + 5 * 3600
        want = await memory.report(["c1", "c2", "c3", "none"], now=now)
        for w in workers:  # each worker's page shows every worker's counts
            assert await w.report(["c1", "c2", "c3", "none"], now=now) == want
        assert sum(h["matched"] for c in want.values() for h in c["hours"]) == sum(len(d.verdicts) for d in decisions)
        assert want["none"] == {"hours": [], "backlog": 0}
        assert all(len(c["hours"]) <= 6 for c in want.values())
    finally:
        for c in clients:
            await c.aclose()
