"""Scaling: how the figures grow with fences, devices, and cores or workers, drawn as a plot.

    python -m benchmarks scaling [--quick] [--redis URL] [--no-http]

- fences: ``FenceIndex`` build time, bytes per fence and match rate (the same
  pings) at 1k, 10k and 100k fences of the engine benchmark's synthetic city;
- devices: the in-process engine (memory store) at growing device counts, with
  bytes per device, on the steady-state workload of ``benchmarks.engine``;
- cores: ``FenceIndex.match`` with 1 and 2 numba threads;
- workers: ``proximity serve`` with 1 and 2 workers sharing one Redis, measured
  by ``benchmarks.http`` (a load generator in its own process, which competes
  for the same 2 cores: that is where the limit is on this machine).

Writes ``results/scaling.json`` and ``results/scaling.png``.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, best_of, describe_machine, read_results, table, write_results
from benchmarks.engine import CITY, Population, city, run_rounds


def _pings(n: int, centres: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half the pings near a store, half anywhere in the city; accuracy 5-30 m."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(CITY[0], CITY[2], n)
    lat = rng.uniform(CITY[1], CITY[3], n)
    near = rng.random(n) < 0.5
    f = rng.integers(0, len(centres), int(near.sum()))
    lon[near] = centres[f, 0] + rng.normal(0, 40 / 73_000, len(f))
    lat[near] = centres[f, 1] + rng.normal(0, 40 / 111_320, len(f))
    return lon, lat, rng.uniform(5, 30, n)


def _centres(fences: list[Any]) -> np.ndarray:
    return np.array([f.center if f.kind == "circle" else f.geometry.representative_point().coords[0] for f in fences])


def fences_part(sizes: list[int], n_pings: int, seed: int) -> list[dict[str, Any]]:
    import numba

    from geofence import FenceIndex

    out = []
    all_fences = city(max(sizes), seed)
    FenceIndex(all_fences[:50]).compile()  # kernels compiled/loaded (50 fences alone would take numpy's path)
    for n in sizes:
        fences = all_fences[:n]
        t = time.perf_counter()
        index = FenceIndex(fences)
        build_s = time.perf_counter() - t
        lon, lat, acc = _pings(n_pings, _centres(fences), seed + 1)
        index.match(lon[:1000], lat[:1000], accuracy_m=acc[:1000])  # compiled kernels loaded
        row: dict[str, Any] = {"fences": n, "build_s": build_s, "bytes_per_fence": index.nbytes / n}
        for threads in (1, 2):
            if threads > numba.config.NUMBA_NUM_THREADS:
                continue
            numba.set_num_threads(threads)
            s, m = best_of(functools.partial(index.match, lon, lat, accuracy_m=acc), 3)
            row[f"match_pps_{threads}t"] = n_pings / s
            row["pairs"] = len(m.point)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        out.append(row)
        print(f"  fences {n:>7,}: build {build_s:.2f} s, {row['bytes_per_fence']:,.0f} B/fence, "
              f"match {row['match_pps_1t']:,.0f} pings/s on 1 thread", flush=True)
    return out


def devices_part(sizes: list[int], n_fences: int, seed: int) -> list[dict[str, Any]]:
    import numba

    from geofence import FenceIndex
    from proximity.engine import Engine, EngineConfig
    from proximity.store import MemoryStore

    numba.set_num_threads(1)  # the engine figure is per core
    fences = city(n_fences, seed)
    index = FenceIndex(fences)
    centres = _centres(fences)
    out = []
    for n in sizes:
        store = MemoryStore(capacity=n)
        engine = Engine(index, store=store, config=EngineConfig(max_future_skew_s=None))
        r = run_rounds(engine, Population(n, centres, seed), 4, 100_000, 1_700_000_000.0, timed_from=2)
        row = {"devices": n, "engine_pps": r["pings"] / r["engine_s"], "match_pps": r["pings"] / r["match_s"],
               "bytes_per_device": store.bytes_per_device()}
        out.append(row)
        print(f"  devices {n:>9,}: engine {row['engine_pps']:,.0f} pings/s, "
              f"{row['bytes_per_device']:,.0f} B/device", flush=True)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return out


def workers_part(redis: str, quick: bool) -> list[dict[str, Any]]:
    """``benchmarks.http`` with 1 and 2 workers on one Redis, each run in its own process."""
    out = []
    for workers in (1, 2):
        cmd = [sys.executable, "-m", "benchmarks", "http", "--redis", redis, "--workers", str(workers)]
        rc = subprocess.call(cmd + (["--quick"] if quick else []), stdout=subprocess.DEVNULL,
                             env={**os.environ, "PROXIMITY_BENCH_RESULTS": str(RESULTS / "scaling-http")})
        doc = read_results("http", RESULTS / "scaling-http")
        runs = [r for r in (doc or {}).get("setups", []) if "Redis" in r.get("setup", "") and r["workers"] == workers]
        if rc != 0 or not runs:
            print(f"  workers {workers}: http benchmark failed (exit {rc}); not measured", flush=True)
            continue
        r = runs[-1]
        out.append({"workers": workers, "pings_s": r["pings_s"], "p99_ms_half_load": r["p99_ms"]})
        print(f"  workers {workers}: {r['pings_s']:,.0f} pings/s in all", flush=True)
    return out


def limits(doc: dict[str, Any]) -> list[str]:
    """What bounds each figure, read off this run's numbers."""
    out = []
    f = doc["fences"]
    gain = [r["match_pps_2t"] / r["match_pps_1t"] for r in f if "match_pps_2t" in r]
    if gain:
        g = max(gain)
        out.append(f"match with 2 threads gives {g:.2f}x of 1 thread at best"
                   + (" (the second core is busy elsewhere: a shared machine)" if g < 1.5 else ""))
    out.append(f"match rate from {f[0]['fences']:,} to {f[-1]['fences']:,} fences: "
               f"{f[-1]['match_pps_1t'] / f[0]['match_pps_1t']:.2f}x (more fences per cell, more cells)")
    d = doc["devices"]
    out.append(f"engine rate from {d[0]['devices']:,} to {d[-1]['devices']:,} devices: "
               f"{d[-1]['engine_pps'] / d[0]['engine_pps']:.2f}x (the device table outgrows the CPU caches)")
    w = doc.get("workers") or []
    if len(w) == 2:
        out.append(f"2 workers give {w[1]['pings_s'] / w[0]['pings_s']:.2f}x of 1: they, Redis and the load "
                   "generator share 2 cores")
    return out


def plot(doc: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    f = doc["fences"]
    ax = axes[0]
    xs = [r["fences"] for r in f]
    for threads, style in ((1, "o-"), (2, "s--")):
        ys = [r.get(f"match_pps_{threads}t") for r in f]
        if all(y is not None for y in ys):
            ax.plot(xs, ys, style, label=f"match, {threads} thread{'s' if threads > 1 else ''}")
    ax.set(xscale="log", yscale="log", xlabel="fences", ylabel="pings/s", title="FenceIndex.match vs fences")
    ax.legend()
    ax = axes[1]
    d = doc["devices"]
    ax.plot([r["devices"] for r in d], [r["engine_pps"] for r in d], "o-", label="engine (memory store)")
    ax.plot([r["devices"] for r in d], [r["match_pps"] for r in d], "s--", label="match alone")
    ax.set(xscale="log", yscale="log", xlabel="devices", ylabel="pings/s (1 core)", title="engine vs devices")
    ax.legend()
    ax = axes[2]
    w = doc.get("workers") or []
    if w:
        ax.bar([str(r["workers"]) for r in w], [r["pings_s"] for r in w])
        ax.set(xlabel="workers (Redis state)", ylabel="pings/s, all workers", title="HTTP ingest vs workers")
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set(title="HTTP ingest vs workers")
    fig.suptitle(f"proximity scaling on {describe_machine()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller pings and device counts")
    ap.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                    help="Redis for the workers part ('' to skip it)")
    ap.add_argument("--no-http", action="store_true", help="skip the workers part")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    print(f"# scaling on {describe_machine()}", flush=True)
    n_pings = 200_000 if args.quick else 1_000_000
    dev_sizes = [10_000, 100_000, 300_000] if args.quick else [10_000, 100_000, 1_000_000]
    doc: dict[str, Any] = {
        "fences": fences_part([1_000, 10_000, 100_000], n_pings, args.seed),
        "devices": devices_part(dev_sizes, 10_000, args.seed),
        "workers": [] if (args.no_http or not args.redis) else workers_part(args.redis, args.quick),
    }
    print()
    print(table(["fences", "build s", "bytes/fence", "match pings/s 1 thread", "2 threads", "2t/1t"],
                [(f"{r['fences']:,}", f"{r['build_s']:.2f}", f"{r['bytes_per_fence']:,.0f}",
                  f"{r['match_pps_1t']:,.0f}", f"{r.get('match_pps_2t', float('nan')):,.0f}",
                  f"{r.get('match_pps_2t', float('nan')) / r['match_pps_1t']:.2f}x") for r in doc["fences"]]))
    print()
    print(table(["devices", "engine pings/s (1 core)", "match pings/s", "engine/match", "bytes/device"],
                [(f"{r['devices']:,}", f"{r['engine_pps']:,.0f}", f"{r['match_pps']:,.0f}",
                  f"{r['engine_pps'] / r['match_pps']:.2f}", f"{r['bytes_per_device']:,.0f}") for r in doc["devices"]]))
    if doc["workers"]:
        base = doc["workers"][0]["pings_s"]
        print()
        print(table(["workers (Redis)", "pings/s in all", "vs 1 worker"],
                    [(r["workers"], f"{r['pings_s']:,.0f}", f"{r['pings_s'] / base:.2f}x") for r in doc["workers"]]))
    print()
    for line in limits(doc):
        print(f"limit: {line}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "scaling.png"
    plot(doc, png)
    write_results("scaling", {**doc, "plot": str(png)})
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
