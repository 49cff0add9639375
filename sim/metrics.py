"""Scoring detections against the ground truth.

Definitions (also printed in the report):

- A true *visit* is a device inside a store (a mall, a mall shop) from the door
  in to the door out. It is **found** when an ``enter`` event for that device
  and store lands within ``[start - tolerance, end + tolerance]``.
- **recall** = found visits / visits. **precision** = enters that found a
  visit (the first such enter per visit) / all store enters; a second enter
  within the same visit (the engine exited and re-entered: a split visit) and
  an enter with no visit around it are both false.
- A false enter is attributed to what the device was really doing at that
  moment: walking by (on a sidewalk or a mall corridor), driving by (moving or
  at a red light), parked at the kerb, inside another store (a neighbour), or
  something else. The *rate* of false enters from walk-bys / drive-bys /
  parked cars is the share of such passes of a store that produced an enter
  for that store, within the pass (± tolerance).
- **enter latency**: first enter - visit start. **dwell latency**: the first
  dwell event at the fence's dwell time - (visit start + dwell time), for
  visits long enough to have one. **exit latency**: the first exit after the
  enter - visit end; an exit is **missed** when none comes by visit end +
  ``exit_tolerance_s`` (visits ending that close to the end of the run are
  not judged).
- Beacon zone events (``zone`` set) are counted apart; store metrics use the
  store events (``zone`` is ``None``).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.mobility import (
    ACT_DRIVE,
    ACT_INDOOR,
    ACT_PARKED,
    ACT_STOPPED,
    ACT_WALK,
    Episodes,
    Segments,
    Visits,
)

FALSE_CAUSES = ("walk_by", "drive_by", "parked", "neighbour", "other")
_KEY = 1 << 20  # composite (device, store) keys: device * _KEY + store


@dataclass
class EventColumns:
    """Presence events as columns, with devices and fences as indexes (-1: unknown to the simulation)."""

    kind: np.ndarray  # object: enter | dwell | exit
    device: np.ndarray  # int64
    store: np.ndarray  # int64
    zone: np.ndarray  # object (None for a store event)
    ts: np.ndarray  # seconds from the start of the run
    dwell_s: np.ndarray
    source: np.ndarray  # object
    cause: np.ndarray  # object: ping | sighting | debounce | forget
    confidence: np.ndarray  # int64
    probability: np.ndarray  # float64, NaN when the event has none

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_events(cls, events: Sequence[Any], device_index: Mapping[str, int], store_index: Mapping[str, int],
                    start_ts: float) -> EventColumns:
        """From ``proximity.events.Event`` objects (or anything with the same attributes)."""
        n = len(events)
        return cls(
            kind=np.asarray([e.kind for e in events], dtype=object).reshape(n),
            device=np.asarray([device_index.get(e.device_id, -1) for e in events], dtype=np.int64).reshape(n),
            store=np.asarray([store_index.get(e.fence_id, -1) for e in events], dtype=np.int64).reshape(n),
            zone=np.asarray([e.zone for e in events], dtype=object).reshape(n),
            ts=np.asarray([e.ts for e in events], dtype=np.float64).reshape(n) - start_ts,
            dwell_s=np.asarray([e.dwell_s for e in events], dtype=np.float64).reshape(n),
            source=np.asarray([e.source for e in events], dtype=object).reshape(n),
            cause=np.asarray([getattr(e, "cause", "ping") for e in events], dtype=object).reshape(n),
            confidence=np.asarray([getattr(e, "confidence", 0) for e in events], dtype=np.int64).reshape(n),
            probability=np.asarray([_prob(getattr(e, "probability", None)) for e in events],
                                   dtype=np.float64).reshape(n),
        )

    def take(self, mask: np.ndarray) -> EventColumns:
        return EventColumns(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})


def _prob(p: Any) -> float:
    return float("nan") if p is None else float(p)


@dataclass
class Truth:
    """Everything the metrics need to know about what really happened."""

    visits: Visits
    walk_drive: Episodes  # walk-bys and drive-bys
    parked: Episodes
    segments: Segments
    size_class: np.ndarray  # per store
    mall_of: np.ndarray  # per store: the mall around a shop, -1 otherwise
    device_sigma_m: np.ndarray  # per device: its outdoor 68 % GPS error radius
    end_s: float  # the run's length in seconds
    dwell_s: float  # the fences' dwell time


def _match(iv_key: np.ndarray, iv_start: np.ndarray, iv_end: np.ndarray,
           q_key: np.ndarray, q_t: np.ndarray, tol: float) -> np.ndarray:
    """For each query (key, t): the index of the interval with that key containing t (± tol), else -1.

    Intervals of one key must not overlap (by more than 2 tol); the latest starting one wins.
    """
    if len(iv_key) == 0 or len(q_key) == 0:
        return np.full(len(q_key), -1, dtype=np.int64)
    order = np.lexsort((iv_start, iv_key))
    k, s, e = iv_key[order], iv_start[order], iv_end[order]
    span = max(float(np.max(np.abs(s))), float(np.max(np.abs(q_t))), 1.0) * 4 + 10 * tol
    comp = k.astype(np.float64) * span + s - tol
    q = np.searchsorted(comp, q_key.astype(np.float64) * span + q_t, side="right") - 1
    qi = np.maximum(q, 0)
    hit = (q >= 0) & (k[qi] == q_key) & (q_t <= e[qi] + tol)
    return np.where(hit, order[qi], -1)


def _pct(values: np.ndarray) -> dict[str, float | int | None]:
    if len(values) == 0:
        return {"n": 0, "median": None, "p90": None}
    return {"n": len(values), "median": round(float(np.median(values)), 1),
            "p90": round(float(np.percentile(values, 90)), 1)}


def _ratio(num: int | float, den: int | float) -> float | None:
    return round(float(num) / float(den), 4) if den else None


def score(truth: Truth, events: EventColumns, *, tolerance_s: float = 60.0,
          exit_tolerance_s: float = 300.0, accuracy_bins: int = 4,
          details: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The detection metrics of a run (see the module docstring for every definition).

    ``details``, when given, receives the per-visit arrays behind the summary
    (``found``, ``enter_latency_s``, ``dwell_latency_s``, ``exit_latency_s``) for plots.
    """
    tol = float(tolerance_s)
    store_ev = events.take(np.asarray([z is None for z in events.zone], dtype=bool) & (events.store >= 0)
                           & (events.device >= 0))
    zone_ev = events.take(np.asarray([z is not None for z in events.zone], dtype=bool))
    v = truth.visits
    v_key = v.device * _KEY + v.store
    enters = store_ev.take(store_ev.kind == "enter")
    e_key = enters.device * _KEY + enters.store
    which = _match(v_key, v.start, v.end, e_key, enters.ts, tol)
    # the first enter per visit is true; the others are false (split visits)
    order = np.lexsort((enters.ts, which))
    first_of_visit = np.zeros(len(enters), dtype=bool)
    w_sorted = which[order]
    is_first = np.ones(len(order), dtype=bool)
    is_first[1:] = w_sorted[1:] != w_sorted[:-1]
    first_of_visit[order[is_first & (w_sorted >= 0)]] = True
    true_enter = first_of_visit
    found = np.zeros(len(v), dtype=bool)
    found[which[true_enter]] = True
    enter_ts = np.full(len(v), np.nan)
    enter_ts[which[true_enter]] = enters.ts[true_enter]
    duplicate = (which >= 0) & ~true_enter
    false_enter = which < 0

    # what was the device doing at each false enter?
    seg = truth.segments
    cause = np.full(len(enters), "", dtype=object)
    if len(enters):
        si = seg.locate(enters.device, enters.ts)
        act = seg.act[si]
        place = seg.place[si]
        cause[:] = "other"
        cause[np.isin(act, (ACT_WALK, ACT_INDOOR))] = "walk_by"
        cause[np.isin(act, (ACT_DRIVE, ACT_STOPPED))] = "drive_by"
        cause[act == ACT_PARKED] = "parked"
        # inside another store (not the mall around this shop: that is its corridor, a walk-by)
        neighbour = (place >= 0) & (place != enters.store) & (place != truth.mall_of[enters.store])
        cause[neighbour] = "neighbour"
    false_by_cause = {c: int(np.sum(false_enter & (cause == c))) for c in FALSE_CAUSES}

    def episode_rate(ep: Episodes, kind: str | None) -> tuple[int, int]:
        mask = np.ones(len(ep), dtype=bool) if kind is None else ep.kind == kind
        fe = false_enter
        hit = _match(ep.device[mask] * _KEY + ep.store[mask], ep.start[mask], ep.end[mask],
                     e_key[fe], enters.ts[fe], tol)
        return int(mask.sum()), len(np.unique(hit[hit >= 0]))

    walks, walk_hits = episode_rate(truth.walk_drive, "walk")
    drives, drive_hits = episode_rate(truth.walk_drive, "drive")
    parks, park_hits = episode_rate(truth.parked, None)

    # dwell events at the fence's own dwell time
    dwells = store_ev.take((store_ev.kind == "dwell") & (np.abs(store_ev.dwell_s - truth.dwell_s) < 0.5))
    d_which = _match(v_key, v.start, v.end, dwells.device * _KEY + dwells.store, dwells.ts, tol)
    first_dwell = np.full(len(v), np.inf)
    np.minimum.at(first_dwell, d_which[d_which >= 0], dwells.ts[d_which >= 0])
    long_enough = found & ((v.end - v.start) >= truth.dwell_s + tol)
    dwell_lat = first_dwell[long_enough] - (v.start[long_enough] + truth.dwell_s)
    dwell_missed = int(np.sum(~np.isfinite(dwell_lat)))
    dwell_lat = dwell_lat[np.isfinite(dwell_lat)]

    # exits: the first exit of that device and store after the visit's enter
    exits = store_ev.take(store_ev.kind == "exit")
    x_key = exits.device * _KEY + exits.store
    xo = np.lexsort((exits.ts, x_key))
    xk, xt = x_key[xo], exits.ts[xo]
    span = max(truth.end_s, 1.0) * 4 + 1e5
    comp = xk.astype(np.float64) * span + xt
    judged = found & (v.end + exit_tolerance_s <= truth.end_s)
    q = np.searchsorted(comp, v_key[judged].astype(np.float64) * span + enter_ts[judged], side="right")
    qi = np.minimum(q, max(len(xk) - 1, 0))
    has_exit = (q < len(xk)) & (xk[qi] == v_key[judged]) if len(xk) else np.zeros(int(judged.sum()), dtype=bool)
    exit_t = np.where(has_exit, xt[qi] if len(xk) else 0.0, np.inf)
    v_end = v.end[judged]
    exit_ok = exit_t <= v_end + exit_tolerance_s
    # diagnosis: what ended visits early (the exits inside a visit, before its end - tol)
    x_which = _match(v_key, v.start, v.end, x_key, exits.ts, 0.0)
    inside = x_which >= 0
    early = np.zeros(len(exits), dtype=bool)
    early[inside] = exits.ts[inside] < v.end[x_which[inside]] - tol
    causes = np.asarray([str(c) for c in exits.cause], dtype=object) if len(exits) else np.zeros(0, dtype=object)
    early_by = Counter(f"{c}/{src}" for c, src in zip(causes[early], exits.source[early], strict=True))
    missed_exits = int(np.sum(~exit_ok))
    early_exits = int(np.sum(exit_t < v_end - tol))
    exit_lat = (exit_t - v_end)[exit_ok]

    enter_lat = (enter_ts - v.start)[found]
    if details is not None:
        details.update(found=found, enter_latency_s=enter_lat, dwell_latency_s=dwell_lat, exit_latency_s=exit_lat,
                       false_enter=false_enter, false_cause=cause, enter_device=enters.device, enter_ts=enters.ts,
                       enter_store=enters.store)
    out: dict[str, Any] = {
        "visits": len(v),
        "detected": int(found.sum()),
        "recall": _ratio(int(found.sum()), len(v)),
        "enters": len(enters),
        "true_enters": int(true_enter.sum()),
        "precision": _ratio(int(true_enter.sum()), len(enters)),
        "split_visit_enters": int(duplicate.sum()),
        "false_enters": int(false_enter.sum()),
        "false_enters_by_cause": false_by_cause,
        "walk_bys": walks,
        "walk_by_false_enter_rate": _ratio(walk_hits, walks),
        "drive_bys": drives,
        "drive_by_false_enter_rate": _ratio(drive_hits, drives),
        "parked_outside": parks,
        "parked_false_enter_rate": _ratio(park_hits, parks),
        "enter_latency_s": _pct(enter_lat),
        "dwell_latency_s": _pct(dwell_lat),
        "dwell_missed": dwell_missed,
        "exit_latency_s": _pct(exit_lat),
        "exits_judged": int(judged.sum()),
        "missed_exits": missed_exits,
        "early_exits": early_exits,
        "diagnosis": {
            "exits_inside_a_visit_by_cause": dict(sorted(early_by.items())),
            "false_enters_by_confidence": {str(k): int(v) for k, v in sorted(Counter(
                enters.confidence[false_enter | duplicate].tolist()).items())},
            "false_enters_by_source": {str(k): int(v) for k, v in sorted(Counter(
                enters.source[false_enter | duplicate].tolist()).items())},
        },
        "tolerance_s": tol,
        "exit_tolerance_s": float(exit_tolerance_s),
    }
    by_size: dict[str, Any] = {}
    for cls in ("small", "medium", "large", "mall", "shop"):
        vm = truth.size_class[v.store] == cls
        em = truth.size_class[enters.store] == cls if len(enters) else np.zeros(0, dtype=bool)
        if not vm.any() and not em.any():
            continue
        by_size[cls] = {
            "visits": int(vm.sum()),
            "detected": int((found & vm).sum()),
            "recall": _ratio(int((found & vm).sum()), int(vm.sum())),
            "enters": int(em.sum()),
            "precision": _ratio(int((true_enter & em).sum()), int(em.sum())),
            "enter_latency_s": _pct((enter_ts - v.start)[found & vm]),
        }
    out["by_size"] = by_size
    # precision and recall against the device's GPS error
    sig_v = truth.device_sigma_m[v.device]
    sig_e = truth.device_sigma_m[enters.device] if len(enters) else np.zeros(0)
    edges = np.unique(np.quantile(truth.device_sigma_m, np.linspace(0, 1, accuracy_bins + 1)))
    bins = []
    for lo, hi in itertools.pairwise(edges):
        last = hi == edges[-1]
        vm = (sig_v >= lo) & ((sig_v <= hi) if last else (sig_v < hi))
        em = (sig_e >= lo) & ((sig_e <= hi) if last else (sig_e < hi))
        bins.append({
            "sigma_lo_m": round(float(lo), 1), "sigma_hi_m": round(float(hi), 1),
            "visits": int(vm.sum()), "recall": _ratio(int((found & vm).sum()), int(vm.sum())),
            "enters": int(em.sum()), "precision": _ratio(int((true_enter & em).sum()), int(em.sum())),
        })
    out["by_gps_accuracy"] = bins
    zone_enters = zone_ev.take(zone_ev.kind == "enter")
    zone_in_visit = _match(v_key, v.start, v.end, zone_enters.device * _KEY + zone_enters.store, zone_enters.ts, tol)
    out["zones"] = {
        "events": len(zone_ev),
        "enters": len(zone_enters),
        "enters_during_a_visit_of_the_store": int(np.sum(zone_in_visit >= 0)),
    }
    out["events_by_source"] = {str(s): int(np.sum(events.source == s)) for s in sorted(set(events.source.tolist()))}
    return out
