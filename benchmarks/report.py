"""Conversion report speed: ``campaigns.report.lift_report`` over 10M exposures and 50M presence events.

    python -m benchmarks report [--quick] [--decisions N] [--events N] [--devices N]

A seeded synthetic month: 1M devices, 2,000 stores, visits with a log-normal
length (each an enter, a dwell event at 10 minutes when it lasts that long,
and an exit), in time order as a log holds them; 8 campaigns with 10%
holdouts and two variants, each converting at its own 100-store set within
1-7 days, some with a minimum dwell. The exposures and events are numpy
columns of codes, as a service keeps them; the time covers everything the
report does (visits, conversions with last-exposure attribution, the lift
rows with their intervals, the foot traffic per store and day), on one core.

The peer, in the same run: the textbook numpy join for the single hardest
step alone: sort the visits by (device, time) with ``np.lexsort`` and
``np.searchsorted`` each exposure's first later visit of its device (no
places, no dwell, no attribution, no visits built from events). The target is
under 10 s at full size.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from benchmarks._common import describe_machine, table, write_results

DAY = 86400.0


def make_data(n_exposures: int, n_events: int, n_devices: int, n_fences: int = 2000, seed: int = 11) -> dict[str, Any]:
    from campaigns import _kernels as K
    from campaigns.conversions import Events, Exposures, Spec

    rng = np.random.default_rng(seed)
    t0 = 1_773_000_000.0
    n_visits = int(n_events / 2.5)  # enter + exit, and a dwell event for about half of them
    start = np.sort(rng.uniform(t0, t0 + 30 * DAY, n_visits))
    length = np.minimum(rng.lognormal(np.log(900), 1.0, n_visits), 4 * 3600.0)
    device = rng.integers(0, n_devices, n_visits)
    fence = rng.integers(0, n_fences, n_visits)
    has_dwell = length > 600
    kinds = [np.full(n_visits, K.ENTER, np.int8), np.full(int(has_dwell.sum()), K.DWELL, np.int8),
             np.full(n_visits, K.EXIT, np.int8)]
    ts = np.concatenate([start, start[has_dwell] + 600, start + length])
    order = np.argsort(ts, kind="stable")[:n_events]  # a log is in time order
    events = Events(
        np.concatenate(kinds)[order],
        np.concatenate([device, device[has_dwell], device])[order],
        np.concatenate([fence, fence[has_dwell], fence])[order],
        ts[order],
        np.concatenate([np.zeros(n_visits), np.full(int(has_dwell.sum()), 600.0), length])[order],
        np.full(len(order), np.nan),
    )
    n_campaigns = 8
    names = [f"f{i:04d}" for i in range(n_fences)]
    specs = [Spec(f"c{c}", places=frozenset(names[i] for i in rng.choice(n_fences, 100, replace=False)),
                  within_s=float(1 + c % 7) * DAY, min_dwell_s=120.0 * (c % 2), holdout=0.1, variants=("a", "b"))
             for c in range(n_campaigns)]
    arm = np.where(rng.random(n_exposures) < 0.1, 0, 2 + rng.integers(0, 2, n_exposures))
    exposures = Exposures(rng.integers(0, n_campaigns, n_exposures), arm, rng.integers(0, n_devices, n_exposures),
                          rng.integers(0, n_fences, n_exposures), rng.uniform(t0, t0 + 30 * DAY, n_exposures))
    return {"exposures": exposures, "events": events, "specs": specs, "fences": names,
            "arms": ["holdout", "offer", "a", "b"], "devices": n_devices}


def run_report(d: dict[str, Any]) -> Any:
    from zoneinfo import ZoneInfo

    from campaigns.report import lift_report

    return lift_report(d["exposures"], d["events"], d["specs"], d["fences"], d["arms"],
                       timezone=ZoneInfo("Europe/Paris"), n_devices=d["devices"])


def run_peer(d: dict[str, Any]) -> int:
    """First later visit of the same device, by sorting and searchsorted: the join alone."""
    from campaigns import _kernels as K

    ev, ex = d["events"], d["exposures"]
    enter = ev.kind == K.ENTER
    v_dev, v_ts = ev.device[enter], ev.ts[enter]
    order = np.lexsort((v_ts, v_dev))
    v_dev, v_ts = v_dev[order], v_ts[order]
    # (device, time) as one sortable float key per row: device + time within the month
    t0 = float(v_ts.min()) if len(v_ts) else 0.0
    span = 64 * DAY
    key = v_dev * span + (v_ts - t0)
    i = np.searchsorted(key, ex.device * span + (ex.ts - t0), side="right")
    i = np.minimum(i, len(key) - 1)
    found = (v_dev[i] == ex.device) & (v_ts[i] > ex.ts) & (v_ts[i] <= ex.ts + 7 * DAY)
    return int(found.sum())


def one_core() -> str:
    """Pin this process to one CPU and numba to one thread, so the report and its peer run on one core."""
    import numba

    numba.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}, numba threads 1"
    return "numba threads 1"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks report", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1M exposures, 5M events (about a tenth)")
    p.add_argument("--decisions", type=int, default=10_000_000, help="exposures (default 10M)")
    p.add_argument("--events", type=int, default=50_000_000, help="presence events (default 50M)")
    p.add_argument("--devices", type=int, default=1_000_000)
    args = p.parse_args(argv)
    if args.quick:
        args.decisions, args.events, args.devices = 1_000_000, 5_000_000, 200_000
    cores = one_core()
    print(f"# report on {describe_machine()}; measured on one core ({cores})", flush=True)
    t = time.perf_counter()
    data = make_data(args.decisions, args.events, args.devices)
    print(f"data: {args.decisions:,} exposures, {args.events:,} events, {args.devices:,} devices "
          f"(made in {time.perf_counter() - t:.1f} s)", flush=True)
    small = make_data(10_000, 50_000, 1000, seed=1)
    run_report(small)  # compiled kernels loaded (numba cache) before timing
    t, c = time.perf_counter(), time.process_time()
    rep = run_report(data)
    report_s, report_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    peer_found = run_peer(data)
    peer_s, peer_cpu = time.perf_counter() - t, time.process_time() - c
    converted = sum(r["converted"] + r["holdout_converted"] for r in rep.lift if r["level"] == "campaign")
    rows = [
        ["lift_report (visits, conversions, attribution, lift, traffic)", f"{report_s:.2f}", f"{report_cpu:.2f}", "1.00"],
        ["peer: np.lexsort + searchsorted join alone", f"{peer_s:.2f}", f"{peer_cpu:.2f}", f"{peer_cpu / report_cpu:.2f}"],
    ]
    print(table(["", "wall s", "CPU s", "CPU x lift_report"], rows))
    full = args.decisions >= 10_000_000 and args.events >= 50_000_000
    print(f"{rep.visits:,} visits, {converted:,} conversions, {len(rep.lift)} lift rows, {len(rep.traffic)} store-days"
          + (f"; target < 10 s at 10M/50M: {'met' if report_s < 10 else 'NOT met'} (wall {report_s:.1f} s, "
             f"CPU {report_cpu:.1f} s; the CPU time is what one core spends, the wall time also waits for "
             "whatever else runs)" if full else " (quick size: the 10 s target is for 10M/50M)"))
    write_results("report", {"exposures": args.decisions, "events": args.events, "devices": args.devices,
                             "report_s": report_s, "report_cpu_s": report_cpu, "peer_s": peer_s,
                             "peer_cpu_s": peer_cpu, "peer_found": peer_found,
                             "visits": rep.visits, "conversions": converted})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
