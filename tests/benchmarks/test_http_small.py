"""The SDK-shaped benchmark's split of the server's half-load p99 (its /metrics histograms); never a timing."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from benchmarks.http_small import gc_share, outcome, p99_bound_ms, scrape_workers, server_load
from tests.proximity.test_coalesce import HEADERS, PLACES, T0, _post, _server, city  # noqa: F401  (city: the fixture)


def test_p99_bound_is_the_bucket_holding_the_99th_percentile_of_the_difference() -> None:
    before = {0.001: 10.0, 0.01: 10.0, math.inf: 10.0}
    after = {0.001: 60.0, 0.01: 109.0, math.inf: 110.0}  # 100 new: 50 under 1 ms, 99 under 10 ms
    assert p99_bound_ms(before, after) == 10.0
    after[0.01] = 108.0  # only 98 under 10 ms: the 99th is in the last bucket
    assert p99_bound_ms(before, after) == math.inf
    assert math.isnan(p99_bound_ms(after, after))  # nothing observed between the scrapes


def test_gc_share_is_the_collectors_seconds_over_the_servers_cpu_and_bounds_the_longest_pause() -> None:
    def scrape(pauses: dict[float, float], seconds: float) -> dict[str, dict[float, float]]:
        return {"gc_pause": pauses, "gc_seconds": {math.inf: seconds}}

    phase = {"server_cpu_ms_per_req": 0.5,  # 1,000 requests: 0.5 s of the server's CPU
             "probe_before": {"1": scrape({0.001: 5.0, 0.01: 6.0, math.inf: 6.0}, 1.0),
                              "2": scrape({0.001: 0.0, 0.01: 0.0, math.inf: 0.0}, 0.0)},
             "probe_after": {"1": scrape({0.001: 8.0, 0.01: 10.0, math.inf: 10.0}, 1.02),  # 4: 3 < 1 ms, 1 < 10 ms
                             "2": scrape({0.001: 2.0, 0.01: 2.0, math.inf: 2.0}, 0.005),  # 2 under 1 ms
                             "3": scrape({0.001: 9.0, math.inf: 9.0}, 9.0)}}  # no scrape before: left out
    assert gc_share(phase, 1000) == "5.0% of the server's CPU (6 collections, the longest <= 10 ms)"
    phase["probe_after"]["1"] = phase["probe_before"]["1"]
    assert gc_share(phase, 1000) == "1.0% of the server's CPU (2 collections, the longest <= 1 ms)"


def test_server_load_is_requests_per_call_over_every_worker_and_the_cores_used() -> None:
    def scrape(calls: float, answered: float) -> dict[str, dict[float, float]]:
        return {"calls": {math.inf: calls}, "coalesced": {math.inf: answered}}

    phase = {"req_s": 4000.0, "server_cpu_ms_per_req": 0.25,  # 4,000 requests a second at 0.25 ms: one core
             "probe_before": {"1": scrape(10.0, 100.0), "2": scrape(0.0, 0.0)},
             "probe_after": {"1": scrape(30.0, 300.0),  # 20 calls, 200 requests
                             "2": scrape(20.0, 400.0),  # 20 calls, 400 requests
                             "3": scrape(1.0, 1000.0)}}  # no scrape before: left out
    batch, cores = server_load(phase)
    assert batch == 15.0 and cores == 1.0
    phase["probe_after"] = phase["probe_before"]  # no call between the scrapes
    assert math.isnan(server_load(phase)[0])
    assert math.isnan(server_load({**phase, "probe_before": None, "probe_after": None})[0])  # the peer: no probe


async def test_scrape_reads_the_phases_from_a_served_metrics_page(city: dict[str, str]) -> None:  # noqa: F811
    server = await _server(city, True, advance_interval_s=0.02)  # the advance loop's calls come fast
    try:
        url = str(server.make_url("")).rstrip("/")
        (pid, before), = (await asyncio.to_thread(scrape_workers, url, 1)).items()
        async with ClientSession() as session:
            for i in range(3):
                status, _ = await _post(session, server, json.dumps({"pings": [
                    {"device_id": f"s{i}", "lon": PLACES["a"][0], "lat": PLACES["a"][1], "accuracy_m": 5.0,
                     "ts": T0}]}).encode())
                assert status == 200
        gc.collect()
        for _ in range(500):  # until the advance loop has run since the first scrape (at most ~10 s)
            after = (await asyncio.to_thread(scrape_workers, url, 1))[pid]
            if after["advance"].get(math.inf, 0.0) > before["advance"].get(math.inf, 0.0):
                break
            await asyncio.sleep(0.02)
        assert set(after) == {"request", "wait", "call", "advance", "gc_pause", "gc_seconds", "calls", "coalesced"}
        # three lone requests: three engine calls answering one request each
        assert after["calls"][math.inf] - before["calls"].get(math.inf, 0.0) == 3
        assert after["coalesced"][math.inf] - before["coalesced"].get(math.inf, 0.0) == 3
        assert p99_bound_ms(before["advance"], after["advance"], q=1.0) > 0  # the advance loop's calls, read
        assert after["gc_pause"][math.inf] > before["gc_pause"].get(math.inf, 0.0)  # every generation summed
        assert after["gc_seconds"][math.inf] > before["gc_seconds"].get(math.inf, 0.0)
        for phase in ("request", "wait", "call"):
            assert after[phase][math.inf] - before[phase].get(math.inf, 0.0) == 3  # one a request; calls: one each
            assert p99_bound_ms(before[phase], after[phase]) > 0
    finally:
        await server.close()


async def test_outcome_tells_refused_rows_from_a_clean_answer(city: dict[str, str]) -> None:  # noqa: F811
    """The benchmark counts answers that refuse rows (a load generator whose timestamps ran ahead of the clock
    would measure the error path): read from the service's real answers, as the load generator reads them."""
    server = await _server(city, True)

    def body(*ts: float) -> bytes:
        return json.dumps({"pings": [{"device_id": f"o{i}", "lon": PLACES["a"][0], "lat": PLACES["a"][1],
                                      "accuracy_m": 5.0, "ts": t} for i, t in enumerate(ts)]}).encode()

    try:
        async with ClientSession() as session:
            got = []
            # a clean body; one whose second row is days ahead of the clock (200, that row refused); a broken one
            for data in (body(T0, T0), body(T0, T0 + 10 * 86400.0), b"{"):
                async with session.post(server.make_url("/v1/pings"), data=data, headers=HEADERS) as r:
                    got.append(outcome(r.status, await r.read()))
        assert got == ["ok", "refused", "error"]
    finally:
        await server.close()


def test_a_pass_lasts_as_long_as_its_ts_span_and_its_offsets_never_wrap() -> None:
    """A pass's pings take 0.1 s of ts (``stamp``); with fewer pings than ``PASS_PINGS`` a fast server outran the
    clock and, past ``max_skew_s``, every row was refused (422). Each size's pass has enough pings for 0.2 s at
    300k pings/s, and its ping offsets (``k % PASS_US`` us) grow through the pass without wrapping."""
    import re

    import benchmarks._http_serve as H
    from benchmarks.http_small import PASS_PINGS, pass_bodies

    stores = [[2.3 + i * 0.001, 48.85] for i in range(10)]
    assert PASS_PINGS / 300_000 >= 0.2
    for size in (1, 10, 100, 500):
        reqs = pass_bodies(stores, size, False)
        offsets = [int(m) for b in reqs for m in re.findall(rb'"ts":' + re.escape(H.MARK) + rb"(\d{5})", b)]
        assert PASS_PINGS <= len(offsets) < H.PASS_US
        assert all(b > a for a, b in itertools.pairwise(offsets))


def test_scrape_workers_reaches_every_worker_behind_one_port(tmp_path: Path, redis_url: str) -> None:
    """Two workers (Redis state: memory state is one worker's) share the port and each scrape reaches one of them: ``scrape_workers`` scrapes until both
    answered, by pid, and each worker's histograms count only its own requests."""
    import urllib.request

    import benchmarks._http_serve as H

    paths = H._city(tmp_path)
    proc, url = H._start_serve(paths, 2, redis_url)
    try:
        before = scrape_workers(url, 2)
        assert len(before) == 2 and all(pid.isdigit() for pid in before)
        body = json.dumps({"pings": [{"device_id": "w1", "lon": 2.3, "lat": 48.85, "accuracy_m": 5.0,
                                      "ts": 1_700_000_000.0}]}).encode()
        for _ in range(20):  # a new connection each time: either worker may answer it
            req = urllib.request.Request(url + "/v1/pings", data=body, method="POST",
                                         headers={"X-API-Key": H.KEY, "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
        after = scrape_workers(url, 2)
        assert set(after) == set(before)
        # (a worker that answered none has no bucket of the route yet)
        answered = sum(after[pid]["request"].get(math.inf, 0.0) - before[pid]["request"].get(math.inf, 0.0)
                       for pid in after)
        assert answered == 20
    finally:
        H._stop(proc)
        H._clear_redis(redis_url)


def test_the_server_split_counts_the_measured_phase_and_not_the_warm_up(tmp_path: Path) -> None:
    """``measure``'s probe runs once the generators have warmed up: the server's histograms between its two
    scrapes count exactly the measured phase's requests (the split once also counted the warm-up's burst,
    64 requests in flight, and put a half-load p99 of 1.5 ms at 25 ms on the server's side)."""
    import functools
    import json as json_

    import benchmarks._http_serve as H
    from benchmarks.http_small import measure, pass_bodies

    paths = H._city(tmp_path)
    proc, url = H._start_serve(paths, 1, None)
    try:
        stores = json_.loads(paths["stores"].read_text())
        reqs = pass_bodies(stores, 500, False)[:8]  # a short warm-up pass: 8 requests
        res = measure(url + "/v1/pings", reqs, 500, 1.0, 20.0, 4, 1, time.time() - 5, proc.pid,
                      functools.partial(scrape_workers, url, 1))
        (pid, before), = res["probe_before"].items()
        after = res["probe_after"][pid]
        assert res["requests"] > 0 and res["errors"] == 0
        assert after["request"][math.inf] - before["request"].get(math.inf, 0.0) == res["requests"]
        assert res["p99_ms_by_generator"] == [res["p99_ms"]]  # one generator: its p99 is the phase's
    finally:
        H._stop(proc)


def test_verdicts_name_each_target_met_or_missed_and_the_peers_own_p99() -> None:
    from benchmarks.http_small import verdicts

    def row(setup: str, size: int, per_cpu: float, p99: float, workers: int = 1) -> dict[str, object]:
        return {"setup": setup, "pings_per_request": size, "workers": workers, "req_per_cpu_s": per_cpu,
                "half_load_p99_ms": p99}

    rows = [row("peer: aiohttp + orjson", 1, 20_000.0, 21.0), row("serve, memory", 1, 5_000.0, 19.9),
            row("serve, Redis", 1, 2_499.0, 20.0, workers=2), row("peer: aiohttp + orjson", 10, 19_000.0, 5.0),
            row("serve, memory", 10, 3_999.0, 8.0), row("serve, Redis", 10, 3_000.0, math.nan, workers=2),
            row("serve, memory", 100, 900.0, 3.0)]  # no CPU target at 100 pings a request: the p99 only
    lines = verdicts(rows)
    assert lines[:2] == [
        "serve, memory (1w), 1 ping(s) a request: 5,000 requests per worker CPU-second, target >= 5,000: met",
        "serve, memory (1w), 1 ping(s) a request: half-load p99 19.9 ms, target < 20: met"]
    assert lines[2].endswith("2,499 requests per worker CPU-second, target >= 2,500: MISSED")
    assert lines[3].endswith("half-load p99 20.0 ms, target < 20: MISSED")  # the bound itself is a miss
    assert lines[4] == ("serve, memory (1w), 10 ping(s) a request: 39,990 pings per worker CPU-second, "
                        "target >= 40,000: MISSED")
    assert lines[6].startswith("serve, Redis (2w), 10 ping(s) a request: half-load p99 nan ms") and \
        lines[6].endswith("MISSED")  # not measured is not met
    assert lines[7] == "serve, memory (1w), 100 ping(s) a request: half-load p99 3.0 ms, target < 20: met"
    assert lines[-1] == ("targets: 4 of 8 met; the bare peer's half-load p99 under 20 ms in 1 of 2 phases "
                         "(21.0 ms at 1 ping(s), 5.0 ms at 10 ping(s))")
    assert verdicts(rows[1:2])[-1] == ("targets: 2 of 2 met; not measured: Redis at 1 ping(s) a request; "
                                       "not measured: memory at 10 ping(s) a request")


def test_redis_workers_leave_one_core_for_redis_and_the_generators_unless_asked() -> None:
    from benchmarks.http_small import redis_workers

    assert [redis_workers(None, cores) for cores in (1, 2, 4, 8)] == [1, 1, 3, 7]
    assert redis_workers(None, None) == 1  # cores unknown: taken as 2
    assert redis_workers(2, 2) == 2 and redis_workers(5, 2) == 5  # --workers wins, even past the cores


def test_http_benchmark_refuses_fewer_than_one_worker(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.http import main

    with pytest.raises(SystemExit) as exit_:
        main(["--pings-per-request", "1", "--workers", "0"])
    assert exit_.value.code == 2 and "--workers: at least 1, not 0" in capsys.readouterr().err
