"""The gateway agent end to end: bleak's real BleakScanner over a fake backend, a real aiohttp server on
127.0.0.1 that goes away and comes back, an agent that restarts: every sighting arrives once, in order."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

from beacons import CaptureRecord, EddystoneTLM, IBeacon, decode_scans_body
from beacons.frames import bleak_fields
from beacons.gateway import GatewayAgent, GatewayConfig
from beacons.sources import BleakSource, ReplaySource
from beacons.spool import Spool
from beacons.uplink import HttpUplink, MemoryUplink

APP = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"
pytestmark = pytest.mark.timeout(60)


def advert(i: int) -> AdvertisementData:
    manufacturer, service = bleak_fields([IBeacon(APP, i // 65536, i % 65536, -65)])
    return AdvertisementData(local_name=None, manufacturer_data=manufacturer, service_data=service,
                             service_uuids=[], tx_power=None, rssi=-60 - i % 20, platform_data=())


class FakeScanner(BaseBleakScanner):
    """A bleak scanner backend that 'hears' a scripted list of advertisements."""

    script: ClassVar[list[tuple[str, AdvertisementData]]] = []
    interval_s: ClassVar[float] = 0.002
    modes: ClassVar[list[str]] = []
    kwargs: ClassVar[list[dict[str, Any]]] = []
    finished: ClassVar[asyncio.Event]

    def __init__(self, detection_callback: Any, service_uuids: Any, scanning_mode: str = "active",
                 **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        FakeScanner.modes.append(scanning_mode)
        FakeScanner.kwargs.append(kwargs)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        self._task = asyncio.create_task(self._feed())

    async def _feed(self) -> None:
        for address, adv in self.script:
            device = self.create_or_update_device(address, address, None, None, adv)
            self.call_detection_callbacks(device, adv)
            await asyncio.sleep(self.interval_s)
        FakeScanner.finished.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class ScanServer:
    """A /v1/scans endpoint that deduplicates by batch_id; it can go away, come back, or lose one ack."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.runner: web.AppRunner | None = None
        self.batch_ids: list[str] = []
        self.keys: list[str] = []
        self.duplicates = 0
        self.lose_next_ack = False
        self.status: int | None = None
        self.auth: set[str] = set()
        self.refuse_first_row = False  # answer 200 but refuse each batch's first entry on its own

    async def handle(self, request: web.Request) -> web.Response:
        self.auth.add(request.headers.get("Authorization", ""))
        if self.status is not None:
            return web.json_response({"error": "nope"}, status=self.status)
        batch = decode_scans_body(await request.read(), content_encoding=request.headers.get("Content-Encoding"))
        if batch.batch_id in self.batch_ids:
            self.duplicates += 1
            return web.json_response({"duplicate": True})
        self.batch_ids.append(batch.batch_id)
        self.keys.extend(batch.sightings.key.tolist())
        if self.lose_next_ack:
            self.lose_next_ack = False
            return web.json_response({"error": "lost"}, status=503, headers={"Retry-After": "0.05"})
        if self.refuse_first_row:
            return web.json_response({"accepted": len(batch.sightings) - 1, "rejected": [
                {"error": "ts is more than 300 s ahead of the server clock", "field": "ts", "row": 0}]})
        return web.json_response({"accepted": len(batch.sightings)})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/scans", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


def app_key(i: int) -> str:
    return f"ibeacon:{APP}/{i // 65536}/{i % 65536}"


FAST = {"batch_size": 7, "batch_interval_s": 0.05, "backoff_initial_s": 0.02, "backoff_max_s": 0.2,
        "drain_timeout_s": 5.0}


async def test_outage_nothing_lost_nothing_reordered(tmp_path: Path) -> None:
    n = 300
    FakeScanner.script = [(f"7A:00:00:00:{i // 256:02X}:{i % 256:02X}", advert(i)) for i in range(n)]
    FakeScanner.modes = []
    FakeScanner.finished = asyncio.Event()
    server = ScanServer()
    await server.start()
    spool = Spool(tmp_path / "spool", max_batches=1000)
    agent = GatewayAgent(BleakSource(scanning_mode="passive", backend=FakeScanner),
                         HttpUplink(server.url, "secret"), spool, GatewayConfig("gw-test", **FAST))
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await wait_for(lambda: len(server.batch_ids) >= 3)
        await server.stop()                                   # the server goes away mid-stream
        await wait_for(lambda: agent.counters["retries"] >= 3 and len(spool) >= 3)
        await server.start()                                  # ... and comes back on the same port
        server.lose_next_ack = True                           # the first batch after it is processed, ack lost
        await wait_for(FakeScanner.finished.is_set)
        await wait_for(lambda: agent.counters["sent"] == n and len(spool) == 0)
    finally:
        stop.set()
        counters = await run
        await server.stop()
    assert FakeScanner.modes == ["passive"]
    patterns = FakeScanner.kwargs[-1]["bluez"]["or_patterns"]  # BlueZ needs them for passive scanning
    assert {bytes(p.content_of_pattern) for p in patterns} == {b"\x4c\x00\x02\x15", b"\xbe\xac", b"\xaa\xfe"}
    assert server.keys == [app_key(i) for i in range(n)]        # each exactly once, in order
    assert server.duplicates >= 1                              # the lost ack was retried and deduplicated
    assert counters["heard"] == counters["sightings"] == counters["sent"] == n
    assert counters["spooled"] > 0 and counters["dropped"] == 0 and counters["rejected"] == 0
    assert server.auth == {"Bearer secret"}


def write_capture(path: Path, ids: range) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in ids:
            m, s = bleak_fields([IBeacon(APP, 0, i, -65)])
            fh.write(json.dumps(CaptureRecord(1000.0 + i, f"AA:{i}", -70, m, s).to_json()) + "\n")
        # telemetry carries no identity: heard, counted, not forwarded
        m, s = bleak_fields([EddystoneTLM(3000, 20.0, 1, 1.0)])
        fh.write(json.dumps(CaptureRecord(2000.0, "BB", -70, m, s).to_json()) + "\n")


async def test_agent_restart_resumes_spool_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_capture(first, range(0, 50))
    write_capture(second, range(50, 70))
    server = ScanServer()
    config = GatewayConfig("gw-test", **{**FAST, "drain_timeout_s": 0.3})
    # run 1: the server is down for the whole run; everything stays in the spool on disk
    c1 = await GatewayAgent(ReplaySource(first), HttpUplink(server.url), Spool(tmp_path / "spool"), config).run()
    assert (c1["sightings"], c1["sent"], c1["spooled"], c1["unkeyed"]) == (50, 0, 50, 1)
    # run 2: a new agent process on the same spool, with the server up
    await server.start()
    try:
        spool = Spool(tmp_path / "spool")
        assert spool.pending_sightings == 50
        c2 = await GatewayAgent(ReplaySource(second), HttpUplink(server.url), spool,
                                GatewayConfig("gw-test", **FAST)).run()
    finally:
        await server.stop()
    assert c2["sent"] == 70 and len(spool) == 0
    assert server.keys == [app_key(i) for i in range(70)]
    assert len(set(server.batch_ids)) == len(server.batch_ids)


async def test_spool_overflow_drops_oldest_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    capture = tmp_path / "c.jsonl"
    write_capture(capture, range(50))
    uplink = MemoryUplink(down=True)
    config = GatewayConfig("gw-test", **{**FAST, "batch_size": 5, "drain_timeout_s": 0.1})
    with caplog.at_level(logging.WARNING, logger="beacons.gateway"):
        counters = await GatewayAgent(ReplaySource(capture), uplink, Spool(None, max_batches=3), config).run()
    assert counters["dropped"] == 35 and counters["sent"] == 0
    assert any("dropped the 1 oldest batches, 5 sightings" in r.getMessage() for r in caplog.records)
    uplink.down = False
    spool_left = 3
    assert spool_left * 5 + counters["dropped"] == counters["sightings"]


async def test_rejected_batches_are_counted_not_retried(tmp_path: Path) -> None:
    capture = tmp_path / "c.jsonl"
    write_capture(capture, range(10))
    server = ScanServer()
    server.status = 422
    await server.start()
    try:
        spool = Spool(tmp_path / "spool")
        counters = await GatewayAgent(ReplaySource(capture), HttpUplink(server.url), spool,
                                      GatewayConfig("gw-test", **FAST)).run()
    finally:
        await server.stop()
    assert counters["rejected"] == 10 and counters["sent"] == 0 and counters["retries"] == 0 and len(spool) == 0


async def test_entries_refused_in_a_delivered_batch_are_counted_and_logged(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    capture = tmp_path / "c.jsonl"
    write_capture(capture, range(10))
    server = ScanServer()
    server.refuse_first_row = True
    await server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="beacons.gateway"):
            counters = await GatewayAgent(ReplaySource(capture), HttpUplink(server.url), Spool(tmp_path / "spool"),
                                          GatewayConfig("gw-test", **FAST)).run()
    finally:
        await server.stop()
    batches = len(server.batch_ids)
    assert batches >= 1 and counters["rejected"] == batches and counters["sent"] == 10 - batches
    assert counters["retries"] == 0
    assert any("row 0: ts is more than 300 s ahead" in r.getMessage() for r in caplog.records)


async def test_record_writes_a_replayable_capture(tmp_path: Path) -> None:
    from beacons.capture import CaptureWriter, read_capture

    FakeScanner.script = [(f"7A:{i}", advert(i)) for i in range(20)]
    FakeScanner.finished = asyncio.Event()
    uplink = MemoryUplink()
    stop = asyncio.Event()
    with CaptureWriter(tmp_path / "rec.jsonl") as recorder:
        agent = GatewayAgent(BleakSource(backend=FakeScanner), uplink, Spool(None), GatewayConfig("gw", **FAST),
                             recorder=recorder)
        run = asyncio.create_task(agent.run(stop))
        await wait_for(FakeScanner.finished.is_set)
        stop.set()
        await run
    records = list(read_capture(tmp_path / "rec.jsonl"))
    assert [r.frames()[0].key for r in records] == [app_key(i) for i in range(20)]
    assert [k["key"] for b in uplink.delivered for k in b["sightings"]] == [app_key(i) for i in range(20)]


@pytest.mark.parametrize(("status", "outcome"), [(200, "delivered"), (202, "delivered"), (400, "rejected"),
                                                 (413, "rejected"), (422, "rejected"), (401, "unauthorized"),
                                                 (403, "unauthorized"), (404, "retry"), (409, "retry"), (429, "retry"), (503, "retry")])
def test_status_classification(status: int, outcome: str) -> None:
    from beacons.uplink import classify

    assert classify(status).outcome == outcome
    assert classify(503, "2.5").retry_after_s == 2.5
    assert classify(503, "Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s is None


async def test_too_large_batches_are_split_until_they_fit(tmp_path: Path) -> None:
    capture = tmp_path / "c.jsonl"
    write_capture(capture, range(40))

    class SmallServer(ScanServer):
        async def handle(self, request: web.Request) -> web.Response:
            batch = decode_scans_body(await request.read())
            if len(batch.sightings) > 6:
                return web.json_response({"error": "too many rows"}, status=413)
            return await self.handle_batch(batch)

        async def handle_batch(self, batch: Any) -> web.Response:
            if batch.batch_id not in self.batch_ids:
                self.batch_ids.append(batch.batch_id)
                self.keys.extend(batch.sightings.key.tolist())
            return web.json_response({"ok": True})

    server = SmallServer()
    await server.start()
    try:
        config = GatewayConfig("gw-test", **{**FAST, "batch_size": 20})
        counters = await GatewayAgent(ReplaySource(capture), HttpUplink(server.url), Spool(tmp_path / "s"),
                                      config).run()
    finally:
        await server.stop()
    assert server.keys == [app_key(i) for i in range(40)]
    assert counters["sent"] == 40 and counters["rejected"] == 0
    assert all(bid.count("/") == 2 for bid in server.batch_ids)  # 20 -> 10 -> 5


async def test_a_bad_capture_line_stops_the_agent_with_its_place_and_keeps_what_came_before(tmp_path: Path) -> None:
    from beacons import BeaconError

    capture = tmp_path / "c.jsonl"
    write_capture(capture, range(5))
    with capture.open("a", encoding="utf-8") as fh:
        fh.write('{"ts": 1, "rssi": "loud"}\n')
    uplink = MemoryUplink()
    agent = GatewayAgent(ReplaySource(capture), uplink, Spool(None), GatewayConfig("gw", **FAST))
    with pytest.raises(BeaconError) as info:
        await agent.run()
    assert (info.value.line, info.value.field) == (7, "rssi")
    assert [k["key"] for b in uplink.delivered for k in b["sightings"]] == [app_key(i) for i in range(5)]


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    import random

    agent = GatewayAgent(ReplaySource("unused"), MemoryUplink(), Spool(None),
                         GatewayConfig("gw", backoff_initial_s=0.5, backoff_max_s=8.0), rng=random.Random(7))
    for failures, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0), (200, 8.0)]:
        delays = [agent._backoff(failures, None) for _ in range(200)]
        assert all(0.1 * cap <= d <= cap for d in delays)
        assert max(delays) - min(delays) > 0.5 * cap  # jittered, not a fixed delay
    assert agent._backoff(1, 3.0) == 3.0      # the server's Retry-After wins
    assert agent._backoff(1, 60.0) == 8.0     # ... up to the cap


class ScriptSource:
    """A source driven step by step by the test: ``feed`` hands advertisements to the agent."""

    def __init__(self) -> None:
        self.on_advertisement: Any = None
        self.ready = asyncio.Event()

    async def run(self, on_advertisement: Any, stop: asyncio.Event) -> None:
        self.on_advertisement = on_advertisement
        self.ready.set()
        await stop.wait()

    def feed(self, ids: range) -> None:
        for i in ids:
            m, s = bleak_fields([IBeacon(APP, 0, i, -65)])
            self.on_advertisement(CaptureRecord(1000.0 + i, f"AA:{i}", -70, m, s))


async def test_batches_are_sealed_by_size_and_by_time() -> None:
    source, uplink = ScriptSource(), MemoryUplink()
    config = GatewayConfig("gw", batch_size=4, batch_interval_s=0.05, drain_timeout_s=5.0)
    agent = GatewayAgent(source, uplink, Spool(None), config)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await source.ready.wait()
        source.feed(range(0, 9))             # two full batches at once, one sighting left pending
        await wait_for(lambda: len(uplink.delivered) == 3)   # ... which the timer seals while still scanning
        source.feed(range(9, 11))
        await wait_for(lambda: len(uplink.delivered) == 4)
        assert not stop.is_set()
    finally:
        stop.set()
        await run
    assert [len(b["sightings"]) for b in uplink.delivered] == [4, 4, 1, 2]
    assert [k["key"] for b in uplink.delivered for k in b["sightings"]] == [app_key(i) for i in range(11)]


async def test_overflow_never_drops_the_batch_in_flight() -> None:
    class SlowUplink(MemoryUplink):
        def __init__(self) -> None:
            super().__init__()
            self.sending = asyncio.Event()
            self.release = asyncio.Event()

        async def send(self, body: dict[str, Any]) -> Any:
            self.sending.set()
            await self.release.wait()
            return await super().send(body)

    source, uplink = ScriptSource(), SlowUplink()
    spool = Spool(None, max_batches=2)
    agent = GatewayAgent(source, uplink, spool, GatewayConfig("gw", batch_size=2, batch_interval_s=10.0))
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await source.ready.wait()
        source.feed(range(0, 2))             # batch 1 goes out and hangs in the uplink
        await uplink.sending.wait()
        source.feed(range(2, 8))             # batches 2, 3, 4 overflow a spool of 2: 2 and 3 go, not 1
        uplink.release.set()
        await wait_for(lambda: len(spool) == 0)
    finally:
        stop.set()
        counters = await run
    delivered = [k["key"] for b in uplink.delivered for k in b["sightings"]]
    assert delivered == [app_key(i) for i in (0, 1, 6, 7)]
    assert (counters["sent"], counters["dropped"], counters["sightings"]) == (4, 4, 8)


async def test_counters_are_logged_at_exit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    capture = tmp_path / "c.jsonl"
    write_capture(capture, range(12))
    config = GatewayConfig("gw-test", **{**FAST, "batch_size": 5, "drain_timeout_s": 0.1})
    with caplog.at_level(logging.INFO, logger="beacons.gateway"):
        await GatewayAgent(ReplaySource(capture), MemoryUplink(down=True), Spool(None, max_batches=2), config).run()
    final = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gateway gw-test:")][-1]
    assert "heard 13, sightings 12, sent 0, spooled 12, dropped 5" in final and "in spool 2 batches" in final


def test_every_body_the_agent_builds_matches_the_documented_schema(tmp_path: Path) -> None:
    import jsonschema

    from beacons import SCANS_SCHEMA
    from beacons.frames import AltBeacon, EddystoneUID, EddystoneURL
    from beacons.gateway import sightings_of

    frames = [IBeacon(APP, 1, 2, -60), AltBeacon(0x0118, bytes(range(20)), -58, 3),
              EddystoneUID(bytes(10), bytes(range(6)), -20), EddystoneURL("https://a.com", -20)]
    entries: list[dict[str, Any]] = []
    for i, f in enumerate(frames):
        entries += sightings_of(CaptureRecord(float(i), "AA", -61.6, *bleak_fields([f])))[0]
    body = {"gateway_id": "gw", "batch_id": "gw:x:1", "sent_at": 5.0, "sightings": entries}
    jsonschema.validate(body, SCANS_SCHEMA)
    assert len(decode_scans_body(json.dumps(body).encode()).sightings) == 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**body, "sightings": [{**entries[0], "extra": 1}]}, SCANS_SCHEMA)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_stops_the_agent_without_spooling_or_retrying(tmp_path: Path, status: int,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    FakeScanner.script = [(f"7A:{i}", advert(i)) for i in range(5000)]  # would scan for 10 s
    FakeScanner.finished = asyncio.Event()
    server = ScanServer()
    server.status = status
    await server.start()
    spool = Spool(tmp_path / "spool")
    try:
        with caplog.at_level(logging.INFO, logger="beacons.gateway"):
            agent = GatewayAgent(BleakSource(backend=FakeScanner), HttpUplink(server.url, "wrong-key"), spool,
                                 GatewayConfig("gw-test", **FAST))
            counters = await agent.run()  # no stop event: the agent stops on its own
    finally:
        await server.stop()
    assert not FakeScanner.finished.is_set()  # it stopped before the scanner ran out
    assert agent.fatal is not None and f"refused the gateway key (HTTP {status})" in agent.fatal and "--key" in agent.fatal
    assert counters["retries"] == 0 and counters["spooled"] == 0 and counters["sent"] == 0
    assert len(spool) >= 1  # kept on disk for a run with the right key
    messages = [r.getMessage() for r in caplog.records]
    assert not any("spooling to disk and retrying" in m for m in messages)
    assert any(r.levelno == logging.ERROR and "refused the gateway key" in r.getMessage() for r in caplog.records)


async def test_server_warnings_are_logged_once_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    capture = tmp_path / "c.jsonl"
    write_capture(capture, range(20))
    warning = "unknown gateway 'gw-typo': the beacon registry lists no gateway with this id"

    class Warning(ScanServer):
        async def handle(self, request: web.Request) -> web.Response:
            batch = decode_scans_body(await request.read(), content_encoding=request.headers.get("Content-Encoding"))
            self.batch_ids.append(batch.batch_id)
            return web.json_response({"accepted": len(batch.sightings), "rejected": [], "warnings": [warning]})

    server = Warning()
    await server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="beacons.gateway"):
            counters = await GatewayAgent(ReplaySource(capture), HttpUplink(server.url), Spool(tmp_path / "spool"),
                                          GatewayConfig("gw-typo", **FAST)).run()
    finally:
        await server.stop()
    assert counters["warned"] == len(server.batch_ids) >= 2
    logged = [r.getMessage() for r in caplog.records if warning in r.getMessage()]
    assert len(logged) == 1  # each distinct warning once
