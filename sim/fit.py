"""Fit the visit-probability model (:class:`proximity.visit.VisitModel`) on simulated training seeds.

``python -m sim.fit --seeds 101,102,103`` prints a ``VisitModel(...)`` to paste
into :mod:`proximity.visit` and the enter threshold measured for it. The seeds
must differ from the ones the figures are quoted on (1-5).

1. **Likelihood tables** (from the pings and the ground truth): every (fix, store)
   pair the fence index returns is labelled inside / not inside (pairs of a device
   inside another store left out: the filter's competition counts those); one logistic
   regression on geofence confidence x accuracy bucket, speed bin and the indoor
   pattern gives ``gps_llr``, ``speed_llr`` and ``indoor_weight`` (relative to the
   pairs' log-odds, the prior); ``unpaired_llr`` compares how often a device's next
   fix is not paired with the store when it is inside and when it is not (a
   ratio of consecutive fixes, so it already speaks of one fix given the one
   before). The geometric ratios of single fixes (``gps_llr``) are then tempered: GPS error
   drifts, so a fix repeats much of what the one before it said, and the filter
   sums fixes as if they were independent. An AR(1) error with correlation time
   ``c`` (estimated from the true errors of consecutive fixes) carries
   ``(1 - rho) / (1 + rho)`` of new information per fix, ``rho = exp(-step / c)``
   at the usual fix interval near stores (``step``). The reported accuracy's and
   speed's noise is fresh at every fix: those ratios are not tempered. So the indoor
   pattern enters the regression centred (``indoor_center``: where its ratio alone is
   zero), or the cells would carry its mean and their tempering would leave most of it
   to every fix, outdoor ones too. ``--indoor-weight`` and ``--indoor-center`` fix the
   pattern's weight and centre (the other ratios fitted given them): the regression
   weighs each fix alone, the filter sums a device's fixes, so the shipped pair is chosen
   on the training seeds' runs.
2. **Calibration map** (isotonic regression): the engine runs the training seeds
   with the tables; the isotonic regression of each store event's truth (see
   :func:`sim.calibration.event_labels`) on its log-odds, sampled at 14 quantiles,
   becomes ``calibration`` (composed with the map the run used; twice, since the
   enter threshold changes which events exist).
3. **Enter threshold**: the lowest ``min_probability`` at which the training
   seeds' enters reach the precision target, pooled.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np

from sim.scenario import Scenario, load_scenario

R68 = 1.515


def _logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of a 1-D logistic regression."""
    w = _logistic_nd(np.stack([x, np.ones(len(x))], axis=1), y, ridge=1.0)
    return float(w[0]), float(w[1])


def _log_ratio(n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
    n_in = n_in.astype(np.float64) + 1.0
    n_out = n_out.astype(np.float64) + 1.0
    return np.log(n_in / n_in.sum()) - np.log(n_out / n_out.sum())


def pair_table(sc: Scenario) -> dict[str, np.ndarray]:
    """Every (fix, store) pair of a simulated day with its features and its truth."""
    import geofence
    from proximity.visit import ACCURACY_EDGES, VisitModel
    from sim.runner import simulate

    sim = simulate(sc)
    w, p, seg = sim.world, sim.pings, sim.population.segments
    index = geofence.FenceIndex(geofence.load_geojson(w.to_geojson()))
    pos = np.asarray([index.position(f) for f in w.ids], np.int64)
    to_store = np.full(len(w.ids), -1, np.int64)
    to_store[pos] = np.arange(len(w.ids))
    order = np.lexsort((p.ts, p.device))  # per device in time order
    p = p.take(order)
    m = index.match(p.lon, p.lat, accuracy_m=p.accuracy_m)
    pt, st, conf = np.asarray(m.point, np.int64), to_store[np.asarray(m.fence, np.int64)], np.asarray(m.confidence)
    inside = (seg.place[p.segment[pt]] == st) | (seg.outer[p.segment[pt]] == st)
    radius = np.sqrt((w.x1 - w.x0) * (w.y1 - w.y0) / np.pi)[st]
    bucket = np.searchsorted(np.asarray(ACCURACY_EDGES), p.accuracy_m[pt] / np.maximum(radius, 1.0), side="right")
    # the indoor pattern: log accuracy above the device's baseline (fast down, slow up), before this fix
    la = np.log(np.maximum(p.accuracy_m, 1.0))
    down, up = VisitModel().baseline_rates
    base = np.empty(len(p))
    dev = p.device
    b = np.nan
    for i in range(len(p)):  # offline fit, not a hot path
        if i == 0 or dev[i] != dev[i - 1]:
            b = np.nan
        base[i] = b
        b = la[i] if b != b else b + (down if la[i] < b else up) * (la[i] - b)
    indoor = np.nan_to_num(la - base, nan=0.0)
    # fixes not paired with a store the device's previous fix was paired with
    nxt = pt + 1
    valid = (nxt < len(p)) & (dev[np.minimum(nxt, len(p) - 1)] == dev[pt])
    paired_next = np.isin(np.where(valid, nxt, -1) * 10_000 + st, pt * 10_000 + st)
    cand = np.flatnonzero(valid & ~paired_next)
    nseg = p.segment[nxt[cand]]
    unpaired_in = (seg.place[nseg] == st[cand]) | (seg.outer[nseg] == st[cand])
    # in-store pairs that stay paired, for the other side of the ratio
    stay = np.flatnonzero(valid & paired_next)
    sseg = p.segment[nxt[stay]]
    stay_in = (seg.place[sseg] == st[stay]) | (seg.outer[sseg] == st[stay])
    # a device inside another store: the competition between places accounts for it (see fit_tables)
    other = (seg.place[p.segment[pt]] >= 0) & ~inside
    # the GPS error's correlation time, from consecutive fixes 20-40 s apart (their true errors, east and north)
    tx, ty = w.frame.to_xy(p.lon, p.lat)
    ex, ey = tx - p.true_x, ty - p.true_y
    dt = np.diff(p.ts)
    pair = (dev[1:] == dev[:-1]) & (dt >= 20.0) & (dt <= 40.0)
    rho = (np.sum(ex[1:][pair] * ex[:-1][pair]) + np.sum(ey[1:][pair] * ey[:-1][pair])) / max(
        float(np.sum(ex[:-1][pair] ** 2) + np.sum(ey[:-1][pair] ** 2)), 1e-9)
    corr_s = np.full(len(pt), -float(np.mean(dt[pair])) / np.log(min(max(rho, 1e-6), 1 - 1e-6)))
    # the fix interval near stores: each paired fix's time since the device's fix before
    prev = np.maximum(pt - 1, 0)
    since = np.where((pt > 0) & (dev[prev] == dev[pt]), p.ts[pt] - p.ts[prev], np.nan)
    step = np.full(len(pt), float(np.nanmedian(since)) if np.isfinite(since).any() else 30.0)
    return {"conf": conf, "bucket": bucket, "speed": p.speed[pt], "indoor": indoor[pt], "inside": inside,
            "other": other, "unpaired_in": unpaired_in, "stay_in": stay_in, "correlation_s": corr_s, "step_s": step}


def _logistic_nd(f: np.ndarray, y: np.ndarray, ridge: float = 1.0, iters: int = 40,
                 offset: np.ndarray | float = 0.0) -> np.ndarray:
    """Weights of a logistic regression of ``y`` on the columns of ``f`` (Newton's method, ridge penalty),
    ``offset`` added to every row's score with no weight of its own (a term whose weight is fixed)."""
    w = np.zeros(f.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(f @ w + offset, -30, 30)))
        g = f.T @ (p - y) + ridge * w
        h = (f * (p * (1 - p))[:, None]).T @ f + ridge * np.eye(f.shape[1])
        step = np.linalg.solve(h, g)
        step *= min(1.0, 2.0 / max(float(np.max(np.abs(step))), 1e-12))  # damped: at most 2 per weight
        w -= step
        if np.max(np.abs(step)) < 1e-7:
            break
    return w


def isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: the non-decreasing fit of ``y`` on ``x`` (returned at the sorted ``x``)."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order].astype(np.float64)
    vals: list[float] = []
    wts: list[float] = []
    for v in ys:  # offline fit, not a hot path
        vals.append(float(v))
        wts.append(1.0)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            wts[-2] = w
            vals.pop()
            wts.pop()
    return xs, np.repeat(vals, np.asarray(wts, np.int64))


def calibration_knots(x: np.ndarray, y: np.ndarray, k: int = 14) -> tuple[tuple[float, float], ...]:
    """Knots (score, log-odds) of the isotonic regression of ``y`` on ``x``, at ``k`` quantiles of ``x``."""
    xs, fit = isotonic(x, y)
    qx = np.unique(np.round(np.quantile(xs, np.linspace(0.0, 1.0, k)), 3))
    qy = np.interp(qx, xs, fit)
    ly = np.log(np.clip(qy, 1e-3, 1 - 1e-3) / (1 - np.clip(qy, 1e-3, 1 - 1e-3)))
    ly = np.maximum.accumulate(ly) + 1e-3 * np.arange(len(ly))  # strictly rising: a threshold names one score
    return tuple((float(a), round(float(b), 3)) for a, b in zip(qx, ly, strict=True))


def compose(old: tuple[tuple[float, float], ...], new: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    """``new`` after ``old``, sampled at ``old``'s knots."""
    nx, ny = np.array([k[0] for k in new]), np.array([k[1] for k in new])
    return tuple((x, round(float(np.interp(y, nx, ny)), 3)) for x, y in old)


def fit_tables(tables: list[dict[str, np.ndarray]], indoor_weight: float | None = None,
               indoor_center: float | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """One logistic regression over the (fix, store) pairs: geometry x accuracy, speed, indoor pattern.

    With ``indoor_weight`` (and ``indoor_center``), the indoor pattern's weight (and centre) are those (an
    offset of the regression) and the other ratios are fitted given them: the pairs' regression weighs each
    fix alone, while the filter sums a device's fixes, so what serves the filter best is chosen on the
    training seeds' runs.

    The pairs of a device inside another store are left out: the filter's competition between
    places already charges a store for the device's evidence of being in the one next door,
    and counting them here too taught the tables that an indoor fix says little (they are
    indoor as well), which is what let a car at the kerb (outdoor fixes) pass for a shopper.
    Each ratio of ``gps_llr`` is that of one fix alone; they are tempered by the share of new
    information in a fix (see the module docstring), the
    filter summing fixes as if independent.
    """
    corr_s = float(np.mean([x["correlation_s"][0] for x in tables if len(x["correlation_s"])]))
    step_s = float(np.mean([x["step_s"][0] for x in tables if len(x["step_s"])]))
    rho = float(np.exp(-step_s / corr_s))
    temper = (1.0 - rho) / (1.0 + rho)
    t = {k: np.concatenate([x[k][~x["other"]] for x in tables]) for k in tables[0] if k not in ("unpaired_in", "stay_in")}
    t["unpaired_in"] = np.concatenate([x["unpaired_in"] for x in tables])
    t["stay_in"] = np.concatenate([x["stay_in"] for x in tables])
    y = t["inside"].astype(np.float64)
    n = len(y)
    geo = (np.clip(t["conf"], 1, 3) - 1) * 4 + t["bucket"]
    sbin = np.searchsorted(np.array([0.5, 1.2, 2.5]), t["speed"], side="right")
    f = np.zeros((n, 12 + 4 + 1))
    f[np.arange(n), geo] = 1.0
    # speed: only moving (walking pace and faster) is evidence; standing still is no evidence of a store
    # (a car waiting at the kerb stands still too, and such cars are few among the pairs)
    fast = sbin >= 2
    f[np.flatnonzero(fast), 12 + sbin[fast]] = 1.0
    from proximity.visit import VisitModel

    lo, hi = VisitModel().indoor_clip
    # the indoor pattern's centre: where its ratio alone says neither (a 1-D regression of the truth on it),
    # so the geometric cells do not carry its mean: they are tempered, the indoor pattern is not (its noise
    # is fresh at every fix), and a mean left in them would count for every outdoor fix as indoor evidence
    prior = float(np.log(y.mean() / (1 - y.mean())))
    x_in = np.clip(t["indoor"], lo, hi)
    slope, icpt = _logistic(x_in, y)
    center = indoor_center if indoor_center is not None else (prior - icpt) / slope if slope > 0 else 0.0
    f[:, 16] = x_in - center
    if indoor_weight is None:
        w = _logistic_nd(f, y)
    else:
        w = np.r_[_logistic_nd(f[:, :16], y, offset=indoor_weight * f[:, 16]), indoor_weight]
    speed = np.minimum(w[12:16], 0.0)
    speed[:2] = 0.0
    gps = (w[:12].reshape(3, 4) - prior) * temper
    gps[2] = np.maximum(gps[2], 0.0)
    # unpaired: of the devices inside the store, how often the next fix is unpaired vs for those outside
    f_in = t["unpaired_in"].sum() / max(t["unpaired_in"].sum() + t["stay_in"].sum(), 1)
    f_out = (~t["unpaired_in"]).sum() / max((~t["unpaired_in"]).sum() + (~t["stay_in"]).sum(), 1)
    return {"gps_llr": tuple(tuple(round(float(v), 3) for v in row) for row in gps),
            "speed_llr": tuple(round(float(v), 3) for v in speed),
            "indoor_weight": round(float(w[16]), 3),
            "indoor_center": round(float(center), 3),
            "unpaired_llr": round(float(np.log(max(f_in, 1e-4) / max(f_out, 1e-4))), 3),
            "prior_logodds": round(prior, 3)}, {"correlation_s": round(corr_s, 1), "step_s": step_s,
                                                "temper": round(temper, 3)}


def run_events(sc: Scenario) -> tuple[Any, Any]:
    from sim.metrics import EventColumns
    from sim.runner import simulate
    from sim.session import run

    sim = simulate(sc)
    result = run(sim, via="memory")
    cols = EventColumns.from_events(result.events, {d: i for i, d in enumerate(sim.population.device_ids)},
                                    {f: i for i, f in enumerate(sim.world.ids)}, sc.start_ts)
    return sim, cols


def main(argv: list[str] | None = None) -> int:
    from proximity.visit import VisitModel
    from sim.calibration import event_labels, precision_recall

    ap = argparse.ArgumentParser(prog="python -m sim.fit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="101,102,103")
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", type=float, default=0.95)
    ap.add_argument("--raw-exit", type=float, default=None,
                    help="with --raw-enter: unpaired fixes end a visit below this filter score")
    ap.add_argument("--tables-only", action="store_true", help="fit the likelihood tables only")
    ap.add_argument("--indoor-weight", type=float, default=None,
                    help="fix the indoor pattern's weight (nats per unit of log accuracy) and fit the other "
                         "ratios given it")
    ap.add_argument("--indoor-center", type=float, default=None,
                    help="fix the indoor pattern's centre (log accuracy above the baseline) instead of fitting it")
    ap.add_argument("--raw-enter", type=float, default=None,
                    help="fit the calibration with enters at this filter score (log-odds before the map); the "
                         "enter_probability to ship is the map's value there")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = load_scenario(None)
    over: dict[str, Any] = {}
    if args.devices:
        over["devices"] = args.devices
    scs = [base.with_overrides({**over, "seed": s}, source="fit") for s in seeds]
    if args.raw_enter is None:
        fitted, tempering = fit_tables([pair_table(sc) for sc in scs], indoor_weight=args.indoor_weight,
                                       indoor_center=args.indoor_center)
        print("tables:", fitted)
        print("geometric ratios tempered:", tempering)
        if args.tables_only:
            return 0
        model = dataclasses.replace(VisitModel(), **fitted, calibration=((-20.0, -20.0), (20.0, 20.0)))
        engine_over: dict[str, Any] = {}
    else:  # the shipped tables, an identity map, enters at the raw score: one round suffices
        model = dataclasses.replace(VisitModel(), calibration=((-20.0, -20.0), (20.0, 20.0)))
        engine_over = {"enter_probability": float(1 / (1 + np.exp(-args.raw_enter)))}
        if args.raw_exit is not None:
            engine_over["exit_probability"] = float(1 / (1 + np.exp(-args.raw_exit)))
        args.rounds = 1
    for rnd in range(args.rounds):
        xs, ys, runs = [], [], []
        for sc in scs:
            sc2 = dataclasses.replace(sc, engine={**dict(sc.engine), **engine_over, "model": model})
            sim, cols = run_events(sc2)
            mask, label = event_labels(sim.truth, cols, tolerance_s=sc.metrics.tolerance_s)
            p = np.clip(cols.probability[mask], 1e-6, 1 - 1e-6)
            xs.append(np.log(p / (1 - p)))
            ys.append(label[mask])
            runs.append((sim, cols))
        x, y = np.concatenate(xs), np.concatenate(ys).astype(np.float64)
        knots = calibration_knots(x, y)
        if rnd == 0:
            model = dataclasses.replace(model, calibration=knots)
        else:  # the events' log-odds already went through the map: compose
            model = dataclasses.replace(model, calibration=compose(model.calibration, knots))
        print(f"round {rnd}: calibration {model.calibration} on {len(x):,} events")
    if args.raw_enter is not None:
        kx = np.array([k[0] for k in model.calibration])
        ky = np.array([k[1] for k in model.calibration])
        y_e = float(np.interp(args.raw_enter, kx, ky))
        print(f"enter_probability for enters at score {args.raw_enter:g}: {1 / (1 + np.exp(-y_e)):.4f}")
        if args.raw_exit is not None:
            y_x = float(np.interp(args.raw_exit, kx, ky))
            print(f"exit_probability for exits below score {args.raw_exit:g}: {1 / (1 + np.exp(-y_x)):.4f}")
    thresholds = np.round(np.arange(0.3, 0.991, 0.01), 2)
    tp = np.zeros(len(thresholds))
    k = np.zeros(len(thresholds))
    nv = 0
    for sim, cols in runs:
        pr = precision_recall(sim.truth, cols, thresholds)
        nv += len(sim.truth.visits)
        prec = np.array([np.nan if v is None else v for v in pr["all_precision"]])
        rec = np.array(pr["all_recall"], dtype=float)
        tp += rec * len(sim.truth.visits)
        k += np.where(prec > 0, rec * len(sim.truth.visits) / np.where(prec > 0, prec, 1), 0)
    prec = tp / np.maximum(k, 1)
    rec = tp / max(nv, 1)
    for t, pi, ri in zip(thresholds, prec, rec, strict=True):
        if round(t * 100) % 5 == 0:
            print(f"  min_probability {t:.2f}: precision {pi:.3f} recall {ri:.3f}")
    print("model:", model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
