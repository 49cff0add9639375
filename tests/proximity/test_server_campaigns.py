"""Campaigns, beacons and offers through the HTTP service: scans, offers in responses and the live feed, caps."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from proximity.service import create_app
from proximity.service.config import ServiceConfig, example_path
from tests.proximity.test_server import ADMIN, GATEWAY, KEYS, SDK, h, ping
from tests.proximity.test_server_fuzz import district

IN_STORE_1 = (2.3505, 48.8505)  # store-01 (coffee) of district()

CAMPAIGNS = """\
campaigns:
  - id: hello
    name: Hello
    priority: 10
    trigger:
      on: enter
      fences: [store-01]
    offer:
      title: "Hello at {store.name}"
      body: "A treat."
    limits:
      per_device: {max: 1, window: 1d}
      budget: {total: 2}
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    fences = tmp_path / "fences.geojson"
    fences.write_text(district())
    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(CAMPAIGNS)
    return {"fences": fences, "campaigns": campaigns, "beacons": example_path("beacons.yaml")}


@pytest.fixture
def make_client(aiohttp_client, files: dict[str, Path]):
    async def make(**overrides: Any):
        # one ping enters and one ping exits: these tests pin the crossing profile's behaviour over HTTP
        cfg = ServiceConfig(**{"fences": str(files["fences"]), "campaigns": str(files["campaigns"]),
                               "beacons": str(files["beacons"]), "rate_limit": 0, "engine": {"profile": "crossing"},
                               **overrides})
        server = TestServer(create_app(cfg, keys=KEYS))
        await server.start_server(auto_decompress=False)
        return await aiohttp_client(server)

    return make


async def test_offers_in_the_response_and_the_feed_and_the_budget_cap(make_client) -> None:
    client = await make_client()
    ws = await client.ws_connect("/v1/events?kind=offer", headers=h(ADMIN))
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    now = time.time()
    offers = []
    for i in range(4):  # four devices enter; the budget allows two offers in total
        r = await client.post("/v1/pings", json=[ping(f"cust-{i}", IN_STORE_1, now - 5)], headers=h(SDK))
        body = await r.json()
        assert body["devices"][f"cust-{i}"]["events"][0]["kind"] == "enter"
        offers += body["devices"][f"cust-{i}"]["offers"]
    assert [(o["campaign_id"], o["device_id"], o["title"]) for o in offers] == [
        ("hello", "cust-0", "Hello at Store 1"), ("hello", "cust-1", "Hello at Store 1")]
    fed = [await ws.receive_json(timeout=5) for _ in range(2)]
    assert sorted(m["offer_id"] for m in fed) == sorted(o["offer_id"] for o in offers)
    assert all(m["type"] == "offer" for m in fed)
    metrics = await (await client.get("/metrics")).text()
    assert 'proximity_offers_total{campaign="hello"} 2' in metrics
    assert 'proximity_cap_blocks_total{campaign="hello"' in metrics
    assert 'proximity_dispatch_total{dispatcher="subscribers",result="delivered"} 2' in metrics
    await ws.close()


async def test_opted_out_devices_get_no_offer(make_client) -> None:
    client = await make_client()
    await client.post("/v1/devices/shy/opt-out", headers=h(ADMIN))
    r = await client.post("/v1/pings", json=[ping("shy", IN_STORE_1, time.time())], headers=h(SDK))
    out = (await r.json())["devices"]["shy"]
    assert out["events"] and out["offers"] == []
    state = await (await client.get("/v1/devices/shy", headers=h(ADMIN))).json()
    assert state["opted_out"] is True


async def test_scans_from_a_gateway_produce_beacon_events(make_client) -> None:
    client = await make_client(max_scan_rows=8)
    now = time.time()
    sightings = [{"ts": now - 10 + k, "rssi": -60, "key": "ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6/0/7",
                  "tx_power": -65} for k in range(5)]
    doc = {"gateway_id": "gw-store-01", "batch_id": "scan-1", "sent_at": now, "sightings": sightings}
    r = await client.post("/v1/scans", json=doc, headers=h(GATEWAY))
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["accepted"] == 5 and body["gateway_id"] == "gw-store-01"
    events = body["devices"]["dev-007"]["events"]
    assert {(e["kind"], e["source"]) for e in events} >= {("enter", "beacon")}
    assert any(e["zone"] == "checkout" for e in events)
    # the retry of the same batch is replayed, not reprocessed
    r2 = await client.post("/v1/scans", json=doc, headers=h(GATEWAY))
    assert r2.headers["Idempotent-Replay"] == "true"
    # a bad entry is refused on its own, naming the entry and field; the good ones are processed
    bad = {**doc, "batch_id": "scan-2", "sightings": [*sightings, {"ts": now, "rssi": "loud", "key": "x"}]}
    r = await client.post("/v1/scans", json=bad, headers=h(GATEWAY))
    body = await r.json()
    assert r.status == 200 and body["accepted"] == 5
    # every problem of the entry: its rssi and its key
    assert sorted((e["row"], e["field"]) for e in body["rejected"]) == [(5, "sightings[5].key"),
                                                                         (5, "sightings[5].rssi")]
    r = await client.post("/v1/scans", json={**doc, "batch_id": "scan-3", "sightings": sightings * 2},
                          headers=h(GATEWAY))
    assert r.status == 413 and (await r.json())["field"] == "sightings"
    # a future time is refused row by row, as for pings: a batch of only that is refused whole (422)
    future = {**doc, "batch_id": "scan-4", "sightings": [{**sightings[0], "ts": now + 3600}]}
    r = await client.post("/v1/scans", json=future, headers=h(GATEWAY))
    body = await r.json()
    assert r.status == 422 and body["field"] == "ts" and body["row"] == 0
    mixed = {**doc, "batch_id": "scan-5", "sightings": [{**sightings[0], "ts": now + 3600}, sightings[1]]}
    r = await client.post("/v1/scans", json=mixed, headers=h(GATEWAY))
    body = await r.json()
    assert r.status == 200 and body["accepted"] == 1
    assert [(e["row"], e["field"]) for e in body["rejected"]] == [(0, "ts")]


async def test_put_campaigns_yaml_errors_name_line_and_col_and_json_is_accepted(make_client) -> None:
    client = await make_client()
    bad = CAMPAIGNS.replace("      on: enter", "      on: entre")
    r = await client.put("/v1/campaigns", data=bad, headers=h(ADMIN, **{"Content-Type": "application/yaml"}))
    assert r.status == 400
    body = await r.json()
    assert body["line"] == 6 and body["col"] and "entre" in body["error"]
    # the same line the CLI prints for a file, with the request body as the file
    assert body["cli"].startswith(f"<request body>:6:{body['col']}: ") and "entre" in body["cli"]
    assert body["cli"] == body["errors"][0]["cli"]
    assert all("line" in e for e in body["errors"])
    r = await client.get("/v1/campaigns", headers=h(ADMIN))
    assert r.headers["X-Config-Version"] == "1" and await r.text() == CAMPAIGNS
    as_json = {"campaigns": [{"id": "j", "name": "J", "trigger": {"on": "exit", "fences": ["store-02"]},
                              "offer": {"title": "Bye", "body": "x"}}]}
    r = await client.put("/v1/campaigns", data=json.dumps(as_json), headers=h(ADMIN, **{"Content-Type": "application/json"}))
    assert r.status == 200, await r.text()
    assert (await r.json())["count"] == 1
    # campaigns are checked against the fences in force
    unknown = {"campaigns": [{**as_json["campaigns"][0], "trigger": {"on": "exit", "fences": ["nowhere"]}}]}
    r = await client.put("/v1/campaigns", json=unknown, headers=h(ADMIN))
    assert r.status == 400 and "nowhere" in (await r.json())["error"]


async def test_put_beacons_validated(make_client, files: dict[str, Path]) -> None:
    client = await make_client()
    r = await client.put("/v1/beacons", data="beacons:\n  - key: ibeacon:nonsense\n    fence_id: store-01\n",
                         headers=h(ADMIN))
    body = await r.json()
    assert r.status == 400 and body.get("line") == 2
    r = await client.put("/v1/beacons", data=files["beacons"].read_text(), headers=h(ADMIN))
    assert r.status == 200 and (await r.json())["version"] == 1  # same content: no new version


async def test_graceful_shutdown_finishes_in_flight_batches_and_flushes_the_outbox(files: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    import asyncio

    import aiohttp
    from aiohttp import web

    from proximity.service import EngineHost, bind_socket, make_runner
    from proximity.service.metrics import ServiceMetrics

    class SlowHost(EngineHost):
        def process_pings(self, rows, now, journal=None):  # type: ignore[no-untyped-def]
            time.sleep(0.5)  # a big batch in flight when the signal comes
            return super().process_pings(rows, now, journal)

    offers_file = tmp_path / "offers.jsonl"
    cfg = ServiceConfig(fences=str(files["fences"]), campaigns=str(files["campaigns"]), rate_limit=0,
                        offers_file=str(offers_file), engine={"profile": "crossing"})
    metrics = ServiceMetrics()
    app = create_app(cfg, keys=KEYS, host=SlowHost(cfg, metrics), metrics=metrics)
    runner = make_runner(app, cfg)
    await runner.setup()
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await web.SockSite(runner, sock).start()
    async with aiohttp.ClientSession() as session:
        post = asyncio.create_task(session.post(f"{url}/v1/pings", json=[ping("late-1", IN_STORE_1, time.time())],
                                                headers=h(SDK)))
        await asyncio.sleep(0.2)
        shutdown = asyncio.create_task(runner.cleanup())
        await asyncio.sleep(0.1)
        with pytest.raises(aiohttp.ClientConnectionError):  # no new connections once shutdown began
            await session.get(f"{url}/healthz")
        r = await post
        body = await r.json()
        assert r.status == 200
        offer = body["devices"]["late-1"]["offers"][0]
        await shutdown
    sock.close()
    lines = [json.loads(line) for line in offers_file.read_text().splitlines()]
    assert [o["offer_id"] for o in lines] == [offer["offer_id"]]


async def test_delete_device_erases_presence_and_cap_history(make_client) -> None:
    client = await make_client()
    now = time.time()
    r = await client.post("/v1/pings", json=[ping("priv", IN_STORE_1, now - 30)], headers=h(SDK))
    assert len((await r.json())["devices"]["priv"]["offers"]) == 1
    r = await client.delete("/v1/devices/priv", headers=h(ADMIN))
    body = await r.json()
    assert body["erased"] is True and [e["cause"] for e in body["events"]] == ["forget"]
    # a new visit: enter again, and the per-device cap (1 a day) no longer remembers the device
    r = await client.post("/v1/pings", json=[ping("priv", IN_STORE_1, now - 10)], headers=h(SDK))
    out = (await r.json())["devices"]["priv"]
    assert [e["kind"] for e in out["events"]] == ["enter"]
    assert len(out["offers"]) == 1


async def test_live_feed_filters_by_campaign_and_kind(make_client) -> None:
    two = CAMPAIGNS + """\
  - id: bye
    name: Bye
    trigger:
      on: exit
      fences: [store-01]
    offer:
      title: "Bye"
      body: "See you."
"""
    client = await make_client(advance_interval_s=3600)
    r = await client.put("/v1/campaigns", data=two, headers=h(ADMIN, **{"Content-Type": "application/yaml"}))
    assert r.status == 200, await r.text()
    only_bye = await client.ws_connect("/v1/events?campaign=bye", headers=h(ADMIN))
    exits = await client.ws_connect("/v1/events?kind=exit,offer&fence=store-01", headers=h(ADMIN))
    for ws in (only_bye, exits):
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
    now = time.time()
    r = await client.post("/v1/pings", json=[ping("walker", IN_STORE_1, now - 300)], headers=h(SDK))
    assert [o["campaign_id"] for o in (await r.json())["devices"]["walker"]["offers"]] == ["hello"]
    r = await client.post("/v1/advance", json={"now": now - 100}, headers=h(ADMIN))  # debounce exit
    assert [o["campaign_id"] for o in (await r.json())["devices"]["walker"]["offers"]] == ["bye"]
    got = await only_bye.receive_json(timeout=5)
    assert (got["type"], got["campaign_id"], got["device_id"]) == ("offer", "bye", "walker")
    seen = [await exits.receive_json(timeout=5) for _ in range(2)]
    # the exit event and both offers match "exit or offer at store-01"; the enter event does not
    seen.append(await exits.receive_json(timeout=5))
    assert sorted((m["type"], m.get("kind"), m.get("campaign_id")) for m in seen) == [
        ("event", "exit", None), ("offer", None, "bye"), ("offer", None, "hello")]
    for ws in (only_bye, exits):
        with pytest.raises(TimeoutError):
            await ws.receive_json(timeout=0.3)
        await ws.close()


async def test_campaigns_and_beacons_files_are_hot_reloaded(make_client, files: dict[str, Path],
                                                            tmp_path: Path) -> None:
    import asyncio

    beacons = tmp_path / "beacons.yaml"
    beacons.write_text(files["beacons"].read_text())
    client = await make_client(beacons=str(beacons), reload_interval_s=0.1)

    async def version(kind: str, want: str) -> str:
        for _ in range(50):
            got = (await client.get(f"/v1/{kind}", headers=h(ADMIN))).headers["X-Config-Version"]
            if got == want:
                break
            await asyncio.sleep(0.1)
        return got

    files["campaigns"].write_text(CAMPAIGNS.replace("fences: [store-01]", "fences: [nowhere]"))  # invalid
    await asyncio.sleep(0.4)
    assert await version("campaigns", "1") == "1"
    files["campaigns"].write_text(CAMPAIGNS.replace("Hello at", "Bonjour at"))
    assert await version("campaigns", "2") == "2"
    r = await client.post("/v1/pings", json=[ping("reload-1", IN_STORE_1, time.time())], headers=h(SDK))
    assert (await r.json())["devices"]["reload-1"]["offers"][0]["title"] == "Bonjour at Store 1"
    # the registry: dev-007's advertiser removed -> its sightings no longer place anyone
    text = beacons.read_text()
    beacons.write_text(text.replace("uuid: 2f234454-cf6d-4a0f-adf2-f4911ba9ffa6", "uuid: 00000000-0000-4000-8000-000000000001"))
    assert await version("beacons", "2") == "2"
    now = time.time()
    doc = {"gateway_id": "gw-store-01", "batch_id": "after-reload", "sent_at": now,
           "sightings": [{"ts": now - 5, "rssi": -60, "key": "ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6/0/7",
                          "tx_power": -65}]}
    r = await client.post("/v1/scans", json=doc, headers=h(GATEWAY))
    assert r.status == 200 and (await r.json())["devices"] == {}
    metrics = await (await client.get("/metrics")).text()
    assert 'proximity_reloads_total{kind="campaigns",result="error"} 1' in metrics
    assert 'proximity_config_version{kind="beacons"} 2' in metrics


async def test_a_ping_dated_days_ago_enters_but_fires_no_live_offer(make_client) -> None:
    client = await make_client()
    r = await client.post("/v1/pings", json=[ping("late", IN_STORE_1, time.time() - 3 * 86400)], headers=h(SDK))
    out = (await r.json())["devices"]["late"]
    assert [e["kind"] for e in out["events"]] == ["enter"] and out["offers"] == []
    r = await client.post("/v1/pings", json=[ping("fresh", IN_STORE_1, time.time())], headers=h(SDK))
    assert len((await r.json())["devices"]["fresh"]["offers"]) == 1
    metrics = await (await client.get("/metrics", headers=h(ADMIN))).text()
    assert 'proximity_offers_withheld_total{campaign="hello",reason="stale"} 1' in metrics


async def test_a_delayed_offer_is_cancelled_when_the_device_comes_back(make_client) -> None:
    client = await make_client()
    yaml = ("campaigns:\n  - id: bye\n    trigger: {on: exit, fences: [store-01]}\n"
            "    offer: {title: 'See you at {store.name}', delay: 20m}\n")
    r = await client.put("/v1/campaigns", data=yaml, headers=h(ADMIN, **{"Content-Type": "application/yaml"}))
    assert r.status == 200, await r.text()
    now = time.time()
    far = (IN_STORE_1[0] + 0.01, IN_STORE_1[1])
    for device in ("gone", "back"):
        await client.post("/v1/pings", json=[ping(device, IN_STORE_1, now - 60)], headers=h(SDK))
        out = await (await client.post("/v1/pings", json=[ping(device, far, now - 30)], headers=h(SDK))).json()
        (offer,) = out["devices"][device]["offers"]
        assert offer["delayed"] is True and offer["deliver_after"] == pytest.approx(now - 30 + 1200)
    await client.post("/v1/pings", json=[ping("back", IN_STORE_1, now)], headers=h(SDK))  # re-enters
    doc = await (await client.get("/v1/console/campaigns", headers=h(ADMIN))).json()
    assert doc["outbox_dropped"] == {"expired": 0, "cancelled": 1}
    assert doc["outbox_pending"] == 1  # the offer of the device that stayed away still waits
