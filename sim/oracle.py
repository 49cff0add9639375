"""The oracle: the best precision any rule could reach on the same pings, from the true noise model.

The oracle is a likelihood-ratio test that knows what the engine cannot:

- the real geometry (each store's rectangle) and the device's true GPS quality
  (its outdoor error per axis, ``sigma_m * quality / 1.515``; indoors times
  ``indoor_factor``);
- how the phone reports its accuracy (log-normal around the true 68 % radius,
  ``indoor_accuracy_bias`` indoors) and its speed (the true speed plus Gaussian
  noise, clipped at 0);
- how strongly consecutive errors are correlated (``correlation_s``).

For a store ``S``, each fix ``z`` gets the log-likelihood ratio of *inside S*
(position uniform over ``S``, indoor error and reporting) against the mixture of
*inside a neighbouring store* (indoor) and *on the 30 m ring around S* (outdoor;
a shop's ring is its mall's corridor, indoor): geometry, reported accuracy and
speed. Geometric log-likelihoods of consecutive fixes are tempered by
``(1 - rho) / (1 + rho)`` with
``rho = exp(-dt / correlation_s)`` (an AR(1) error carries that much new
information). An *episode* (a device near a store for a while) scores the
CUSUM statistic of these ratios (the best sum over any stretch of its fixes)
over its first ``window_s`` seconds, so a threshold on the score is a causal,
sequential enter rule with that much latency at most.

Episodes: every true visit is a positive; every walk-by, drive-by, parked car
and visit of a store within 30 m (not the mall around a shop, nor a shop of
that mall) is a negative for that store. Sweeping the threshold gives, for each
recall, the best precision; :func:`compare` sets it beside the engine's own
curve (its enters swept over ``min_probability``) per store size class.

Beacons are left out of the oracle: it bounds what GPS alone can tell, which is
what decides the GPS-only stores (stores with beacons reach the targets anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.runner import Simulation

R68 = 1.515
RING_M = 30.0


def ndtr(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF (Abramowitz and Stegun 7.1.26 for erf: error below 1.5e-7)."""
    z = np.abs(np.asarray(x, np.float64)) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _box_mass(x: np.ndarray, y: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
              s: np.ndarray) -> np.ndarray:
    """The probability mass of a Gaussian at (x, y) with sd ``s`` per axis inside each box."""
    return (ndtr((x1 - x) / s) - ndtr((x0 - x) / s)) * (ndtr((y1 - y) / s) - ndtr((y0 - y) / s))


def _speed_lik(v: np.ndarray, mus: Sequence[float], weights: Sequence[float], sd: float) -> np.ndarray:
    out = np.zeros(len(v))
    zero = v <= 0.0
    for mu, w in zip(mus, weights, strict=True):
        pdf = np.exp(-0.5 * ((v - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
        out += w * np.where(zero, ndtr(np.asarray((0.0 - mu) / sd)), pdf)
    return np.maximum(out, 1e-12)


def _neighbours(sim: Simulation) -> np.ndarray:
    """Per store, the stores within ``RING_M`` of it (not the mall around a shop, nor a shop of it), -1 padded."""
    w = sim.world
    n = w.n_stores
    gap_x = np.maximum(0, np.maximum(w.x0[:, None] - w.x1[None, :], w.x0[None, :] - w.x1[:, None]))
    gap_y = np.maximum(0, np.maximum(w.y0[:, None] - w.y1[None, :], w.y0[None, :] - w.y1[:, None]))
    near = (np.hypot(gap_x, gap_y) <= RING_M) & ~np.eye(n, dtype=bool)
    near &= ~((w.mall[:, None] == np.arange(n)[None, :]) | (w.mall[None, :] == np.arange(n)[:, None]))
    k = max(int(near.sum(axis=1).max(initial=0)), 1)
    out = np.full((n, k), -1, np.int64)
    for i in range(n):  # once per world, stores only
        nb = np.flatnonzero(near[i])
        out[i, : len(nb)] = nb
    return out


def fix_llr(sim: Simulation, dev: np.ndarray, store: np.ndarray, idx: np.ndarray,
            temper: np.ndarray) -> np.ndarray:
    """Per (fix ``idx``, store) pair: the log-likelihood ratio of *inside the store* against its alternatives.

    Alternatives: inside one of its neighbours (indoor error and reporting) or on the ring
    around it (outdoor; indoor for a shop's mall corridor). Geometric log-likelihoods are
    tempered by ``temper`` (the share of new information in a correlated fix).
    """
    sc, w, p = sim.scenario, sim.world, sim.pings
    g = sc.gps
    x, y = w.frame.to_xy(p.lon[idx], p.lat[idx])
    sig = sim.truth.device_sigma_m[dev] / R68
    s_in, s_out = sig * g.indoor_factor, sig
    la = np.log(p.accuracy_m[idx])
    sd = g.accuracy_noise
    rep_in = -0.5 * ((la - np.log(R68 * s_in * g.indoor_accuracy_bias)) / sd) ** 2
    rep_out = -0.5 * ((la - np.log(R68 * s_out)) / sd) ** 2
    walk = float(np.mean(sc.mobility.walk_speed_mps))
    drive = float(np.mean(sc.mobility.drive_speed_mps))
    v = p.speed[idx]
    vs = g.speed_noise_mps
    rep_in = rep_in + np.log(_speed_lik(v, (0.0, 0.8), (0.6, 0.4), vs))
    rep_out = rep_out + np.log(_speed_lik(v, (walk, 0.0, drive / 2, drive), (0.55, 0.25, 0.1, 0.1), vs))

    def box_loglik(st: np.ndarray, s: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = w.x0[st], w.y0[st], w.x1[st], w.y1[st]
        return np.log(np.maximum(_box_mass(x, y, x0, y0, x1, y1, s), 1e-300) / ((x1 - x0) * (y1 - y0)))

    own = temper * box_loglik(store, s_in) + rep_in
    x0, y0, x1, y1 = w.x0[store], w.y0[store], w.x1[store], w.y1[store]
    ring_area = (x1 - x0 + 2 * RING_M) * (y1 - y0 + 2 * RING_M) - (x1 - x0) * (y1 - y0)
    shop = w.mall[store] >= 0
    s_ring = np.where(shop, s_in, s_out)
    ring = (_box_mass(x, y, x0 - RING_M, y0 - RING_M, x1 + RING_M, y1 + RING_M, s_ring)
            - _box_mass(x, y, x0, y0, x1, y1, s_ring))
    alts = [temper * np.log(np.maximum(ring, 1e-300) / ring_area) + np.where(shop, rep_in, rep_out)]
    nb = _neighbours(sim)[store]
    for j in range(nb.shape[1]):
        has = nb[:, j] >= 0
        alts.append(np.where(has, temper * box_loglik(np.maximum(nb[:, j], 0), s_in) + rep_in, -np.inf))
    a = np.stack(alts)
    top = a.max(axis=0)
    mix = top + np.log(np.sum(np.exp(a - top), axis=0) / (1 + (nb >= 0).sum(axis=1)))
    return np.clip(own - mix, -30, 30)


def episodes(sim: Simulation) -> dict[str, np.ndarray]:
    """Positive (true visits) and negative episodes, as columns ``device, store, start, end, positive``."""
    t, _w = sim.truth, sim.world
    v = t.visits
    parts = [(v.device, v.store, v.start, v.end, np.ones(len(v), bool))]
    wd = t.walk_drive
    parts.append((wd.device, wd.store, wd.start, wd.end, np.zeros(len(wd), bool)))
    pk = t.parked
    parts.append((pk.device, pk.store, pk.start, pk.end, np.zeros(len(pk), bool)))
    # neighbours: a visit of one store is a negative for every store within the ring of it
    nb = _neighbours(sim)[v.store]
    vi, j = np.nonzero(nb >= 0)
    parts.append((v.device[vi], nb[vi, j], v.start[vi], v.end[vi], np.zeros(len(vi), bool)))
    cols = [np.concatenate([p[k] for p in parts]) for k in range(5)]
    return dict(zip(("device", "store", "start", "end", "positive"), cols, strict=True))


def _running(sim: Simulation, window_s: float, lead_s: float) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray,
                                                                        np.ndarray]:
    """Every episode's fixes in its first ``window_s``: the episode of each fix, its time (seconds from the
    start of the day) and the CUSUM statistic after it (the best running sum of ratios ending there)."""
    ep = episodes(sim)
    p = sim.pings
    start_ts = sim.scenario.start_ts
    order = np.lexsort((p.ts, p.device))
    key = p.device[order].astype(np.float64) * 1e6 + (p.ts[order] - start_ts)
    lo = np.searchsorted(key, ep["device"] * 1e6 + ep["start"] - lead_s, side="left")
    hi = np.searchsorted(key, ep["device"] * 1e6 + np.minimum(ep["end"], ep["start"] + window_s), side="right")
    counts = np.maximum(hi - lo, 0)
    e_of = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    pos = lo[e_of] + (np.arange(len(e_of)) - first)
    idx = order[pos]
    ts = p.ts[idx]
    dt = np.diff(ts, prepend=-np.inf)
    new_ep = np.ones(len(e_of), bool)
    new_ep[1:] = e_of[1:] != e_of[:-1]
    rho = np.where(new_ep, 0.0, np.exp(-np.maximum(dt, 0.0) / sim.scenario.gps.correlation_s))
    llr = fix_llr(sim, ep["device"][e_of], ep["store"][e_of], idx, (1 - rho) / (1 + rho))
    # running sums per episode
    csum = np.cumsum(llr)
    base = np.repeat(csum[np.cumsum(counts) - counts] - llr[np.cumsum(counts) - counts], counts) if len(llr) else llr
    run = csum - base
    # CUSUM: the best sum over any stretch of fixes (a running sum reset at 0 when it goes negative)
    big = 2.0 * (np.max(np.abs(run)) + 1.0) if len(run) else 1.0
    low = np.minimum.accumulate(run - e_of * big) + e_of * big
    stat = run - np.minimum(low, 0.0)
    stat = np.where(stat == 0.0, run, stat)  # an episode that never rises keeps its (negative) best sum
    return ep, e_of, ts - start_ts, stat


def scores(sim: Simulation, *, window_s: float = 300.0, lead_s: float = 0.0) -> dict[str, np.ndarray]:
    """Every episode's oracle score: the highest running sum of its fixes' ratios in its first ``window_s``."""
    ep, e_of, _t, stat = _running(sim, window_s, lead_s)
    best = np.full(len(ep["start"]), -np.inf)
    np.maximum.at(best, e_of, stat)
    return {**ep, "score": best}


def latency_at_precision(sim: Simulation, precision: dict[str, float | None], *,
                         window_s: float = 1800.0) -> dict[str, Any]:
    """Per size class: the oracle's sequential rule (enter when the CUSUM first reaches a threshold) at the
    lowest threshold whose precision is at least ``precision[cls]`` (the engine's), and the enter latency
    of the true visits it finds (the first fix at the threshold, from the door crossing), with its recall.

    The oracle sees each episode's first ``window_s`` seconds (long enough for the visits the engine
    enters late), GPS only, with the true noise model: where even it needs more than 180 s for 90 % of
    the visits it finds at the engine's precision, that part of the engine's p90 is physics, not the
    filter. Not a strict bound (see the module docstring)."""
    ep, e_of, t, stat = _running(sim, window_s, 0.0)
    best = np.full(len(ep["start"]), -np.inf)
    np.maximum.at(best, e_of, stat)
    size = sim.truth.size_class
    out: dict[str, Any] = {"window_s": window_s}
    for cls, target in precision.items():
        m = size[ep["store"]] == cls
        n_pos = int(np.sum(ep["positive"] & m))
        if target is None or n_pos == 0:
            continue
        order = np.argsort(-best[m], kind="stable")
        s_sorted, y = best[m][order], ep["positive"][m][order]
        tp = np.cumsum(y)
        prec = tp / np.arange(1, len(y) + 1)
        last = np.ones(len(s_sorted), bool)
        last[:-1] = s_sorted[1:] != s_sorted[:-1]
        ok = np.flatnonzero(last & np.isfinite(s_sorted) & (prec >= float(target) - 1e-12))
        if len(ok) == 0:
            out[cls] = {"precision": None, "recall": 0.0, "enter_latency_s": {"median": None, "p90": None}}
            continue
        k = int(ok[-1])  # the lowest threshold that keeps the precision: the most visits found
        h = float(s_sorted[k])
        hit = ep["positive"][e_of] & (size[ep["store"]][e_of] == cls) & (stat >= h)
        first_t = np.full(len(ep["start"]), np.inf)
        np.minimum.at(first_t, e_of[hit], t[hit])
        found = np.isfinite(first_t)
        lat = (first_t - ep["start"])[found]
        out[cls] = {"precision": round(float(prec[k]), 4), "recall": round(float(tp[k] / n_pos), 4),
                    "threshold": round(h, 3),
                    "enter_latency_s": {"median": round(float(np.median(lat)), 1) if len(lat) else None,
                                        "p90": round(float(np.percentile(lat, 90)), 1) if len(lat) else None}}
    return out


def pr_curve(score: np.ndarray, positive: np.ndarray, n_positive: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold (highest first)."""
    order = np.argsort(-score, kind="stable")
    s, y = score[order], positive[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(y) + 1)
    last = np.ones(len(s), bool)
    last[:-1] = s[1:] != s[:-1]
    ok = last & np.isfinite(s)
    return tp[ok] / k[ok], tp[ok] / max(n_positive, 1)


def best_precision_at(prec: np.ndarray, rec: np.ndarray, recall: float) -> float | None:
    """The best precision at a recall of at least ``recall`` (``None`` when never reached)."""
    ok = rec >= recall - 1e-12
    return round(float(prec[ok].max()), 4) if ok.any() else None


def oracle_metrics(sim: Simulation, *, window_s: float = 300.0, recalls: Sequence[float] = (0.8, 0.9, 0.95, 0.97),
                   engine_recall: dict[str, float | None] | None = None) -> dict[str, Any]:
    """The oracle's best precision at given recalls (and at the engine's), overall and per store size class."""
    sc = scores(sim, window_s=window_s)
    size = sim.truth.size_class
    out: dict[str, Any] = {"window_s": window_s, "curves": {}}
    for cls in ["all", *sorted(set(size.tolist()))]:
        m = np.ones(len(sc["store"]), bool) if cls == "all" else size[sc["store"]] == cls
        n_pos = int(np.sum(sc["positive"] & m))
        if n_pos == 0:
            continue
        prec, rec = pr_curve(sc["score"][m], sc["positive"][m], n_pos)
        row: dict[str, Any] = {"visits": n_pos, "negative_episodes": int(np.sum(~sc["positive"] & m))}
        for r in recalls:
            row[f"precision_at_recall_{r:g}"] = best_precision_at(prec, rec, r)
        if engine_recall is not None and engine_recall.get(cls) is not None:
            row["precision_at_engine_recall"] = best_precision_at(prec, rec, float(engine_recall[cls] or 0.0))
        out[cls] = row
        keep: np.ndarray = (np.unique(np.linspace(0, len(prec) - 1, min(len(prec), 200)).astype(int)) if len(prec)
                            else np.zeros(0, int))
        out["curves"][cls] = {"precision": prec[keep].round(4).tolist(), "recall": rec[keep].round(4).tolist()}
    return out


def plot_pr(path: Any, engine_pr: dict[str, Any], oracle: dict[str, Any], classes: Sequence[str]) -> bool:
    """Precision-recall: the engine (enters swept over ``min_probability``) against the oracle, per size class.

    Returns whether there was anything to plot (a class with visits)."""
    classes = [c for c in classes if c in oracle["curves"]]
    if not classes:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(classes))
    rows = (len(classes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, cls in zip(axes.ravel(), classes, strict=False):
        c = oracle["curves"][cls]
        ax.plot(c["recall"], c["precision"], color="black", label="oracle (true noise model, GPS only)")
        pr = [(r, q) for r, q in zip(engine_pr.get(f"{cls}_recall", []), engine_pr.get(f"{cls}_precision", []),
                                      strict=True) if r is not None and q is not None]
        if pr:
            r, q = zip(*pr, strict=True)
            label = "engine (enter_probability swept)" if len(r) < 20 else "engine (min_probability swept)"
            ax.plot(r, q, color="tab:blue", marker="o", label=label)
        ax.set_title(cls)
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(0.5, 1.0)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


__all__ = ["best_precision_at", "episodes", "fix_llr", "latency_at_precision", "ndtr", "oracle_metrics", "plot_pr", "pr_curve", "scores"]
