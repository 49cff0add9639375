"""Coalesced /v1/pings requests (proximity.service.coalesce) answer exactly as the same requests run one by one.

The oracle is a second server with ``coalesce: false`` that gets the same requests sequentially, in the
order the coalescing server queued them (recorded on the server); both are real aiohttp servers on
127.0.0.1 with the same fences and campaigns (a global budget, so the order of decisions matters).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proximity.batch import PingBatch
from proximity.engine import Engine
from proximity.errors import StoreUnavailable, ValidationError
from proximity.journal import Journal
from proximity.service import create_app, service_of
from proximity.service.auth import KeyRing, hash_key
from proximity.service.coalesce import SETTLE_ROUNDS, Coalescer
from proximity.service.config import ServiceConfig
from proximity.service.idempotency import batch_key

SDK = "sdk-key-coalesce"
KEYS = KeyRing.parse(f"app:sdk:{hash_key(SDK)}")
HEADERS = {"X-API-Key": SDK}


def _square(fid: str, lon: float, lat: float, tag: str, d: float = 0.002) -> dict[str, Any]:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Feature", "id": fid, "properties": {"name": fid, "tags": [tag]},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


PLACES = {"a": (2.351, 48.851), "b": (2.361, 48.861), "out": (2.30, 48.80)}
CAMPAIGNS = (
    "campaigns:\n"
    "  - id: coffee\n    name: Coffee\n    priority: 20\n    max_event_age: 1d\n    trigger: {on: enter, tags: [coffee]}\n"
    "    offer: {title: 'Hello {store.name}', body: '1 euro off'}\n"
    "    limits:\n      per_device: {max: 2, window: 1d}\n      budget: {total: 3}\n"
    "  - id: shop\n    name: Shop\n    priority: 10\n    max_event_age: 1d\n    trigger: {on: enter, tags: [shop]}\n"
    "    offer: {title: 'Welcome', body: '10% off'}\n"
)


@pytest.fixture
def city(tmp_path: Path) -> dict[str, str]:
    fences = tmp_path / "fences.geojson"
    fences.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _square("store-a", 2.350, 48.850, "coffee"), _square("store-b", 2.360, 48.860, "shop")]}))
    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(CAMPAIGNS)
    return {"fences": str(fences), "campaigns": str(campaigns)}


async def _server(city: dict[str, str], coalesce: bool, **more: Any) -> TestServer:
    cfg = ServiceConfig(**city, rate_limit=0, reload_interval_s=60.0, engine={"profile": "crossing"},
                        coalesce=coalesce, **more)
    server = TestServer(create_app(cfg, keys=KEYS), host="127.0.0.1")
    await server.start_server()
    return server


def _recording(server: TestServer) -> list[str | None]:
    """The journal keys of the requests in the order the server's coalescer queued them."""
    coalescer = service_of(server.app).coalescer
    assert coalescer is not None
    order: list[str | None] = []
    submit = coalescer.submit

    async def recorded(rows: list[Any], journal: str | None, devices: Any = None) -> Any:
        order.append(journal)
        return await submit(rows, journal, devices)

    coalescer.submit = recorded  # type: ignore[method-assign]
    return order


async def _post(session: ClientSession, server: TestServer, body: bytes) -> tuple[int, Any]:
    async with session.post(server.make_url("/v1/pings"), data=body, headers=HEADERS) as r:
        return r.status, await r.json()


T0 = time.time() - 3600.0  # an hour ago: the campaigns' max_event_age (1d) still sends live offers

_ping = st.fixed_dictionaries({
    "device_id": st.sampled_from(["d1", "d2", "d3", "d4"]),
    "place": st.sampled_from(["a", "b", "out", "out"]),
    "dt": st.integers(0, 40),
    "bad": st.sampled_from([None, None, None, None, None, "accuracy", "future", "lon"]),
})
_request = st.lists(_ping, min_size=1, max_size=4)


def _body(i: int, pings: list[dict[str, Any]], step: int) -> bytes:
    rows = []
    for p in pings:
        lon, lat = PLACES[p["place"]]
        row: dict[str, Any] = {"device_id": p["device_id"], "lon": lon, "lat": lat, "accuracy_m": 5.0,
                               "ts": T0 + step * 60 + p["dt"]}
        if p["bad"] == "accuracy":
            row["accuracy_m"] = -1.0
        elif p["bad"] == "future":
            row["ts"] = time.time() + 86400.0
        elif p["bad"] == "lon":
            row["lon"] = "east"
        rows.append(row)
    return json.dumps({"batch_id": f"req-{i}", "pings": rows}).encode()


@pytest.mark.parametrize("window_ms", [0.0, 2.0])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(_request, min_size=1, max_size=8), min_size=1, max_size=3))
async def test_coalesced_requests_answer_as_sequential_ones(city: dict[str, str], window_ms: float,
                                                            rounds: list[list[list[dict[str, Any]]]]) -> None:
    await _answer_as_sequential_ones(city, rounds, {"coalesce_window_ms": window_ms}, {})


@pytest.mark.redis
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(_request, min_size=1, max_size=8), min_size=1, max_size=3))
async def test_coalesced_requests_answer_as_sequential_ones_on_redis(city: dict[str, str], redis_url: str,
                                                                     redis_prefix: str,
                                                                     rounds: list[list[list[dict[str, Any]]]]) -> None:
    """On Redis the parts of a call are decided in one pass (their caps and offers in one round trip): the
    global budget still goes to the requests in the order the server took them."""
    run = uuid.uuid4().hex[:8]  # state of its own for each example (the batch ids repeat)
    await _answer_as_sequential_ones(city, rounds, {"redis": redis_url, "redis_prefix": f"{redis_prefix}:{run}:co"},
                                     {"redis": redis_url, "redis_prefix": f"{redis_prefix}:{run}:alone"})


async def _answer_as_sequential_ones(city: dict[str, str], rounds: list[list[list[dict[str, Any]]]],
                                     coalescing_settings: dict[str, Any], alone_settings: dict[str, Any]) -> None:
    coalescing = await _server(city, True, **coalescing_settings)
    alone = await _server(city, False, **alone_settings)
    order = _recording(coalescing)
    try:
        async with ClientSession() as session:
            bodies: dict[str, bytes] = {}
            answers: dict[str, tuple[int, Any]] = {}
            i = 0
            for step, requests in enumerate(rounds):  # a round: its requests all at once
                batch = []
                for pings in requests:
                    bodies[batch_key("pings\0app", f"req-{i}")] = body = _body(i, pings, step)
                    batch.append((batch_key("pings\0app", f"req-{i}"), body))
                    i += 1
                got = await asyncio.gather(*(_post(session, coalescing, b) for _, b in batch))
                answers.update({k: a for (k, _), a in zip(batch, got, strict=True)})
            assert sorted(order, key=str) == sorted(answers, key=str)  # every request went through the coalescer
            for key in order:  # the oracle: the same requests one at a time, in the order the server took them
                assert key is not None
                want = await _post(session, alone, bodies[key])
                assert answers[key] == want, (bodies[key], answers[key], want)
            # a retried batch_id replays its coalesced answer (a 422 is not kept: the client fixes the body)
            done = [k for k in order if answers[k][0] == 200]
            if not done:
                return
            key = done[-1]
            async with session.post(coalescing.make_url("/v1/pings"), data=bodies[key], headers=HEADERS) as r:
                assert r.headers.get("Idempotent-Replay") == "true"
                assert (r.status, await r.json()) == answers[key]
    finally:
        await coalescing.close()
        await alone.close()


async def test_a_bad_request_among_good_ones(city: dict[str, str]) -> None:
    server = await _server(city, True)
    try:
        async with ClientSession() as session:
            good = [json.dumps({"batch_id": f"g{i}", "pings": [
                {"device_id": f"dev{i}", "lon": PLACES["a"][0], "lat": PLACES["a"][1], "accuracy_m": 5.0,
                 "ts": T0 + i}]}).encode() for i in range(6)]
            bad_json = b'{"pings": [{"device_id": "x", '
            all_rows_bad = json.dumps({"pings": [{"device_id": "y", "lon": "?", "lat": 1, "accuracy_m": 5,
                                                  "ts": T0}]}).encode()
            partly = json.dumps({"pings": [{"device_id": "z", "lon": 2.351, "lat": 48.851, "accuracy_m": 5,
                                            "ts": T0}, {"device_id": "z", "ts": "soon"}]}).encode()
            got = await asyncio.gather(*(_post(session, server, b) for b in [*good[:3], bad_json, all_rows_bad,
                                                                             partly, *good[3:]]))
        statuses = [s for s, _ in got]
        assert statuses == [200, 200, 200, 400, 422, 200, 200, 200, 200]
        for (_, body), i in zip([*got[:3], *got[6:]], range(6), strict=True):
            assert body["accepted"] == 1 and body["rejected"] == []
            assert [e["kind"] for e in body["devices"][f"dev{i}"]["events"]] == ["enter"]
            assert [o["campaign_id"] for o in body["devices"][f"dev{i}"]["offers"]] == (["coffee"] if i < 3 else [])
        assert got[4][1]["errors"][0]["row"] == 0 and got[4][1]["errors"][0]["field"] == "lon"
        assert got[5][1]["accepted"] == 1 and {r["row"] for r in got[5][1]["rejected"]} == {1}  # (one entry per problem of the row)
    finally:
        await server.close()


async def test_one_loop_tick_of_requests_is_one_engine_call_and_devices_keep_order(city: dict[str, str]) -> None:
    """Deterministic: requests submitted in one loop turn share a call, except one that repeats a device,
    which waits for the next call (and so sees the first one's state)."""
    server = await _server(city, True)
    try:
        coalescer = service_of(server.app).coalescer
        assert isinstance(coalescer, Coalescer)
        a, out = PLACES["a"], PLACES["out"]

        def rows(dev: str, where: tuple[float, float], ts: float) -> list[dict[str, Any]]:
            return [{"device_id": dev, "lon": where[0], "lat": where[1], "accuracy_m": 5.0, "ts": ts}]

        calls = coalescer.calls
        got = await asyncio.gather(coalescer.submit(rows("p", a, T0), None), coalescer.submit(rows("q", a, T0), None),
                                   coalescer.submit(rows("p", out, T0 - 5), None),
                                   coalescer.submit(rows("r", a, T0), None))
        assert coalescer.calls - calls == 2  # {p, q} then {p, r}: the second p starts the next call
        kinds = [[(e.device_id, e.kind) for e in result.events] for result, _, _ in got]
        assert kinds == [[("p", "enter")], [("q", "enter")], [], [("r", "enter")]]
        assert got[2][0].stats["late"] == 1  # p's older ping came after its first request: dropped as late
    finally:
        await server.close()


async def test_requests_the_loop_has_ready_join_one_call_and_a_busy_loop_does_not_hold_it(
        city: dict[str, str]) -> None:
    """Requests still on their way to the queue (each some loop turns behind, as a request being read and
    parsed is) join the call a first request starts, however many turns behind; a loop that is never idle
    holds a call back for at most ``SETTLE_ROUNDS`` turns."""
    server = await _server(city, True)
    try:
        coalescer = service_of(server.app).coalescer
        assert isinstance(coalescer, Coalescer)
        a = PLACES["a"]

        async def later(dev: str, turns: int) -> Any:
            for _ in range(turns):
                await asyncio.sleep(0)
            return await coalescer.submit([{"device_id": dev, "lon": a[0], "lat": a[1], "accuracy_m": 5.0,
                                            "ts": T0}], None)

        calls = coalescer.calls
        got = await asyncio.gather(*(later(f"t{k}", k) for k in range(8)))
        assert coalescer.calls - calls == 1  # (one sleep(0) before the call: t0-t2 in it, the rest after)
        assert all([e.kind for e in result.events] == ["enter"] for result, _, _ in got)

        loop, turns = asyncio.get_running_loop(), [0]

        def spin() -> None:  # something ready at every turn, for ever
            turns[0] += 1
            if not stop:
                loop.call_soon(spin)

        stop = False
        loop.call_soon(spin)
        try:
            start = turns[0]
            answer = await asyncio.wait_for(later("busy", 0), 30)
            assert [e.kind for e in answer[0].events] == ["enter"]
            assert turns[0] - start <= SETTLE_ROUNDS + 8  # (the tasks of wait_for, the call and the answer)
        finally:
            stop = True
    finally:
        await server.close()


async def test_a_window_gathers_requests_under_load_and_never_holds_one_after_a_quiet_spell(
        city: dict[str, str]) -> None:
    """``coalesce_window_ms``: requests a millisecond apart (each in its own loop turn) share the call that the
    first of them waits for; a request after a quiet spell starts its call at once, so one that comes 10 ms
    after it, well within the window, is not in its call (it would be, had the first waited)."""
    server = await _server(city, True, coalesce_window_ms=50.0)
    try:
        coalescer = service_of(server.app).coalescer
        assert isinstance(coalescer, Coalescer) and coalescer.window_s == 0.05
        a = PLACES["a"]

        def rows(dev: str, ts: float) -> list[dict[str, Any]]:
            return [{"device_id": dev, "lon": a[0], "lat": a[1], "accuracy_m": 5.0, "ts": ts}]

        async def spaced(devs: list[str], gap_s: float, ts: float) -> list[Any]:
            tasks = []
            for dev in devs:
                tasks.append(asyncio.ensure_future(coalescer.submit(rows(dev, ts), None)))
                await asyncio.sleep(gap_s)
            return list(await asyncio.gather(*tasks))

        calls = coalescer.calls
        got = await spaced(["w0", "w1", "w2", "w3"], 0.001, T0)
        # w0 came after a quiet spell: alone, at once; w1 waits out the window and w2, w3 join it
        assert coalescer.calls - calls == 2
        assert all([e.kind for e in result.events] == ["enter"] for result, _, _ in got)
        await asyncio.sleep(0.2)  # a quiet spell: four times the window
        calls = coalescer.calls
        await spaced(["w4", "w5"], 0.01, T0 + 1)
        assert coalescer.calls - calls == 2
    finally:
        await server.close()


def test_engine_parts_refuse_a_shared_device_and_renumber_rows() -> None:
    from geofence import FenceIndex, load_geojson

    index = FenceIndex(load_geojson(json.dumps({"type": "FeatureCollection",
                                                "features": [_square("s", 2.350, 48.850, "shop")]})))
    engine = Engine(index)

    def batch(dev: str, n: int, acc: float = 5.0) -> PingBatch:
        return PingBatch.from_rows([{"device_id": dev, "lon": 2.351, "lat": 48.851, "accuracy_m": acc,
                                     "ts": T0 + k} for k in range(n)])

    with pytest.raises(ValueError, match="same device"):
        engine.process_ping_parts([batch("x", 1), batch("x", 1)])
    res = engine.process_ping_parts([batch("u", 2, acc=0.0), batch("v", 3, acc=0.0)], [Journal("j1"), None])
    assert [[e.row for e in r.rejected] for r in res] == [[0, 1], [0, 1, 2]]
    assert [r.stats["pings"] for r in res] == [2, 3] and np.all([r.stats["applied"] == 0 for r in res])


async def test_run_here_runs_on_the_loop_only_while_the_engine_thread_is_idle(city: dict[str, str]) -> None:
    """Memory state: a coalesced call runs on the event loop's thread (no hand-off to the engine thread and
    back) unless the engine thread has work, which then goes first: the engine stays single-writer."""
    server = await _server(city, True)
    try:
        host = service_of(server.app).host
        assert host.inline  # memory state
        here = threading.get_ident()
        assert await host.run_here(threading.get_ident) == here
        engine_thread = await host.run(threading.get_ident)
        assert engine_thread != here
        order: list[str] = []
        release = threading.Event()

        def busy() -> int:  # e.g. an advance pass or a reload on the engine thread
            release.wait(10)
            order.append("busy")
            return threading.get_ident()

        def call() -> int:
            order.append("call")
            return threading.get_ident()

        first = asyncio.ensure_future(host.run(busy))
        await asyncio.sleep(0)  # the busy call is submitted
        second = asyncio.ensure_future(host.run_here(call))
        await asyncio.sleep(0.05)
        assert not second.done() and order == []  # queued behind the engine thread's work, not run beside it
        release.set()
        assert await first == engine_thread and await second == engine_thread
        assert order == ["busy", "call"]
        assert await host.run_here(threading.get_ident) == here  # idle again: on the loop

        def boom() -> None:
            raise ValueError("bad")

        with pytest.raises(ValueError, match="bad"):
            await host.run_here(boom)
        host.inline = False  # (inline_calls: false: every call on the engine thread)
        assert await host.run_here(threading.get_ident) == engine_thread
    finally:
        await server.close()


@pytest.mark.redis
async def test_redis_state_runs_calls_on_the_loop_only_while_redis_is_calm(
        city: dict[str, str], redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis state: a call runs on the loop's thread while no call has failed or been slow for INLINE_CALM_S;
    after one, every call goes to the engine thread (a call on the loop would hold it for its round trips)
    until Redis has been calm that long, calls on the engine thread included; ``inline_calls: false``: never."""
    import proximity.service.host as host_module

    monkeypatch.setattr(host_module, "INLINE_CALM_S", 0.3)
    monkeypatch.setattr(host_module, "INLINE_SLOW_S", 0.05)
    server = await _server(city, True, redis=redis_url, redis_prefix=redis_prefix)
    try:
        host = service_of(server.app).host
        loop_thread = threading.get_ident()
        engine_thread = await host.run(threading.get_ident)
        async with ClientSession() as session:  # a real call through Redis (on a cold kernel cache, a slow one)
            status, body = await _post(session, server, json.dumps({"pings": [
                {"device_id": "rr", "lon": PLACES["a"][0], "lat": PLACES["a"][1], "accuracy_m": 5.0,
                 "ts": T0}]}).encode())
        assert status == 200 and [e["kind"] for e in body["devices"]["rr"]["events"]] == ["enter"]
        await asyncio.sleep(0.35)  # calm for longer than INLINE_CALM_S, however long that call took
        assert host.inline and host.runs_here and await host.run_here(threading.get_ident) == loop_thread

        def down() -> None:
            raise StoreUnavailable("Redis state store unavailable: test", retry_after_s=1.0)

        with pytest.raises(StoreUnavailable):
            await host.run_here(down)  # fails on the loop ...
        assert not host.runs_here
        assert await host.run_here(threading.get_ident) == engine_thread  # ... so the next goes to the thread
        await asyncio.sleep(0.2)
        with pytest.raises(StoreUnavailable):
            await host.run_here(down)  # a failure on the engine thread restarts the calm spell
        await asyncio.sleep(0.2)
        assert await host.run_here(threading.get_ident) == engine_thread  # 0.2 s calm: not yet
        await asyncio.sleep(0.35)
        assert await host.run_here(threading.get_ident) == loop_thread  # calm for longer than INLINE_CALM_S

        def slow() -> int:
            time.sleep(0.1)  # slower than INLINE_SLOW_S (a Redis that answers late)
            return threading.get_ident()

        assert await host.run_here(slow) == loop_thread
        assert await host.run_here(threading.get_ident) == engine_thread
        await asyncio.sleep(0.35)
        assert await host.run_here(threading.get_ident) == loop_thread
        host.inline = False  # inline_calls: false
        assert await host.run_here(threading.get_ident) == engine_thread
    finally:
        await server.close()


def test_inline_calls_is_a_boolean_setting(tmp_path: Path) -> None:
    from proximity.service.config import load_config

    good = tmp_path / "service.yaml"
    good.write_text("inline_calls: false\n")
    assert load_config(good).inline_calls is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("coalesce: true\ninline_calls: sometimes\n")
    with pytest.raises(ValidationError) as err:
        load_config(bad)
    assert err.value.field == "inline_calls" and err.value.line == 2


async def test_the_wait_and_the_call_are_measured_apart(city: dict[str, str]) -> None:
    """Every coalesced request's wait for its call, and every call's wall time by where it ran, reach /metrics."""
    server = await _server(city, True)
    try:
        svc = service_of(server.app)
        bodies = [json.dumps({"pings": [{"device_id": f"m{i}", "lon": PLACES["a"][0], "lat": PLACES["a"][1],
                                         "accuracy_m": 5.0, "ts": T0}]}).encode() for i in range(7)]
        async with ClientSession() as session:
            got = await asyncio.gather(*(_post(session, server, b) for b in bodies))
            assert [s for s, _ in got] == [200] * 7
            async with session.get(server.make_url("/metrics")) as r:
                text = await r.text()
        wait = svc.metrics.coalesce_wait.labels()
        assert wait.count == svc.coalescer.requests == 7  # type: ignore[union-attr]
        call = svc.metrics.ping_call.labels("loop")
        assert call.count == svc.coalescer.calls >= 1  # type: ignore[union-attr]
        assert call.sum > 0 and wait.sum >= 0
        assert "proximity_coalesce_wait_seconds_count 7" in text
        assert f'proximity_ping_engine_call_seconds_count{{where="loop"}} {call.count}' in text
    finally:
        await server.close()


async def test_a_cancelled_caller_does_not_make_the_engine_thread_look_idle(city: dict[str, str]) -> None:
    """The engine thread counts as busy until it has finished what it was given, even when the task that awaited
    it was cancelled (a call on the loop meanwhile would run beside it); a call cancelled before it started
    no longer counts."""
    server = await _server(city, True)
    try:
        host = service_of(server.app).host
        release = threading.Event()
        running = threading.Event()

        def busy() -> None:
            running.set()
            release.wait(10)

        first = asyncio.ensure_future(host.run(busy))
        queued = asyncio.ensure_future(host.run(threading.get_ident))  # behind it: never starts
        await asyncio.to_thread(running.wait, 10)
        first.cancel()
        queued.cancel()
        await asyncio.sleep(0.01)  # the cancellations reach the executor's futures
        assert host.busy  # busy() still runs on the engine thread
        beside = asyncio.ensure_future(host.run_here(threading.get_ident))
        await asyncio.sleep(0.05)
        assert not beside.done()  # waits for the engine thread instead of running beside it
        release.set()
        assert await beside != threading.get_ident()
        for _ in range(100):
            if not host.busy:
                break
            await asyncio.sleep(0.01)
        assert not host.busy  # the cancelled-before-start call is not waited for forever
        assert await host.run_here(threading.get_ident) == threading.get_ident()
    finally:
        await server.close()


@pytest.mark.parametrize("caps", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_engine_parts_read_their_devices_once_and_decide_as_one_by_one(caps: str, request: pytest.FixtureRequest
                                                                       ) -> None:
    """The devices of all the parts' events are read in one store call, and each part's offers are those it
    gets alone, one part after the other: an opted-out device in the middle part gets none, and the last
    part none either, since the first part took the campaign's budget of one (caps and outbox in memory, or
    on Redis through the batched path, ``RedisOffers``)."""
    from campaigns import CampaignRules, FenceInfo, loads_campaigns
    from campaigns.offers import Offer
    from geofence import FenceIndex, load_geojson
    from proximity.store import MemoryStore

    fences = load_geojson(json.dumps({"type": "FeatureCollection", "features": [_square("s", 2.350, 48.850, "shop")]}))
    info = {"s": FenceInfo.create("s", "s", ["shop"])}
    rules_yaml = ("campaigns:\n  - id: shop\n    max_event_age: 1d\n    trigger: {on: enter, tags: [shop]}\n"
                  "    offer: {title: 'Welcome'}\n    limits:\n      budget: {total: 1}\n")
    made: list[Any] = []

    def backends() -> dict[str, Any]:
        if caps == "memory":
            from campaigns.outbox import MemoryOutbox

            return {"outbox": MemoryOutbox()}
        from campaigns.redis_limiter import RedisLimiter
        from campaigns.redis_offers import RedisOffers
        from campaigns.redis_outbox import RedisOutbox

        prefix = f"{request.getfixturevalue('redis_prefix')}:{len(made)}"
        limiter = RedisLimiter(request.getfixturevalue("redis_url"), prefix)
        outbox = RedisOutbox(limiter.client, prefix)
        made.append(limiter.client)
        return {"limiter": limiter, "outbox": outbox, "batch": RedisOffers.of(limiter, outbox)}

    class Counting(MemoryStore):
        reads: list[list[str]]

        def devices(self, device_ids: Any) -> Any:
            self.reads.append(list(device_ids))
            return super().devices(device_ids)

    def engine() -> tuple[Engine, Counting]:
        store = Counting()
        store.reads = []
        e = Engine(FenceIndex(fences), store=store,
                   rules=CampaignRules(loads_campaigns(rules_yaml, fences=info), info, **backends()))
        e.set_opt_out("v2")
        return e, store

    def batch(dev: str) -> PingBatch:
        return PingBatch.from_rows([{"device_id": dev, "lon": 2.351, "lat": 48.851, "accuracy_m": 5.0,
                                     "ts": T0 + 30 * k} for k in range(12)])

    together, store = engine()
    got = together.process_ping_parts([batch("v1"), batch("v2"), batch("v3")])
    assert store.reads == [["v1", "v2", "v3"]]
    alone, _ = engine()
    want = [alone.process_ping_parts([batch(d)])[0] for d in ("v1", "v2", "v3")]
    for client in made:
        client.close()
    assert all(isinstance(o, Offer) for r in got for o in r.offers)
    assert [[o.device_id for o in r.offers] for r in got] == [["v1"], [], []]
    assert [r.events[0].kind for r in got] == ["enter"] * 3
    assert ([[(e.kind, e.device_id, e.ts) for e in r.events] for r in got]
            == [[(e.kind, e.device_id, e.ts) for e in r.events] for r in want])
    assert [[o.offer_id for o in r.offers] for r in got] == [[o.offer_id for o in r.offers] for r in want]
