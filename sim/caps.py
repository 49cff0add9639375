"""An independent audit of the offers a run issued against every cap of the campaigns.

The limiter is the thing under test, so this audit does not ask it: it
re-reads the caps from the loaded campaigns (``campaigns.CampaignSet``) and
checks the offers' own timestamps, group by group, with plain array code:

- per device across campaigns (``defaults.limits.per_device``) and per device
  per campaign (``limits.per_device``): at most ``max`` offers in any rolling
  ``window``, or in any run of calendar days (in the campaigns' time zone);
- cooldown per device, campaign and fence: no two offers closer than it;
- campaign budgets: ``total`` and ``per_day`` (calendar days).

Every number it reports must be 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

_EPS = 1e-6


def _groups(*cols: np.ndarray) -> np.ndarray:
    if not len(cols[0]):
        return np.zeros(0, dtype=np.int64)
    keys = np.asarray(["\x1f".join(map(str, row)) for row in zip(*cols, strict=True)], dtype=object)
    return np.unique(keys, return_inverse=True)[1].astype(np.int64)


def _too_many(group: np.ndarray, value: np.ndarray, max_: int, span: float) -> int:
    """How many times ``max_ + 1`` values of one group fall within less than ``span`` of each other."""
    if len(value) <= max_:
        return 0
    order = np.lexsort((value, group))
    g, v = group[order], value[order]
    same = g[max_:] == g[:-max_]
    return int(np.sum(same & (v[max_:] - v[:-max_] < span - _EPS)))


def _local_days(ts: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    return np.asarray([datetime.fromtimestamp(float(t), UTC).astimezone(tz).date().toordinal() for t in ts],
                      dtype=np.float64)


def audit_caps(offers: Iterable[Mapping[str, Any]], campaigns: Any) -> dict[str, Any]:
    """``offers``: dicts with ``campaign_id, device_id, fence_id, ts`` (``Offer.to_dict()``);
    ``campaigns``: the ``campaigns.CampaignSet`` that was running."""
    rows = list(offers)
    n = len(rows)
    camp = np.asarray([r["campaign_id"] for r in rows], dtype=object).reshape(n)
    dev = np.asarray([r["device_id"] for r in rows], dtype=object).reshape(n)
    fence = np.asarray([r["fence_id"] for r in rows], dtype=object).reshape(n)
    ts = np.asarray([float(r["ts"]) for r in rows], dtype=np.float64).reshape(n)
    defaults = campaigns.defaults
    tz = defaults.timezone or ZoneInfo("UTC")
    days = _local_days(ts, tz)
    by_cap: dict[str, int] = {}

    def check(label: str, group: np.ndarray, mask: np.ndarray, cap: Any) -> None:
        if cap.kind == "calendar":
            n_days = max(1, round(cap.window_s / 86400.0))
            by_cap[label] = _too_many(group[mask], days[mask], cap.max, float(n_days))
        else:
            by_cap[label] = _too_many(group[mask], ts[mask], cap.max, cap.window_s)

    dev_g = _groups(dev)
    everything = np.ones(n, dtype=bool)
    for cap in defaults.per_device:
        check(f"all campaigns: per device {cap.label}", dev_g, everything, cap)
    dev_camp_g = _groups(dev, camp)
    cool_g = _groups(dev, camp, fence)
    for c in campaigns.campaigns:
        mask = camp == c.id
        lim = c.limits
        for cap in lim.per_device:
            check(f"{c.id}: per device {cap.label}", dev_camp_g, mask, cap)
        if lim.cooldown_s:
            by_cap[f"{c.id}: cooldown {lim.cooldown_s:g} s"] = _too_many(cool_g[mask], ts[mask], 1, lim.cooldown_s)
        if lim.budget_total is not None:
            by_cap[f"{c.id}: budget total {lim.budget_total}"] = max(0, int(mask.sum()) - lim.budget_total)
        if lim.budget_per_day is not None:
            zeros = np.zeros(int(mask.sum()), dtype=np.int64)
            by_cap[f"{c.id}: budget {lim.budget_per_day}/day"] = _too_many(zeros, days[mask], lim.budget_per_day, 1.0)
    per_campaign = {str(k): int(v) for k, v in zip(*np.unique(camp, return_counts=True), strict=True)} if n else {}
    return {"offers": n, "violations": int(sum(by_cap.values())), "by_cap": by_cap, "offers_by_campaign": per_campaign}
