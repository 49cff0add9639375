"""HTTP ingest: pings/s per worker in batches of 500, and p50/p99 latency at half that load.

    python -m benchmarks http [--seconds 8] [--redis URL [--workers N]] [--quick]

Starts real ``proximity serve`` workers on loopback (memory state; with
``--redis``, also N workers sharing Redis) and, as the peer in the same run, a
bare aiohttp app that only reads and parses the same bodies (with orjson, as the
service does): the ratio
says what presence, fences and campaigns cost on top of receiving the JSON.
The load generator runs in its own process: first closed-loop (as fast as the
server answers, a few requests in flight) for the throughput, then open-loop at
half that request rate for the latency. Timestamps advance every pass, so
pings are never dropped as late; a quarter of the pings fall in a store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import add_counts, percentile_ms
from benchmarks._http_serve import (
    BATCH,
    KEY,
    MARK,
    N_DEVICES,
    N_STORES,
    P99_TARGET_MS,
    _city,
    _clear_redis,
    _cpu_seconds,
    _process_tree,
    _start_serve,
    _stop,
    home_spots,
    ping_row,
    settle,
    stamp,
    start_baseline,
)

#: passes over the bodies before a measured phase (``warmup``): past the wave of first enters (see :func:`_load`)
WARM_PASSES = 5


def _bodies(stores: list[list[float]], n: int, seed: int = 2) -> list[bytes]:
    """``n`` batch bodies of 500 pings with ``MARK`` where each pass's time goes (:func:`stamp`).

    Every device has a home spot (a quarter of them inside a store) and pings
    from there with a few metres of jitter; 1% of the pings come from a random
    spot, so about 1% of pings cause a transition in steady state.
    """
    rng = random.Random(seed)
    home = home_spots(stores, rng)
    out = []
    for b in range(n):
        rows = [ping_row(rng, home, rng.randrange(N_DEVICES), b * BATCH + i) for i in range(BATCH)]
        out.append(('{"pings":[' + ",".join(rows) + "]}").encode())
    return out


def _load(url: str, bodies: list[bytes], seconds: float, rate: float | None, inflight: int,
          start_second: float, warmup: bool, server_pids: list[int], out: Any, redis_url: str | None = None) -> None:
    """The load generator (its own process): closed loop when ``rate`` is None, else open loop."""
    import aiohttp

    from benchmarks._common import failure, redis_cpu_seconds
    from benchmarks._rawclient import InFlight, quiet_collector

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        failed: dict[str, int] = {}  # "<status> <the start of its body>" -> how many (warm-up included)
        sent = 0
        second: float = start_second
        mark = b""
        headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
        conn = aiohttp.TCPConnector(limit=inflight * 2)
        async with aiohttp.ClientSession(connector=conn) as session:
            async def one(body: bytes) -> None:
                nonlocal errors
                t = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    answer = await r.read()
                    if r.status != 200:
                        errors += 1
                        what = failure(r.status, answer)
                        failed[what] = failed.get(what, 0) + 1
                latencies.append(time.perf_counter() - t)

            def body_for(k: int) -> bytes:
                nonlocal second, mark
                if k % len(bodies) == 0:  # a new pass: later than the last one, and about the wall clock
                    second, mark = stamp(second)
                return bodies[k % len(bodies)].replace(MARK, mark)

            # warm up (JIT, connections). With warmup, steady state: every device's state exists, and the wave of
            # first enters is over (a device home in a store enters on its third or fourth pass, when its filter's
            # score crosses the enter threshold; that wave's campaign decisions and offers are the start-up's)
            n_warm = WARM_PASSES * len(bodies) if warmup else inflight
            for k in range(0, n_warm, inflight):
                await asyncio.gather(*(one(body_for(k + j)) for j in range(inflight)))
            sent = n_warm + inflight
            latencies.clear()
            quiet_collector()  # no collector pauses in the measured phase (they delay every answer in flight)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, settle, server_pids)  # what the warm-up left queued is not counted
            cpu0 = _cpu_seconds(server_pids)
            redis0 = redis_cpu_seconds(redis_url)
            t0 = time.perf_counter()
            if rate is None:
                async def worker() -> None:
                    nonlocal sent
                    while time.perf_counter() - t0 < seconds:
                        sent += 1
                        await one(body_for(sent))
                await asyncio.gather(*(worker() for _ in range(inflight)))
            else:
                flight = InFlight()
                k = 0
                while True:
                    due = t0 + k / rate
                    now = time.perf_counter()
                    if due - t0 >= seconds:
                        break
                    if due > now:
                        await asyncio.sleep(due - now)
                    sent += 1
                    flight.start(one(body_for(sent)))
                    k += 1
                await flight.wait()
            elapsed = time.perf_counter() - t0
            drain = await loop.run_in_executor(None, settle, server_pids)  # what the phase left queued counts
            cpu1 = _cpu_seconds(server_pids)
            redis1 = redis_cpu_seconds(redis_url)
        cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        redis_cpu = None if redis0 is None or redis1 is None else redis1 - redis0
        return {"requests": len(latencies), "elapsed": elapsed, "errors": errors, "failed": failed, "latencies": latencies,
                "second": second, "server_cpu_s": cpu, "redis_cpu_s": redis_cpu, "drain_cpu_s": drain}

    out.put(asyncio.run(run()))


def _measure(url: str, bodies: list[bytes], seconds: float, rate: float | None, inflight: int,
             start_second: float, server_pid: int, warmup: bool = False, redis_url: str | None = None) -> dict[str, Any]:
    """One phase. Besides wall-clock rates, the server's own CPU time per batch (all its processes):
    on a shared machine that figure moves much less than pings/s, which depends on free cores. With
    ``redis_url``, the Redis server's CPU time per ping too (``INFO cpu``, every master of a cluster)."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_load, args=(url, bodies, seconds, rate, inflight, start_second, warmup,
                                        _process_tree(server_pid), q, redis_url))
    p.start()
    res = q.get(timeout=seconds + 120)
    p.join(30)
    lat = sorted(res["latencies"])
    res["p50_ms"] = percentile_ms(lat, 0.5)
    res["p99_ms"] = percentile_ms(lat, 0.99)
    res["req_s"] = res["requests"] / res["elapsed"]
    res["pings_s"] = res["req_s"] * BATCH
    cpu = res.pop("server_cpu_s")
    res["cpu_ms_per_batch"] = 1000 * cpu / res["requests"] if cpu and res["requests"] else float("nan")
    res["drain_ms_per_batch"] = 1000 * res.pop("drain_cpu_s") / res["requests"] if res["requests"] else float("nan")
    res["pings_per_cpu_s"] = res["requests"] * BATCH / cpu if cpu else float("nan")
    redis_cpu = res.pop("redis_cpu_s")
    res["redis_us_per_ping"] = (1e6 * redis_cpu / (res["requests"] * BATCH)
                                if redis_cpu is not None and res["requests"] else float("nan"))
    del res["latencies"]
    return res


def _in_process(paths: dict[str, Path], bodies: list[bytes], seconds: float) -> dict[str, Any]:
    """The same batches straight into the service's engine host (the body read as the service reads it, then the
    engine; no HTTP)."""
    from proximity.service.bodies import ping_body
    from proximity.service.config import load_config
    from proximity.service.host import EngineHost
    from proximity.service.metrics import ServiceMetrics
    from proximity.service.reload import media_type_for

    cfg = load_config(paths["config"], fences=str(paths["fences"]), campaigns=str(paths["campaigns"]))
    host = EngineHost(cfg, ServiceMetrics())
    for kind in ("fences", "campaigns"):
        text = paths[kind].read_text()
        host.apply(kind, host.validate(kind, text, media_type_for(paths[kind]), str(paths[kind])))
    second = time.time() - 5
    import numba

    # as the service's engine thread does (ServiceConfig.engine_threads): one kernel thread per worker
    numba.set_num_threads(max(1, min(cfg.engine_threads, numba.config.NUMBA_NUM_THREADS)))

    mark = b""

    def run(k: int) -> None:
        nonlocal second, mark
        if k % len(bodies) == 0:
            second, mark = stamp(second)
        host.process_pings(ping_body(bodies[k % len(bodies)].replace(MARK, mark), BATCH)[0], time.time())

    for k in range(len(bodies)):  # warm up: every device has state
        run(k)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        run(n)
        n += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"pings_s": n * BATCH / elapsed, "ms_per_batch": 1000 * elapsed / n, "cpu_ms_per_batch": 1000 * cpu / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks http", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--inflight", type=int, default=4, help="requests in flight in the closed loop")
    ap.add_argument("--workers", type=int, help="workers for the Redis run (default: 2; with --pings-per-request, "
                    "the machine's cores but one: see benchmarks.http_small.redis_workers)")
    ap.add_argument("--redis", help="also measure N workers sharing this Redis")
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    ap.add_argument("--pings-per-request", metavar="N,N,...",
                    help="SDK-shaped load instead: many concurrent requests of N pings each (see benchmarks.http_small)")
    ap.add_argument("--clients", type=int, default=64, help="with --pings-per-request: requests in flight in all")
    ap.add_argument("--generators", type=int, default=2, help="with --pings-per-request: load-generator processes")
    ap.add_argument("--batch-ids", action="store_true", help="with --pings-per-request: every request has a batch_id")
    ap.add_argument("--coalesce-window-ms", type=float, metavar="MS",
                    help="the service's coalesce_window_ms (default: the service's default)")
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error(f"--workers: at least 1, not {args.workers}")
    seconds = 2.0 if args.quick else args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="proximity-bench-http-"))
    paths = _city(tmp)
    if args.coalesce_window_ms is not None:
        with paths["config"].open("a") as f:
            f.write(f"coalesce_window_ms: {args.coalesce_window_ms}\n")
    if args.pings_per_request:
        return _small(args, paths)
    bodies = _bodies(json.loads(paths["stores"].read_text()), 40 if args.quick else 200)
    print(f"# HTTP ingest: batches of {BATCH} pings, {N_STORES} fences, {N_DEVICES} devices, "
          f"{os.cpu_count()} CPU(s), load generator in its own process, {seconds:g} s per phase")
    rows = []
    start_second = int(time.time()) - 5

    # the peer: aiohttp + orjson.loads only
    base, url = start_baseline(tmp / "baseline.port")
    url += "/v1/pings"
    try:
        thr = _measure(url, bodies, seconds, None, args.inflight, start_second, base.pid)
        lat = _measure(url, bodies, seconds, thr["req_s"] / 2, args.inflight, thr["second"] + 1,
                       base.pid)
        rows.append(("aiohttp + orjson.loads only (peer)", 1, thr, lat))
    finally:
        _stop(base)

    ref = _in_process(paths, bodies, seconds)
    setups = [(1, None)] + ([(args.workers or 2, args.redis)] if args.redis else [])
    for workers, redis in setups:
        proc, base_url = _start_serve(paths, workers, redis)
        try:
            thr = _measure(base_url + "/v1/pings", bodies, seconds, None, args.inflight * workers,
                           start_second, proc.pid, warmup=True, redis_url=redis)
            lat = _measure(base_url + "/v1/pings", bodies, seconds, thr["req_s"] / 2, args.inflight * workers,
                           thr["second"] + 1, proc.pid)
            label = "proximity serve, memory" if redis is None else "proximity serve, Redis"
            rows.append((label, workers, thr, lat))
        finally:
            _stop(proc)
            if redis:
                _clear_redis(redis)

    print(f"{'setup':34} {'workers':>7} {'pings/s':>10} {'per worker':>10} {'vs peer':>8} {'CPU ms':>7} "
          f"{'pings/CPU-s':>11} {'@half load':>10} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    peer = rows[0][2]["pings_s"]
    for label, workers, thr, lat in rows:
        print(f"{label:34} {workers:7d} {thr['pings_s']:10,.0f} {thr['pings_s'] / workers:10,.0f} "
              f"{thr['pings_s'] / peer:8.2f} {thr['cpu_ms_per_batch']:7.2f} {thr['pings_per_cpu_s']:11,.0f} "
              f"{lat['pings_s']:10,.0f} {lat['p50_ms']:7.2f} {lat['p99_ms']:7.2f} {thr['errors'] + lat['errors']:6d}")
    print(f"{'same batches, engine host in-process':34} {1:7d} {ref['pings_s']:10,.0f} {ref['pings_s']:10,.0f} "
          f"{ref['pings_s'] / peer:8.2f} {ref['cpu_ms_per_batch']:7.2f} {BATCH / ref['cpu_ms_per_batch'] * 1000:11,.0f}"
          "   (the body read + engine, no HTTP)")
    for label, _workers, thr, lat in rows:  # what the errors were
        failed = add_counts(thr["failed"], lat["failed"])
        for what, n in sorted(failed.items()):
            print(f"  errors of {label}: {n} x {what}")
    print("CPU ms: the server's own CPU time per batch of 500 during the throughput phase (all its processes), from\n"
          "a quiet server (what the warm-up queued, such as its offers' deliveries, done) until it is quiet again;\n"
          "pings/CPU-s: what one fully used core of the server ingests. On a shared machine these move much less\n"
          "than the wall-clock columns, which depend on how many cores the neighbours leave free.")
    for label, workers, thr, _lat in rows:
        if label.endswith("Redis"):
            print(f"{label}: {thr['pings_per_cpu_s']:,.0f} pings per worker CPU-second "
                  f"(pings / the CPU seconds of all {workers} worker(s), {thr['drain_ms_per_batch']:.2f} ms a batch "
                  f"of it after the phase, finishing what it queued); Redis server {thr['redis_us_per_ping']:.1f} us CPU "
                  "per ping (INFO cpu over the throughput phase; it counts every client of that Redis)")
    print(f"targets: >= 200,000 pings/s per worker; p99 < {P99_TARGET_MS:g} ms at half load; with Redis >= 150,000 "
          "pings per worker CPU-second")
    from benchmarks._common import describe_machine, write_results

    print(f"# machine: {describe_machine()}")
    results = {
        "batch": BATCH, "fences": N_STORES, "devices": N_DEVICES, "seconds_per_phase": seconds, "quick": args.quick,
        "setups": [{"setup": label, "workers": workers, "pings_s": thr["pings_s"],
                    "pings_s_per_worker": thr["pings_s"] / workers, "vs_peer": thr["pings_s"] / peer,
                    "cpu_ms_per_batch": thr["cpu_ms_per_batch"], "pings_per_cpu_s": thr["pings_per_cpu_s"],
                    "drain_ms_per_batch": thr["drain_ms_per_batch"],
                    "half_load_pings_s": lat["pings_s"], "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                    "redis_us_per_ping": thr.get("redis_us_per_ping"),
                    "errors": thr["errors"] + lat["errors"]} for label, workers, thr, lat in rows],
        "in_process": {"pings_s": ref["pings_s"], "ms_per_batch": ref["ms_per_batch"],
                       "cpu_ms_per_batch": ref["cpu_ms_per_batch"],
                       "vs_peer": ref["pings_s"] / peer},
        "targets": {"pings_s_per_worker": 200_000, "p99_ms_at_half_load": P99_TARGET_MS},
    }
    serve = [s for s in results["setups"] if s["setup"].startswith("proximity serve")]
    results["meets_throughput_target"] = all(s["pings_s_per_worker"] >= 200_000 for s in serve)
    results["meets_latency_target"] = all(s["p99_ms"] < P99_TARGET_MS for s in serve)
    print(f"# results: {write_results('http', results)}")
    return 0


def _small(args: argparse.Namespace, paths: dict[str, Path]) -> int:
    import benchmarks.http_small as small
    from benchmarks._common import describe_machine, write_results

    try:
        sizes = [int(x) for x in args.pings_per_request.split(",")]
    except ValueError:
        print(f"--pings-per-request: a comma-separated list of integers, not {args.pings_per_request!r}",
              file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 1 or max(sizes) > BATCH:
        print(f"--pings-per-request: sizes from 1 to {BATCH}", file=sys.stderr)
        return 2
    rows = small.run(args, paths, json.loads(paths["stores"].read_text()), sizes)
    print(f"# machine: {describe_machine()}")
    print(f"# results: {write_results('http_small', {'rows': rows, 'clients': args.clients, 'generators': args.generators, 'batch_ids': args.batch_ids, 'quick': args.quick})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
