"""Conversion and lift reports: what the offers did, with a stated error.

:func:`lift_report` is the core, a function over arrays (exposures, presence
events) that the CLI calls on a backtest's output and a service can call on
its own logs. For each campaign, each variant and each store it counts the
exposures and their conversions (:mod:`campaigns.conversions`) and compares
the treated devices with the campaign's holdout:

- ``rate`` = converted / exposed;
- ``lift`` = rate(treated) - rate(holdout), with Newcombe's 95% interval for a
  difference of two proportions (from Wilson score intervals; it keeps its
  coverage with small counts and rates near 0 where the plain Wald interval
  does not);
- ``relative lift`` = rate(treated) / rate(holdout) - 1, with the Katz log
  interval of the risk ratio (none while either arm has no conversion);
- ``incremental visits`` = lift x treated exposures (and its interval);
- below ``min_exposed`` exposures in the treated group or in the holdout the
  row says "not enough data" instead of a lift.

Each exposure is one trial, but devices are what is assigned: a device exposed
several times (its caps decide how often) brings correlated trials. The
intervals use effective sample sizes, exposures / design effect, where the
design effect is the cluster-robust (by device) variance of each group's rate
over the binomial one (at least 1; 1 when every device is exposed once), so
they keep their coverage. A lift is significant when its interval excludes 0.

Foot-traffic KPIs per store and local day: visits, unique visitors, median
dwell (closed visits), and the repeat-visit rate (share of the day's visitors
who had visited that store before in the log, that day or earlier).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from campaigns import _kernels as K
from campaigns.conversions import Events, Exposures, Spec, match, visits_of
from campaigns.experiments import HOLDOUT

Z95 = 1.959963984540054
MIN_EXPOSED = 30
"""Default minimum of exposures in the treated group and in the holdout before a lift is given."""


def wilson(x: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``x`` successes out of ``n`` (NaN where ``n`` is 0)."""
    x = np.asarray(x, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        den = 1.0 + z * z / n
        mid = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return mid - half, mid + half


def diff_interval(x1: np.ndarray, n1: np.ndarray, x0: np.ndarray, n0: np.ndarray,
                  z: float = Z95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``p1 - p0`` and Newcombe's hybrid score interval (method 10)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p0 = np.asarray(x1, float) / n1, np.asarray(x0, float) / n0
    l1, u1 = wilson(x1, n1, z)
    l0, u0 = wilson(x0, n0, z)
    d = p1 - p0
    return d, d - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


def ratio_interval(x1: np.ndarray, n1: np.ndarray, x0: np.ndarray, n0: np.ndarray,
                   z: float = Z95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``p1 / p0 - 1`` and the Katz log interval (NaN while ``x1`` or ``x0`` is 0)."""
    x1, n1, x0, n0 = (np.asarray(a, np.float64) for a in (x1, n1, x0, n0))
    ok = (x1 > 0) & (x0 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_rr = np.log((x1 / n1) / (x0 / n0))
        se = np.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
        nan = np.full(len(x1), np.nan)
        return (np.where(ok, np.exp(log_rr) - 1, nan), np.where(ok, np.exp(log_rr - z * se) - 1, nan),
                np.where(ok, np.exp(log_rr + z * se) - 1, nan))


@dataclass
class Report:
    """Rows of lift (``level`` campaign | variant | store) and of foot traffic (store x day)."""

    lift: list[dict[str, Any]] = field(default_factory=list)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    min_exposed: int = MIN_EXPOSED
    attribution: str = "last"
    exposures: int = 0
    visits: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"min_exposed": self.min_exposed, "attribution": self.attribution, "exposures": self.exposures,
                "visits": self.visits, "lift": self.lift, "traffic": self.traffic}


def lift_report(exposures: Exposures, events: Events, specs: Sequence[Spec], fence_names: Sequence[str],
                arm_names: Sequence[str], *, attribution: str = "last", min_exposed: int = MIN_EXPOSED,
                timezone: ZoneInfo | None = None, n_devices: int | None = None) -> Report:
    """The report over arrays: ``exposures`` and store-level ``events`` in codes; ``specs`` (by campaign
    code), ``fence_names`` (by fence code) and ``arm_names`` (by arm code, one of them ``"holdout"``)
    name them. Days of the foot-traffic KPIs are local to ``timezone`` (UTC by default)."""
    n_dev = n_devices if n_devices is not None else int(max(
        (int(c.max()) + 1 for c in (events.device, exposures.device) if len(c)), default=0))
    visits = visits_of(events, n_dev)
    h = list(arm_names).index(HOLDOUT) if HOLDOUT in arm_names else -1
    m = match(exposures, visits, specs, fence_names, attribution=attribution, holdout_arm=h)
    report = Report(min_exposed=min_exposed, attribution=attribution, exposures=len(exposures), visits=len(visits))
    deff = design_effects(K.cluster_sums(m.rows, m.starts, m.row_visit, max(len(specs), 1)))
    report.lift = _lift_rows(exposures, m.visit >= 0, specs, fence_names, arm_names, min_exposed, deff)
    report.traffic = _traffic_rows(visits, fence_names, timezone or ZoneInfo("UTC"))
    return report


def design_effects(sums: np.ndarray) -> np.ndarray:
    """``deff[c, g]`` (g: 0 holdout, 1 treated): the cluster-robust variance of the conversion rate,
    devices being the clusters (the unit of assignment), over the binomial one: sum over devices of
    (x_i - p n_i)^2 / (N p (1 - p)); exactly 1 when every device is exposed once, at least 1."""
    n, x, k, s_nn, s_xn, s_xx = (sums[..., i] for i in range(6))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        deff = (s_xx - 2 * p * s_xn + p * p * s_nn) / (n * p * (1 - p))
    return np.where(np.isfinite(deff) & (k > 1) & (deff > 1.0 + 1e-9), deff, 1.0)


def _lift_rows(ex: Exposures, converted: np.ndarray, specs: Sequence[Spec], fence_names: Sequence[str],
               arm_names: Sequence[str], min_exposed: int, deff: np.ndarray | None = None) -> list[dict[str, Any]]:
    n_c, n_a = max(len(specs), 1), max(len(arm_names), 1)
    n_f = max(len(fence_names), int(ex.fence.max()) + 1 if len(ex) else 0, 1)
    cell = (np.asarray(ex.campaign, np.int64) * n_a + np.asarray(ex.arm, np.int64)) * n_f + np.asarray(ex.fence, np.int64)
    size = n_c * n_a * n_f
    exposed = np.bincount(cell, minlength=size).reshape(n_c, n_a, n_f)
    won = np.bincount(cell, weights=converted, minlength=size).astype(np.int64).reshape(n_c, n_a, n_f)
    return rows_from_counts(exposed, won, specs, fence_names, arm_names, min_exposed, deff)


def rows_from_counts(exposed: np.ndarray, won: np.ndarray, specs: Sequence[Spec], fence_names: Sequence[str],
                     arm_names: Sequence[str], min_exposed: int = MIN_EXPOSED,
                     deff: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The lift rows from counts: ``exposed[c, a, f]`` and ``won[c, a, f]`` (conversions) per campaign,
    arm and fence code. This is what a service answers from the counters it keeps. ``deff[c, g]``
    (design effects, g: 0 holdout, 1 treated) widens the intervals of a campaign whose devices were
    exposed several times; without it exposures count as independent."""
    deff = np.ones((max(len(specs), 1), 2)) if deff is None else deff
    h = list(arm_names).index(HOLDOUT) if HOLDOUT in arm_names else -1
    treated_arms = np.asarray([a for a in range(len(arm_names)) if a != h], np.int64)
    groups: list[tuple[int, str, str | None, str | None, int, int, int, int]] = []
    for c, spec in enumerate(specs):
        t_n = exposed[c][treated_arms].sum()
        if t_n == 0 and (h < 0 or exposed[c, h].sum() == 0):
            continue
        h_n = int(exposed[c, h].sum()) if h >= 0 else 0
        h_x = int(won[c, h].sum()) if h >= 0 else 0
        groups.append((c, "campaign", None, None, int(t_n), int(won[c][treated_arms].sum()), h_n, h_x))
        if spec.variants:
            for a in treated_arms:
                n = int(exposed[c, a].sum())
                if n:
                    groups.append((c, "variant", arm_names[a], None, n, int(won[c, a].sum()), h_n, h_x))
        t_exp, t_won = exposed[c][treated_arms].sum(axis=0), won[c][treated_arms].sum(axis=0)
        stores = np.flatnonzero(exposed[c].sum(axis=0))
        for f in sorted(stores.tolist(), key=lambda f: fence_names[f] if f < len(fence_names) else str(f)):
            hn = int(exposed[c, h, f]) if h >= 0 else 0
            hx = int(won[c, h, f]) if h >= 0 else 0
            name = fence_names[f] if f < len(fence_names) else str(f)
            groups.append((c, "store", None, name, int(t_exp[f]), int(t_won[f]), hn, hx))
    if not groups:
        return []
    n_t, x_t, n_h, x_h = (np.asarray([g[i] for g in groups], np.float64) for i in (4, 5, 6, 7))
    camp = np.asarray([g[0] for g in groups], np.int64)
    t_d, h_d = deff[camp, 1], deff[camp, 0]  # effective sample sizes: n / deff
    d, d_lo, d_hi = diff_interval(x_t / t_d, n_t / t_d, x_h / h_d, n_h / h_d)
    r, r_lo, r_hi = ratio_interval(x_t / t_d, n_t / t_d, x_h / h_d, n_h / h_d)
    rows = []
    for i, (c, level, variant, store, n, x, hn, hx) in enumerate(groups):
        spec = specs[c]
        row: dict[str, Any] = {
            "campaign_id": spec.campaign_id, "level": level, "variant": variant, "store": store,
            "exposed": n, "converted": x, "rate": _num(x / n) if n else None,
            "holdout_exposed": hn, "holdout_converted": hx, "holdout_rate": _num(hx / hn) if hn else None,
        }
        if spec.holdout <= 0 and hn == 0:
            row["status"] = "no holdout"
        elif n < min_exposed or hn < min_exposed:
            row["status"] = "not enough data"
        else:
            sig = bool(d_lo[i] > 0 or d_hi[i] < 0)
            row.update({
                "status": "significant" if sig else "not significant",
                "lift": _num(d[i]), "lift_ci": [_num(d_lo[i]), _num(d_hi[i])],
                "relative_lift": _num(r[i]), "relative_lift_ci": [_num(r_lo[i]), _num(r_hi[i])],
                "incremental_visits": _num(d[i] * n), "incremental_visits_ci": [_num(d_lo[i] * n), _num(d_hi[i] * n)],
            })
        if level == "campaign":
            row["design_effect"] = [_num(t_d[i]), _num(h_d[i])]
        rows.append(row)
    return rows


def _num(x: float) -> float | None:
    x = float(x)
    return None if x != x else round(x, 6)


def _day_starts(lo: float, hi: float, zone: ZoneInfo) -> np.ndarray:
    """Local midnights (epoch s) from the day of ``lo`` to the one after ``hi``."""
    day = dt.datetime.fromtimestamp(lo, zone).date()
    last = dt.datetime.fromtimestamp(hi, zone).date()
    out = []
    while day <= last + dt.timedelta(days=1):
        out.append(dt.datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())
        day += dt.timedelta(days=1)
    return np.asarray(out, np.float64)


def _traffic_rows(v: Any, fence_names: Sequence[str], zone: ZoneInfo) -> list[dict[str, Any]]:
    if not len(v):
        return []
    starts = _day_starts(float(v.ts.min()), float(v.ts.max()), zone)
    n_days = len(starts)
    n_f = max(len(fence_names), int(v.fence.max()) + 1)
    sd = np.empty(len(v), np.int64)
    K.store_days(v.ts, v.fence, starts, sd)  # fence x local day of each visit
    n_sd = n_f * n_days
    visits = np.bincount(sd, minlength=n_sd)
    unique, returning = K.store_day_visitors(v.starts, sd, v.repeat, n_sd)
    bounds = np.zeros(n_sd + 1, np.int64)
    dwells = K.closed_dwells_by_key(sd, v.closed, v.dwell_s, bounds)
    medians = K.group_medians(dwells.reshape(-1, 1), bounds)
    day_names = [dt.datetime.fromtimestamp(float(s), zone).date().isoformat() for s in starts]
    store_names = [fence_names[f] if f < len(fence_names) else str(f) for f in range(n_f)]
    keys = np.flatnonzero(visits)
    rows = [{
        "store": store_names[k // n_days], "day": day_names[k % n_days], "visits": n, "unique_visitors": u,
        "median_dwell_s": _num(med), "repeat_visit_rate": _num(r / u) if u else None,
    } for k, n, u, r, med in zip(keys.tolist(), visits[keys].tolist(), unique[keys].tolist(),
                                 returning[keys].tolist(), medians[keys].tolist(), strict=True)]
    rows.sort(key=lambda r: (r["store"], r["day"]))
    return rows


__all__ = ["MIN_EXPOSED", "Report", "diff_interval", "lift_report", "ratio_interval", "rows_from_counts", "wilson"]
