"""Engine throughput: presence over a city of fences, memory and Redis state, against raw fence matching.

    python -m benchmarks engine [--quick] [--devices N] [--fences N] [--redis URL] [--redis-devices N]

A seeded synthetic city (0.6 x 0.6 degrees; half circles, half 8-32-vertex
polygons, 40-150 m across). Every device pings once per 30 s round. Between
rounds about 1% of devices move (half walk into a store, half leave one), so
about 1% of pings cause a transition: the steady state of a live system. A move
stays plausible (a nearby store, a street within 2 km), so the engine's check
against impossible jumps refuses none of them.
After two warm-up rounds (devices created, kernels loaded, the devices that start
inside a store entered: a visit may wait for a second fix) the timed rounds run
through ``Engine.process_pings`` in batches, on one core (all kernels are
single-threaded). In the same run, the raw ``FenceIndex.match`` rate on the same
points is the reference: the engine's cost is match + presence.

The Redis store runs the same workload with fewer devices (each one is a key
in a shared server) under a unique key prefix, deleted afterwards.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import uuid
from typing import Any

import numpy as np

CITY = (2.0, 48.6, 2.6, 49.2)
#: untimed warm-up rounds: devices created, kernels loaded, and the devices that start inside a store
#: entered (a visit may need a second fix to be sure enough), so the timed rounds are the steady state
WARM = 2
M_LAT = 111_320.0


def city(n_fences: int, seed: int) -> list[Any]:
    import shapely

    from geofence import Fence, circle_fence

    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = CITY
    out = []
    for i in range(n_fences):
        lon, lat = rng.uniform(x0, x1), rng.uniform(y0, y1)
        size = rng.uniform(40, 150)
        if i % 2:
            out.append(circle_fence(f"f{i:06d}", lon, lat, size / 2))
            continue
        k = int(rng.integers(8, 33))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = size / 2 * rng.uniform(0.7, 1.0, k)
        m_lon = M_LAT * math.cos(math.radians(lat))
        ring = np.c_[lon + rad * np.cos(ang) / m_lon, lat + rad * np.sin(ang) / M_LAT]
        out.append(Fence(id=f"f{i:06d}", name=f"f{i:06d}", tags=(), properties={},
                         geometry=shapely.Polygon(ring)))
    return out


class Population:
    """Devices with a position; ``move(rate)`` sends rate/2 of them from the street into a store and
    rate/2 from a store out to the street, so about ``rate`` of the next round's pings are transitions."""

    def __init__(self, n: int, centres: np.ndarray, seed: int, inside_share: float = 0.1) -> None:
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.ids = np.array([f"device-{i:07d}" for i in range(n)], dtype=object)
        self.centres = centres
        self.lon = self.rng.uniform(CITY[0], CITY[2], n)
        self.lat = self.rng.uniform(CITY[1], CITY[3], n)
        self.inside = np.zeros(n, bool)
        self._to_store(np.flatnonzero(self.rng.random(n) < inside_share))

    def _to_store(self, idx: np.ndarray, near: bool = False) -> None:
        f = self.rng.integers(0, len(self.centres), len(idx))
        if near:  # the nearest of 256 random stores: a few km at most
            cand = self.rng.integers(0, len(self.centres), (len(idx), 256))
            d = np.hypot(self.centres[cand, 0] - self.lon[idx, None], self.centres[cand, 1] - self.lat[idx, None])
            f = cand[np.arange(len(idx)), np.argmin(d, axis=1)]
        self.lon[idx], self.lat[idx] = self.centres[f, 0], self.centres[f, 1]
        self.inside[idx] = True

    def move(self, rate: float) -> None:
        k = int(self.n * rate / 2)
        walk_in = self.rng.choice(np.flatnonzero(~self.inside), k, replace=False)
        walk_out = self.rng.choice(np.flatnonzero(self.inside), k, replace=False)
        self._to_store(walk_in, near=True)
        self.lon[walk_out] = np.clip(self.lon[walk_out] + self.rng.uniform(-0.02, 0.02, k), CITY[0], CITY[2])
        self.lat[walk_out] = np.clip(self.lat[walk_out] + self.rng.uniform(-0.015, 0.015, k), CITY[1], CITY[3])
        self.inside[walk_out] = False

    def pings(self, ts: float) -> tuple[np.ndarray, ...]:
        """One ping per device in random order: 3 m of GPS noise, accuracy 5-15 m."""
        order = self.rng.permutation(self.n)
        noise = self.rng.normal(0, 3, (2, self.n)) / M_LAT
        acc = self.rng.uniform(5, 15, self.n)
        t = ts + self.rng.uniform(0, 1, self.n)
        return (self.ids[order], (self.lon + noise[0] / math.cos(math.radians(48.9)))[order],
                (self.lat + noise[1])[order], acc[order], t[order])


def run_rounds(engine: Any, pop: Population, rounds: int, batch: int, t0: float, *,
               timed_from: int = 1, move: float = 0.01, redis_url: str | None = None) -> dict[str, float]:
    """With ``redis_url``, also the Redis server's CPU seconds over the timed rounds (``redis_cpu``; NaN when
    unknown; it includes the fence matching's rounds, which do not touch Redis)."""
    from benchmarks._common import redis_cpu_seconds
    from proximity.batch import PingBatch

    engine_s = match_s = engine_cpu = match_cpu = 0.0
    pings = events = transitions = implausible = 0
    redis0 = None
    for k in range(rounds):
        if k == timed_from:
            redis0 = redis_cpu_seconds(redis_url)
        if k:
            pop.move(move)
        ids, lon, lat, acc, ts = pop.pings(t0 + 30 * k)
        for i in range(0, pop.n, batch):
            sl = slice(i, i + batch)
            b = PingBatch.from_arrays(ids[sl], lon[sl], lat[sl], acc[sl], ts[sl])
            t, c = time.perf_counter(), time.process_time()
            r = engine.process_pings(b)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            if k >= timed_from:
                engine_s += dt
                engine_cpu += dc
                pings += len(b)
                events += len(r.events)
                transitions += r.stats.get("enter", 0) + r.stats.get("exit", 0)
                implausible += r.stats.get("implausible", 0)
                t, c = time.perf_counter(), time.process_time()
                engine.index.match(lon[sl], lat[sl], accuracy_m=acc[sl])
                match_s += time.perf_counter() - t
                match_cpu += time.process_time() - c
    redis1 = redis_cpu_seconds(redis_url)
    redis_cpu = redis1 - redis0 if redis0 is not None and redis1 is not None else float("nan")
    return {"pings": pings, "engine_s": engine_s, "match_s": match_s, "engine_cpu": engine_cpu,
            "match_cpu": match_cpu, "events": events, "transitions": transitions, "implausible": implausible,
            "redis_cpu": redis_cpu}


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks engine", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k devices, 1k fences, 20k Redis devices")
    ap.add_argument("--devices", type=int, default=None, help="devices for the memory store (default 1,000,000)")
    ap.add_argument("--fences", type=int, default=None, help="fences in the city (default 10,000)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (each: one ping per device)")
    ap.add_argument("--batch", type=int, default=100_000, help="pings per process_pings call")
    ap.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                    help="Redis URL for the Redis store run ('' to skip)")
    ap.add_argument("--redis-devices", type=int, default=None, help="devices for the Redis run (default 100,000)")
    ap.add_argument("--redis-batch", type=int, default=500, help="pings per call in the Redis run (default 500)")
    ap.add_argument("--cluster", action="store_true",
                    help="the Redis run in cluster mode (a cluster node's URL: a real Redis Cluster)")
    ap.add_argument("--groups", type=int, default=None,
                    help="with --cluster: device groups of the state store's key layout (default: the store's)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1,
                    help="numba threads for FenceIndex.match (default 1: the targets are per core)")
    args = ap.parse_args(argv)
    import numba

    if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
        ap.error(f"--threads must be 1..{numba.config.NUMBA_NUM_THREADS}")
    numba.set_num_threads(args.threads)
    n_dev = args.devices or (100_000 if args.quick else 1_000_000)
    n_fen = args.fences or (1_000 if args.quick else 10_000)
    n_red = args.redis_devices or (20_000 if args.quick else 100_000)

    from benchmarks._common import describe_machine, write_results
    from geofence import FenceIndex
    from proximity.engine import Engine, EngineConfig
    from proximity.store import MemoryStore, RedisStore

    print(f"engine benchmark: {n_dev:,} devices, {n_fen:,} fences, {args.rounds} timed rounds, "
          f"{args.threads} numba thread(s); {describe_machine()}")
    t = time.perf_counter()
    fences = city(n_fen, args.seed)
    index = FenceIndex(fences)
    print(f"city and index built in {time.perf_counter() - t:.1f} s")
    centres = np.array([f.center if f.kind == "circle" else f.geometry.representative_point().coords[0]
                        for f in fences])
    config = EngineConfig(max_future_skew_s=None)
    t0 = 1_700_000_000.0

    store = MemoryStore(capacity=n_dev)
    eng = Engine(index, store=store, config=config)
    pop = Population(n_dev, centres, args.seed)
    mem = run_rounds(eng, pop, args.rounds + WARM, args.batch, t0, timed_from=WARM)
    bpd = store.bytes_per_device()
    rows: list[tuple[str, ...]] = [("run", "pings", "wall s", "pings/s", "CPU s", "pings/CPU s", "vs match", "transitions", "events")]

    def add(name: str, r: dict[str, float], ref: float) -> None:
        rate, cpu_rate = r["pings"] / r["engine_s"], r["pings"] / max(r["engine_cpu"], 1e-9)
        rows.append((name, f"{r['pings']:,}", f"{r['engine_s']:.2f}", f"{rate:,.0f}", f"{r['engine_cpu']:.2f}",
                     f"{cpu_rate:,.0f}", f"{rate / ref:.2f}x", f"{r['transitions'] / r['pings']:.2%}",
                     f"{r['events']:,}"))

    match_rate = mem["pings"] / mem["match_s"]
    rows.append(("FenceIndex.match (same points)", f"{mem['pings']:,}", f"{mem['match_s']:.2f}",
                 f"{match_rate:,.0f}", f"{mem['match_cpu']:.2f}",
                 f"{mem['pings'] / max(mem['match_cpu'], 1e-9):,.0f}", "1.00x", "", ""))
    add(f"Engine, memory store ({n_dev:,} devices)", mem, match_rate)

    red = None
    if args.redis:
        prefix = f"bench:engine:{uuid.uuid4().hex[:8]}"
        rstore = RedisStore(args.redis, prefix=prefix, ttl_s=3600, cluster=args.cluster, groups=args.groups)
        try:
            reng = Engine(index, store=rstore, config=config)
            rpop = Population(n_red, centres, args.seed + 1)
            red = run_rounds(reng, rpop, args.rounds + WARM, args.redis_batch, t0, timed_from=WARM,
                             redis_url=args.redis)
            add(f"Engine, Redis{' Cluster' if args.cluster else ''} store ({n_red:,} devices, "
                f"batches of {args.redis_batch})", red, red["pings"] / red["match_s"])
            print(f"Redis run: worker {red['pings'] / max(red['engine_cpu'], 1e-9):,.0f} pings per CPU-second "
                  f"({1e6 * red['engine_cpu'] / red['pings']:.1f} us CPU per ping); Redis server "
                  f"{1e6 * red['redis_cpu'] / red['pings']:.1f} us CPU per ping (INFO cpu, all its clients)")
        except Exception as exc:  # a benchmark reports what it could not measure
            print(f"Redis run skipped: {type(exc).__name__}: {exc}")
        finally:
            keys = list(rstore.r.scan_iter(match=f"{prefix}*", count=10_000))
            for i in range(0, len(keys), 1000):
                rstore.r.delete(*keys[i : i + 1000])
            rstore.close()
    print()
    print(table(rows))
    print()
    print(f"engine config: profile {config.profile}; fixes refused as implausible: {mem['implausible']:,}")
    print(f"memory store: {bpd:,.0f} bytes per device ({len(store):,} devices; id table, device table and visit records)")
    mem_rate = mem["pings"] / mem["engine_s"]
    mem_cpu_rate = mem["pings"] / max(mem["engine_cpu"], 1e-9)
    red_rate = red["pings"] / red["engine_s"] if red else None
    print("wall: elapsed time (the machine is shared: other processes' load shows here); CPU: this process's "
          "CPU time, i.e. the rate per core. The Redis run also waits on the server: its wall rate says how much the server (and the load) left.")
    print(f"targets: memory store >= 1,000,000 pings/s on one core -> {mem_rate:,.0f} wall, {mem_cpu_rate:,.0f} CPU; "
          f"Redis store >= 150,000 pings per worker CPU-second (batches of 500) -> "
          + (f"{red['pings'] / max(red['engine_cpu'], 1e-9):,.0f}" if red is not None else "not measured"))
    write_results("engine", {
        "args": {"devices": n_dev, "fences": n_fen, "rounds": args.rounds, "batch": args.batch,
                 "redis_devices": n_red if red else None, "redis_batch": args.redis_batch, "threads": args.threads,
                 "quick": args.quick, "seed": args.seed},
        "match_pings_per_s": match_rate,
        "match_pings_per_cpu_s": mem["pings"] / max(mem["match_cpu"], 1e-9),
        "memory": {"pings": mem["pings"], "seconds": mem["engine_s"], "pings_per_s": mem_rate,
                   "cpu_seconds": mem["engine_cpu"], "pings_per_cpu_s": mem_cpu_rate,
                   "vs_match": mem_rate / match_rate, "transition_share": mem["transitions"] / mem["pings"],
                   "events": mem["events"], "bytes_per_device": bpd, "devices": len(store)},
        "redis": None if red is None else {
            "pings": red["pings"], "seconds": red["engine_s"], "pings_per_s": red_rate,
            "cpu_seconds": red["engine_cpu"], "pings_per_cpu_s": red["pings"] / max(red["engine_cpu"], 1e-9),
            "redis_cpu_s_per_ping": red["redis_cpu"] / red["pings"], "cluster": args.cluster,
            "groups": rstore.layout.groups or None,
            "match_pings_per_s": red["pings"] / red["match_s"], "transition_share": red["transitions"] / red["pings"],
            "events": red["events"]},
        "targets": {"memory_pings_per_s": 1_000_000, "redis_pings_per_cpu_s": 150_000,
                    "memory_met_wall": mem_rate >= 1_000_000, "memory_met_cpu": mem_cpu_rate >= 1_000_000, "redis_met": None if red is None else red["pings"] / max(red["engine_cpu"], 1e-9) >= 150_000},
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
