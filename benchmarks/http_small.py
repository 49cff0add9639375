"""SDK-shaped HTTP ingest: many concurrent small requests (``python -m benchmarks http --pings-per-request 1,10``).

A phone posts its own last few fixes; what limits a worker then is the fixed cost
per request, not the cost per ping. For each request size, the peer (a bare aiohttp
app parsing the same bodies with orjson), ``proximity serve`` with memory state (1
worker) and, with ``--redis``, with Redis state (``--workers``; by default the cores but one,
:func:`redis_workers`) are driven by
``--generators`` load-generator processes (closed loop, ``--clients`` requests in
flight in all, as many phones at once), then open loop at half the measured rate
for p50/p99 (each worker's ``/metrics`` histograms split the half-load p99: the
whole request in the server, the wait in the coalescer, the engine call; beside them the slowest call of the
worker's advance loop, which runs on the engine too). The server's CPU time is read from
``/proc`` for its whole process tree, so "requests per worker CPU-second" does not depend on what the neighbours
and the load generators take from the shared cores; the generators' own CPU is
reported apart.
"""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchmarks._http_serve as H
from benchmarks._common import add_counts, percentile_ms

#: pings in one pass over a size's bodies (all generators together). A pass's pings take 0.1 s of ts
#: (:func:`benchmarks._http_serve.stamp`), so a pass must last that long or the ts run ahead of the clock and,
#: past the service's ``max_skew_s``, every row is refused: 60,000 pings last 0.2 s at 300k pings/s
PASS_PINGS = 60_000

TARGETS = {1: {"memory": 5_000, "redis": 2_500}, 10: {"memory": 4_000}}  # requests per worker CPU-second
P99_TARGET_MS = H.P99_TARGET_MS  # for every setup and size


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Each of issue 19's targets that a run's rows measure, met or missed, then the bare peer's own half-load
    p99 (the same target, for the yardstick: a phase the peer misses too was the machine's). A figure that
    was not measured (NaN) is missed."""
    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines, n, ok_count = [], 0, 0
    unmeasured = {(size, backend) for size, by in TARGETS.items() for backend in by}
    for r in rows:
        size, label = r["pings_per_request"], r["setup"]
        if not label.startswith("serve"):
            continue
        backend = "redis" if "Redis" in label else "memory"
        target = TARGETS.get(size, {}).get(backend)
        what = f"{label} ({r['workers']}w), {size} ping(s) a request"
        if target is not None:
            unmeasured.discard((size, backend))
            got = r["req_per_cpu_s"]
            ok = got >= target  # NaN compares False: not measured is not met
            n, ok_count = n + 1, ok_count + ok
            lines.append(f"{what}: {got * size:,.0f} {'pings' if size > 1 else 'requests'} per worker CPU-second, "
                         f"target >= {target * size:,}: {met(ok)}")
        ok = r["half_load_p99_ms"] < P99_TARGET_MS
        n, ok_count = n + 1, ok_count + ok
        lines.append(f"{what}: half-load p99 {r['half_load_p99_ms']:.1f} ms, target < {P99_TARGET_MS:g}: {met(ok)}")
    peers = [r for r in rows if not r["setup"].startswith("serve")]
    held = sum(r["half_load_p99_ms"] < P99_TARGET_MS for r in peers)
    lines.append(f"targets: {ok_count} of {n} met" + "".join(
        f"; not measured: {'Redis' if backend == 'redis' else 'memory'} at {size} ping(s) a request"
        for size, backend in sorted(unmeasured)) + (
        f"; the bare peer's half-load p99 under {P99_TARGET_MS:g} ms in {held} of {len(peers)} phases ("
        + ", ".join(f"{r['half_load_p99_ms']:.1f} ms at {r['pings_per_request']} ping(s)" for r in peers) + ")"
        if peers else ""))
    return lines


def redis_workers(requested: int | None, cores: int | None) -> int:
    """The Redis setup's workers: ``requested`` (``--workers``), else the machine's cores but one, at least one.

    The run puts the Redis workers, Redis itself and the load generators on the same cores. With as many
    workers as cores, "half load" left the machine no core to spare (1.90-1.93 of 2 busy on a quiet Intel VM,
    1.88-1.93 on a noisy AMD one): each of a call's two Redis round trips waited for a core, and the tail was
    the run queue's (half-load p99 8.0-20.2 ms with two workers in 4 runs; one worker 5.8-15.3 ms in 5, at
    1.22-1.29 of 2 busy). One core is left for Redis and the generators, as a deployment that runs Redis
    beside its workers would size them; ``--workers`` measures any other count."""
    return requested if requested is not None else max(1, (cores or 2) - 1)


def pass_bodies(stores: list[list[float]], per_request: int, batch_ids: bool) -> list[bytes]:
    """One pass's bodies for requests of ``per_request`` pings: at least :data:`PASS_PINGS` pings and 100 bodies."""
    return bodies(stores, per_request, max(100, -(-PASS_PINGS // per_request)), batch_ids)


def bodies(stores: list[list[float]], per_request: int, n: int, batch_ids: bool, seed: int = 3) -> list[bytes]:
    """``n`` request bodies of ``per_request`` pings (``H.MARK`` where each pass's time goes: ``H.stamp``), pinged as
    the 500-ping benchmark's devices do: each device from its home spot (a quarter of them inside a store) with a
    few metres of jitter, 1% of pings from a random spot. Up to 10 pings a request come from one phone (its
    last fixes); bigger requests mix devices, as a gateway's."""
    rng = random.Random(seed)
    home = H.home_spots(stores, rng)
    out = []
    for b in range(n):
        phone = rng.randrange(H.N_DEVICES)
        rows = [H.ping_row(rng, home, phone if per_request <= 10 else rng.randrange(H.N_DEVICES), b * per_request + i)
                for i in range(per_request)]
        bid = f'"batch_id":"{H.MARK.decode()}-{b}",' if batch_ids else ""
        out.append(("{" + bid + '"pings":[' + ",".join(rows) + "]}").encode())
    return out


def outcome(status: int, answer: bytes) -> str:
    """What a ``POST /v1/pings`` answer says: ``error`` (not 200), ``refused`` (200, but some rows refused: late,
    in the future, bad values; the server took the cheaper error path for them), else ``ok``."""
    if status != 200:
        return "error"
    return "refused" if b'"rejected":[{' in answer else "ok"


def _generator(url: str, bodies: list[bytes], seconds: float, rate: float | None, clients: int, second: float,
               ready: Any, go: Any, out: Any) -> None:
    """One load-generator process: warm up, wait for ``go``, then closed loop (``rate`` None) or open loop.
    Requests go through :class:`~benchmarks._rawclient.RawClient` (aiohttp's client took most of a core at
    these rates, from the 2 the server shares with the generators)."""
    from benchmarks._common import failure
    from benchmarks._rawclient import InFlight, RawClient, RawClientError, quiet_collector

    async def run() -> dict[str, Any]:
        nonlocal second
        latencies: list[float] = []
        errors = refused = 0
        failed: dict[str, int] = {}  # "<status> <the start of its body>" -> how many (the measured phase's)
        headers = {"X-API-Key": H.KEY, "Content-Type": "application/json"}
        sent = 0

        mark = b""

        def body() -> bytes:
            nonlocal sent, second, mark
            if sent % len(bodies) == 0:
                second, mark = H.stamp(second)
            sent += 1
            return bodies[sent % len(bodies)].replace(H.MARK, mark)

        client_ = RawClient(url, headers, connections=clients * 2)
        try:
            async def one() -> None:
                nonlocal errors, refused
                t = time.perf_counter()
                try:
                    status, answer = await client_.post(body())
                except (RawClientError, OSError):
                    status, answer = 0, b""
                kind = outcome(status, answer)
                errors += kind == "error"
                if kind == "error":
                    what = failure(status, answer)
                    failed[what] = failed.get(what, 0) + 1
                refused += kind == "refused"
                latencies.append(time.perf_counter() - t)

            for _ in range(0, len(bodies), clients):  # warm up: one pass, every device has state (steady state)
                await asyncio.gather(*(one() for _ in range(clients)))
            latencies.clear()
            errors = refused = 0
            failed.clear()
            quiet_collector()
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            c0, t0 = time.process_time(), time.perf_counter()
            if rate is None:
                async def client() -> None:
                    while time.perf_counter() - t0 < seconds:
                        await one()
                await asyncio.gather(*(client() for _ in range(clients)))
            else:
                flight, k = InFlight(), 0
                while (due := t0 + k / rate) - t0 < seconds:
                    if due > time.perf_counter():
                        await asyncio.sleep(due - time.perf_counter())
                    flight.start(one())
                    k += 1
                await flight.wait()
            return {"latencies": latencies, "errors": errors, "failed": failed, "refused": refused, "elapsed": time.perf_counter() - t0,
                    "cpu": time.process_time() - c0, "second": second}
        finally:
            await client_.close()

    out.put(asyncio.run(run()))


def measure(url: str, bodies: list[bytes], per_request: int, seconds: float, rate: float | None, clients: int,
            generators: int, second: float, server_pid: int, probe: Callable[[], Any] | None = None) -> dict[str, Any]:
    """One phase with ``generators`` processes; the server's CPU is read around the phase, and so is ``probe()``
    (``probe_before``, ``probe_after``): once the generators have warmed up, so neither counts their warm-up."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    go = ctx.Event()
    procs, readies = [], []
    for g in range(generators):
        ready = ctx.Event()
        share = bodies[g::generators]
        p = ctx.Process(target=_generator, args=(url, share, seconds, None if rate is None else rate / generators,
                                                  max(1, clients // generators), second, ready, go, q))
        p.start()
        procs.append(p)
        readies.append(ready)
    for r in readies:
        r.wait(120)
    pids = H._process_tree(server_pid)
    probe_before = probe() if probe is not None else None
    cpu0, machine0 = H._cpu_seconds(pids), H.machine_seconds()
    go.set()
    results = [q.get(timeout=seconds + 120) for _ in procs]
    cpu1, machine1 = H._cpu_seconds(pids), H.machine_seconds()
    probe_after = probe() if probe is not None else None
    for p in procs:
        p.join(30)
    lat = sorted(x for r in results for x in r["latencies"])
    elapsed = max(r["elapsed"] for r in results)
    n = len(lat)
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {"requests": n, "req_s": n / elapsed, "pings_s": n * per_request / elapsed,
            "errors": sum(r["errors"] for r in results),
            "failed": add_counts(*(r["failed"] for r in results)),
            "refused": sum(r["refused"] for r in results),
            "p50_ms": percentile_ms(lat, 0.5),
            "p99_ms": percentile_ms(lat, 0.99),
            # each generator's own p99: a tail that one generator saw and the others did not was that process's
            "p99_ms_by_generator": [percentile_ms(r["latencies"], 0.99) for r in results],
            "server_cpu_ms_per_req": 1000 * cpu / n if cpu and n else float("nan"),
            "req_per_cpu_s": n / cpu if cpu else float("nan"),
            "pings_per_cpu_s": n * per_request / cpu if cpu else float("nan"),
            "generator_cpu_s_per_s": sum(r["cpu"] for r in results) / elapsed,
            "machine_cores_busy": H.cores_busy(machine0, machine1),
            "second": max(r["second"] for r in results), "probe_before": probe_before, "probe_after": probe_after}


#: the server's histograms that split a request's time (``/metrics``): the whole request, its wait in the coalescer
#: for its engine call, the engine calls (where they ran: loop or engine thread), the advance loop's calls
PHASES = {"request": 'proximity_http_request_seconds_bucket{route="/v1/pings",',
          "wait": "proximity_coalesce_wait_seconds_bucket{",
          "call": "proximity_ping_engine_call_seconds_bucket{",
          "advance": 'proximity_engine_batch_seconds_bucket{kind="advance",'}
#: the garbage collector's pauses (every generation's buckets summed) and its seconds (under the bound ``inf``)
GC = {"gc_pause": "proximity_gc_pause_seconds_bucket{", "gc_seconds": "proximity_gc_seconds_total{"}
#: the coalescer's counters: engine calls for /v1/pings and the requests they answered (under the bound ``inf``)
CALLS = {"calls": "proximity_ping_engine_calls_total ", "coalesced": "proximity_coalesced_requests_total "}


def scrape_workers(url: str, workers: int, tries: int = 200) -> dict[str, dict[str, dict[float, float]]]:
    """Each of the ``workers`` workers sharing ``url``, by pid (``proximity_process_info``): cumulative bucket
    counts (``le`` -> count) of :data:`PHASES` from its ``/metrics`` (the call's buckets summed over where they
    ran). Each scrape reaches one of them, so it scrapes until all have answered (at most ``tries`` times; a
    worker that never answered is left out)."""
    out: dict[str, dict[str, dict[float, float]]] = {}
    for _ in range(tries):
        pid, phases = _scrape_page(url)
        out.setdefault(pid, phases)
        if len(out) >= workers:
            break
    return out


def _scrape_page(url: str) -> tuple[str, dict[str, dict[float, float]]]:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    info = re.search(r'^proximity_process_info\{[^}]*\bpid="(\d+)"', text, re.M)  # the worker that answered
    pid = info.group(1) if info else ""
    out: dict[str, dict[float, float]] = {k: {} for k in (*PHASES, *GC, *CALLS)}
    for line in text.splitlines():
        for phase, prefix in (*PHASES.items(), *GC.items(), *CALLS.items()):
            if line.startswith(prefix):
                le = float(line.split('le="', 1)[1].split('"', 1)[0]) if 'le="' in line else math.inf
                out[phase][le] = out[phase].get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return pid, out


def gc_share(phase: dict[str, Any], requests: int) -> str:
    """What the garbage collector took of a measured phase (its probes' scrapes, every worker): its share of the
    server's CPU, the number of collections and the bucket of the longest."""
    before, after = phase.get("probe_before") or {}, phase.get("probe_after") or {}
    seconds, pauses, longest = _grown(phase, "gc_seconds"), _grown(phase, "gc_pause"), 0.0
    for pid, ph in after.items():
        if pid in before:
            bound = p99_bound_ms(before[pid]["gc_pause"], ph["gc_pause"], q=1.0)
            longest = longest if math.isnan(bound) else max(longest, bound)
    cpu_s = phase["server_cpu_ms_per_req"] * requests / 1000 if requests else math.nan
    share = 100 * seconds / cpu_s if cpu_s and not math.isnan(cpu_s) else math.nan
    return f"{share:.1f}% of the server's CPU ({pauses:.0f} collections, the longest <= {longest:g} ms)"


def server_load(phase: dict[str, Any]) -> tuple[float, float]:
    """A measured phase's requests per engine call (every worker's, from its probes' scrapes; ``nan`` without
    them) and the cores the server used (its CPU seconds per second of the phase)."""
    calls, answered = _grown(phase, "calls"), _grown(phase, "coalesced")
    return (answered / calls if calls else math.nan), phase["req_s"] * phase["server_cpu_ms_per_req"] / 1000


def _grown(phase: dict[str, Any], series: str) -> float:
    """How much a scraped series' total (its bound ``inf``) grew over a measured phase, summed over the workers
    scraped both before and after it."""
    before, after = phase.get("probe_before") or {}, phase.get("probe_after") or {}
    return sum(ph[series].get(math.inf, 0.0) - before[pid][series].get(math.inf, 0.0)
               for pid, ph in after.items() if pid in before)


def p99_bound_ms(before: dict[float, float], after: dict[float, float], q: float = 0.99) -> float:
    """The upper bound of the bucket that holds the 99th percentile (``q``; 1: the largest) of what was observed
    between two scrapes (``nan``: nothing observed)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    return next(1000 * b for b, c in zip(bounds, counts, strict=True) if c >= q * counts[-1])


def run(args: Any, paths: dict[str, Path], stores: list[list[float]], sizes: list[int]) -> list[dict[str, Any]]:
    """Every size against the peer, memory and (with ``--redis``) Redis; prints the table, returns the rows."""
    seconds = 2.0 if args.quick else args.seconds
    second = int(time.time()) - 5
    out: list[dict[str, Any]] = []
    print(f"# SDK-shaped HTTP ingest: {args.clients} requests in flight from {args.generators} load-generator "
          f"process(es), {os.cpu_count()} CPU(s), {seconds:g} s per phase, batch_id: {args.batch_ids}")
    base, base_url = H.start_baseline(paths["config"].parent / "baseline-small.port")
    servers: list[tuple[str, int, Any, str]] = [("peer: aiohttp + orjson", 1, base, base_url)]
    try:
        for label, workers, redis in [("serve, memory", 1, None)] + (
                [("serve, Redis", redis_workers(args.workers, os.cpu_count()), args.redis)] if args.redis else []):
            proc, url = H._start_serve(paths, workers, redis)
            servers.append((label, workers, proc, url))
        # each server's own clock for the pings' ts (the peer's fast passes must not push the others' ahead)
        clock = {label: second for label, _w, _p, _u in servers}
        # the run's first phase ran slow (the peer's first closed loop at 0.56-0.57 of the one after its half-load
        # phase, twice): an unmeasured closed loop first, so the peer is not measured on it
        first = measure(base_url + "/v1/pings", pass_bodies(stores, sizes[0], args.batch_ids), sizes[0],
                        min(seconds, 2.0), None, args.clients, args.generators, second, base.pid)
        clock[servers[0][0]] = first["second"] + 1
        for size in sizes:
            reqs = pass_bodies(stores, size, args.batch_ids)
            for label, workers, proc, url in servers:
                second = clock[label]
                split = label.startswith("serve")
                probe = functools.partial(scrape_workers, url, workers) if split else None
                thr = measure(url + "/v1/pings", reqs, size, seconds, None, args.clients, args.generators, second,
                              proc.pid, probe)
                second = thr["second"] + 1
                collector = (f"garbage collection: closed loop {gc_share(thr, thr['requests'])}; half load "
                             if split else "")
                lat = measure(url + "/v1/pings", reqs, size, seconds, thr["req_s"] / 2, args.clients,
                              args.generators, second, proc.pid, probe)
                second = clock[label] = lat["second"] + 1
                # the closed loop again: a VM whose speed drifts can make "half" of the first rate more than half
                # of what the server can do by the end of the half-load phase (no probe: the split is the above)
                again = measure(url + "/v1/pings", reqs, size, seconds, None, args.clients, args.generators, second,
                                proc.pid)
                second = clock[label] = again["second"] + 1
                # each worker's own p99 bounds over the measured phase (not the generators' warm-up before it);
                # the row shows the largest (the worst worker's) of each phase
                collector += gc_share(lat, lat["requests"]) if split else ""
                (thr_batch, thr_cores), (lat_batch, lat_cores) = server_load(thr), server_load(lat)
                before, after = lat.pop("probe_before") or {}, lat.pop("probe_after") or {}
                per_worker = {pid: {k: p99_bound_ms(before[pid][k], v) for k, v in ph.items() if k in PHASES}
                              for pid, ph in after.items() if pid in before}
                phases = {k: max((w[k] for w in per_worker.values() if not math.isnan(w[k])), default=math.nan)
                          for k in PHASES} if per_worker else {}
                thr.pop("probe_before"), thr.pop("probe_after")
                row = {"setup": label, "workers": workers, "pings_per_request": size, **thr,
                       "half_load_p50_ms": lat["p50_ms"], "half_load_p99_ms": lat["p99_ms"],
                       "half_load_p99_ms_by_generator": lat["p99_ms_by_generator"],
                       "half_load_server_p99_bound_ms": phases, "half_load_server_p99_bound_ms_by_worker": per_worker,
                       "errors": thr["errors"] + lat["errors"],
                       "refused": thr["refused"] + lat["refused"],
                       "requests_per_call": thr_batch, "half_load_requests_per_call": lat_batch,
                       "server_cores": thr_cores, "half_load_server_cores": lat_cores,
                       "half_load_server_cpu_ms_per_req": lat["server_cpu_ms_per_req"],
                       "half_load_machine_cores_busy": lat["machine_cores_busy"],
                       "closed_loop_after_req_s": again["req_s"], "closed_loop_after_req_per_cpu_s": again["req_per_cpu_s"],
                       "half_load_share": [lat["req_s"] / thr["req_s"], lat["req_s"] / again["req_s"]]}
                out.append(row)
                print(f"{label:24} {workers:2d}w {size:4d} pings/req {thr['req_s']:9,.0f} req/s {thr['pings_s']:10,.0f} "
                      f"pings/s | CPU {thr['server_cpu_ms_per_req']:6.3f} ms/req {thr['req_per_cpu_s']:8,.0f} req/CPU-s "
                      f"{thr['pings_per_cpu_s']:10,.0f} pings/CPU-s | loaded p50/p99 {thr['p50_ms']:.1f}/"
                      f"{thr['p99_ms']:.1f} ms, half load {lat['p50_ms']:.1f}/{lat['p99_ms']:.1f} ms "
                      f"(by generator {' / '.join(f'{x:.1f}' for x in lat['p99_ms_by_generator'])}) | "
                      f"generators {thr['generator_cpu_s_per_s']:.2f} CPU | errors {row['errors']}"
                      + (f" | {row['refused']} answers refused rows" if row["refused"] else ""), flush=True)
                failed = add_counts(thr["failed"], lat["failed"])
                row["failed"] = failed
                for what, k in sorted(failed.items()):
                    print(f"{'':24} errors: {k} x {what}", flush=True)
                if phases:
                    print(f"{'':24} half load, the server's own p99 (<= its histogram bucket; the worst of "
                          f"{len(per_worker)} worker(s)): request "
                          f"{phases['request']:g} ms, coalescer wait {phases['wait']:g} ms, engine call "
                          f"{phases['call']:g} ms, time passing (the advance loop's calls) {phases['advance']:g} ms",
                          flush=True)
                print(f"{'':24} load: closed loop {thr_cores:.2f} cores"
                      + (f", {thr_batch:.1f} requests a call" if split else "")
                      + f"; half load {lat_cores:.2f} cores"
                      + (f", {lat_batch:.1f} requests a call" if split else "")
                      + f", {lat['server_cpu_ms_per_req']:.3f} ms of CPU a request; the machine "
                      f"{thr['machine_cores_busy']:.2f} and {lat['machine_cores_busy']:.2f} of its {os.cpu_count()} cores "
                      "busy", flush=True)
                print(f"{'':24} capacity: the closed loop {thr['req_s']:,.0f} requests/s before the half-load phase and "
                      f"{again['req_s']:,.0f} after it ({again['req_per_cpu_s']:,.0f} req/CPU-s): the half load was "
                      f"{row['half_load_share'][0]:.2f} and {row['half_load_share'][1]:.2f} of it", flush=True)
                if collector:
                    row["garbage_collection"] = collector
                    print(f"{'':24} {collector}", flush=True)
    finally:
        for _label, _w, proc, _u in servers:
            H._stop(proc)
        if args.redis:
            H._clear_redis(args.redis)
    print("CPU: the server's own CPU (its whole process tree, /proc) per request during the closed loop; "
          "req/CPU-s: requests one fully used core of the server answers; load: the cores the server used in "
          "each phase (fewer requests a call at half load cost more CPU each), and how busy the machine's cores were (the "
          "server, the generators and every neighbour: /proc/stat); capacity: the closed loop run again after the "
          "half-load phase (a VM's speed drifts; the CPU targets are read from the first). Issue 19's targets, "
          "each met or missed:")
    for line in verdicts(out):
        print(line)
    return out


__all__ = ["P99_TARGET_MS", "TARGETS", "bodies", "measure", "outcome", "redis_workers", "run", "verdicts"]
