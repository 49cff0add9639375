"""The load generators' HTTP client (``benchmarks._rawclient``) against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from benchmarks._rawclient import InFlight, RawClient, RawClientError


async def _server(handler) -> tuple[web.AppRunner, str]:
    app = web.Application(client_max_size=1 << 22)
    app.router.add_post("/v1/echo", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1/echo"


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    if request.headers.get("X-API-Key") != "k":
        return web.json_response({"error": "no key"}, status=401)
    if body == b"teapot":
        return web.Response(status=418, body=b"short and stout")
    return web.json_response({"n": len(body), "tail": body[-5:].decode()})


def test_answers_statuses_and_bodies_over_kept_connections() -> None:
    async def go() -> None:
        runner, url = await _server(_echo)
        client = RawClient(url, {"X-API-Key": "k", "Content-Type": "application/json"}, connections=3)
        try:
            bodies = [b"x" * n for n in (0, 1, 70_000, 5, 300_000)] * 6  # large ones arrive in several reads
            got = await asyncio.gather(*(client.post(b) for b in bodies))
            for b, (status, answer) in zip(bodies, got, strict=True):
                assert status == 200 and answer == b'{"n": %d, "tail": "%s"}' % (len(b), b[-5:])
            assert client._open <= 3  # more requests than connections waited for one
            assert await client.post(b"teapot") == (418, b"short and stout")
            other = RawClient(url, {"Content-Type": "application/json"})
            status, answer = await other.post(b"{}")
            assert status == 401 and b"no key" in answer
            await other.close()
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(go())


def test_a_closed_connection_is_an_error_and_the_next_request_reconnects() -> None:
    async def go() -> None:
        calls = 0

        async def drop_first(request: web.Request) -> web.StreamResponse:
            nonlocal calls
            calls += 1
            if calls == 1:
                assert request.transport is not None
                request.transport.close()  # no answer at all
                return web.Response()
            return await _echo(request)

        runner, url = await _server(drop_first)
        client = RawClient(url, {"X-API-Key": "k"}, connections=1)
        try:
            with pytest.raises(RawClientError):
                await client.post(b"one")
            assert (await client.post(b"two"))[0] == 200
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(go())


def test_quiet_collector_freezes_what_exists_and_stops_collection() -> None:
    import subprocess
    import sys

    code = ("import gc\nfrom benchmarks._rawclient import quiet_collector\nkept = [[i] for i in range(1000)]\n"
            "quiet_collector()\nprint(gc.isenabled(), gc.get_freeze_count() >= 1000)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "True"]


async def test_in_flight_holds_a_task_only_until_it_is_done_and_waits_for_the_rest() -> None:
    """The open loop's requests: a finished one is dropped at once (the end of a phase then waits only for
    what is still in flight, instead of walking every task of the phase), ``wait`` returns when all are
    answered, and a request that raised raises there."""
    flight = InFlight()
    gates = [asyncio.Event() for _ in range(3)]
    done: list[int] = []

    async def one(k: int) -> None:
        await gates[k].wait()
        done.append(k)

    for k in range(3):
        flight.start(one(k))
    gates[1].set()
    await asyncio.sleep(0.01)
    assert done == [1] and len(flight._tasks) == 2
    waiting = asyncio.create_task(flight.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gates[0].set()
    gates[2].set()
    await asyncio.wait_for(waiting, 5)
    assert sorted(done) == [0, 1, 2] and not flight._tasks

    async def bad() -> None:
        raise RuntimeError("refused")

    flight.start(bad())
    with pytest.raises(RuntimeError, match="refused"):
        await flight.wait()
