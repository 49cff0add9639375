"""The foot-traffic KPIs of the lift report (per store and local day) against a literal oracle."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import _kernels as K
from campaigns.conversions import Events, Exposures, Spec, visits_of
from campaigns.report import lift_report

STORES = ["s0", "s1", "s2"]
BASE = 1_774_700_000.0  # two days before the spring DST change of 2026 in Europe/Paris (a 23-hour day)


def oracle(visits: Any, zone: ZoneInfo) -> list[dict[str, Any]]:
    days: dict[tuple[str, str], dict[str, Any]] = {}
    for i in range(len(visits)):
        store = STORES[int(visits.fence[i])]
        day = dt.datetime.fromtimestamp(float(visits.ts[i]), zone).date().isoformat()
        cell = days.setdefault((store, day), {"n": 0, "devices": set(), "repeaters": set(), "dwells": []})
        cell["n"] += 1
        cell["devices"].add(int(visits.device[i]))
        if visits.repeat[i]:
            cell["repeaters"].add(int(visits.device[i]))
        if visits.closed[i]:
            cell["dwells"].append(float(visits.dwell_s[i]))
    return [{"store": s, "day": d, "visits": c["n"], "unique_visitors": len(c["devices"]),
             "median_dwell_s": round(statistics.median(c["dwells"]), 6) if c["dwells"] else None,
             "repeat_visit_rate": round(len(c["repeaters"]) / len(c["devices"]), 6)}
            for (s, d), c in sorted(days.items())]


@settings(max_examples=150)
@given(visits=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.floats(0, 4 * 86400.0),
                                 st.sampled_from([0.0, 60.0, 61.0, 900.0, 3600.0]), st.booleans()), max_size=40),
       zone=st.sampled_from(["Europe/Paris", "UTC"]), spread=st.sampled_from([1, 3001]))
def test_traffic_rows_match_the_oracle(visits: list[Any], zone: str, spread: int) -> None:
    """Visits, unique visitors, median dwell of the closed visits (even and odd counts), repeat-visit rate."""
    rows = []
    for d, f, t, dwell, closed in sorted(visits, key=lambda v: v[2]):
        rows.append((K.ENTER, d * spread, f, BASE + t, 0.0))
        if closed:
            rows.append((K.EXIT, d * spread, f, BASE + t + dwell, dwell))
    rows.sort(key=lambda r: r[3])
    ev = Events(np.asarray([r[0] for r in rows], np.int8), np.asarray([r[1] for r in rows], np.int64),
                np.asarray([r[2] for r in rows], np.int64), np.asarray([r[3] for r in rows], np.float64),
                np.asarray([r[4] for r in rows], np.float64), np.full(len(rows), np.nan))
    n_dev = 5 * spread + 1
    none = np.zeros(0, np.int64)
    rep = lift_report(Exposures(none, none, none, none, np.zeros(0)), ev, [Spec("c")], STORES, ["holdout", "offer"],
                      timezone=ZoneInfo(zone), n_devices=n_dev)
    assert rep.traffic == oracle(visits_of(ev, n_dev), ZoneInfo(zone))
