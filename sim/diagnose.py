"""What-if estimates: how much of the engine's error would candidate presence rules remove?

The engine is not changed here; these estimates replay its own enter and exit
events against the pings that caused them (same device, same time) and ask,
for each candidate rule, whether the rule would have held the event back:

- ``speed_gate``: no enter from a ping moving faster than ``speed_mps``
  (a walker is under 2 m/s; a car at a light is not, just before and after);
- ``confirm_enter``: an enter needs the device's next ping (within
  ``confirm_window_s``) to put its point inside the fence as well;
- ``confirm_exit``: an exit "outside by more than the accuracy" needs the next
  ping to be outside the fence's accuracy band as well;
- ``one_store_at_a_time``: no enter into a store while the engine holds the
  device in a visit of a neighbouring store (not a mall around it, not a shop
  in it): the store it is in must be left first.

For each rule: how many false enters (or early, visit-splitting exits) it
would have held back, and how many true first enters it would have delayed
(they still happen, one ping later) or lost. These are estimates on the
recorded events (a held-back event changes what follows); the point is to
rank the rules by evidence, not to replace a run of a changed engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.metrics import _KEY, EventColumns, Truth, _match
from sim.sensors import Pings
from sim.world import World


def _ping_of(events: EventColumns, pings: Pings, start_ts: float) -> np.ndarray:
    """The index of the ping (same device, same time) behind each event, or -1."""
    key_p = pings.device.astype(np.float64) * 1e7 + (pings.ts - start_ts)
    order = np.argsort(key_p, kind="stable")
    kp = key_p[order]
    q = events.device.astype(np.float64) * 1e7 + events.ts
    i = np.searchsorted(kp, q)
    i = np.clip(i, 0, max(len(kp) - 1, 0))
    hit = (len(kp) > 0) & (np.abs(kp[i] - q) < 1e-3) if len(kp) else np.zeros(len(q), dtype=bool)
    return np.where(hit, order[i], -1)


def what_if(world: World, truth: Truth, events: EventColumns, pings: Pings, start_ts: float, *,
            tolerance_s: float, speed_mps: float = 2.5, confirm_window_s: float = 90.0) -> dict[str, Any]:
    import geofence

    index = geofence.FenceIndex(geofence.load_geojson(world.to_geojson()))
    pos = np.asarray([index.position(fid) for fid in world.ids], dtype=np.int64)
    to_store = np.full(len(world.ids), -1, dtype=np.int64)
    to_store[pos] = np.arange(len(world.ids))
    m = index.match(pings.lon, pings.lat, accuracy_m=pings.accuracy_m)
    m_point = np.asarray(m.point, dtype=np.int64)
    m_store = to_store[np.asarray(m.fence, dtype=np.int64)]
    m_conf = np.asarray(m.confidence, dtype=np.int64)
    # per ping: next ping of the same device
    order = np.lexsort((pings.ts, pings.device))
    nxt = np.full(len(pings), -1, dtype=np.int64)
    same = pings.device[order][1:] == pings.device[order][:-1]
    nxt[order[:-1][same]] = order[1:][same]
    # (ping, store) -> confidence lookup
    pair_key = m_point * _KEY + m_store
    pk_order = np.argsort(pair_key)
    pk = pair_key[pk_order]

    def conf_at(ping: np.ndarray, store: np.ndarray) -> np.ndarray:
        q = ping * _KEY + store
        i = np.clip(np.searchsorted(pk, q), 0, max(len(pk) - 1, 0))
        ok = (ping >= 0) & (len(pk) > 0)
        found = ok & (pk[i] == q) if len(pk) else np.zeros(len(q), dtype=bool)
        return np.where(found, m_conf[pk_order[i]], 0)

    v = truth.visits
    v_key = v.device * _KEY + v.store
    store_ev = events.take(np.asarray([z is None for z in events.zone], dtype=bool) & (events.store >= 0))
    enters = store_ev.take((store_ev.kind == "enter") & (store_ev.source == "gps"))
    which = _match(v_key, v.start, v.end, enters.device * _KEY + enters.store, enters.ts, tolerance_s)
    first = np.zeros(len(enters), dtype=bool)
    o = np.lexsort((enters.ts, which))
    w_sorted = which[o]
    is_first = np.ones(len(o), dtype=bool)
    is_first[1:] = w_sorted[1:] != w_sorted[:-1]
    first[o[is_first & (w_sorted >= 0)]] = True
    false = ~first
    p = _ping_of(enters, pings, start_ts)
    known = p >= 0
    n_next = np.where(known, nxt[np.maximum(p, 0)], -1)
    close = (n_next >= 0) & (np.abs(pings.ts[np.maximum(n_next, 0)] - pings.ts[np.maximum(p, 0)]) <= confirm_window_s)

    def rule(held: np.ndarray) -> dict[str, Any]:
        return {
            "false_enters_held_back": int(np.sum(held & false)),
            "false_enters": int(false.sum()),
            "share_of_false_enters": round(float(np.sum(held & false)) / max(int(false.sum()), 1), 3),
            "true_enters_delayed_or_lost": int(np.sum(held & first)),
            "share_of_true_enters": round(float(np.sum(held & first)) / max(int(first.sum()), 1), 3),
        }

    out: dict[str, Any] = {"gps_enters_with_their_ping": int(known.sum()), "gps_enters": len(enters)}
    speed = np.where(known, pings.speed[np.maximum(p, 0)], 0.0)
    out["speed_gate"] = {"speed_mps": speed_mps, **rule(known & (speed > speed_mps))}
    confirmed = close & (conf_at(n_next, enters.store) >= 2)
    out["confirm_enter"] = {"window_s": confirm_window_s, **rule(known & ~confirmed)}
    # one store at a time: the engine already had the device in a visit of a neighbouring store
    # (not the mall around it, not a shop inside it) whose last inside ping is recent
    mall = truth.mall_of
    in_other = _in_other_store(store_ev, enters, mall)
    out["one_store_at_a_time"] = rule(known & in_other)
    # exits that split a visit, caused by one ping outside by more than its accuracy
    exits = store_ev.take((store_ev.kind == "exit") & (np.asarray([c == "ping" for c in store_ev.cause], dtype=bool)))
    xw = _match(v_key, v.start, v.end, exits.device * _KEY + exits.store, exits.ts, 0.0)
    early = np.zeros(len(exits), dtype=bool)
    early[xw >= 0] = exits.ts[xw >= 0] < v.end[xw[xw >= 0]] - tolerance_s
    xp = _ping_of(exits, pings, start_ts)
    xn = np.where(xp >= 0, nxt[np.maximum(xp, 0)], -1)
    back_in = (xn >= 0) & (conf_at(xn, exits.store) >= 1)  # the next ping is inside or within its accuracy
    out["confirm_exit"] = {
        "early_exits_by_one_ping": int(early.sum()),
        "early_exits_held_back": int(np.sum(early & back_in)),
        "share_of_early_exits": round(float(np.sum(early & back_in)) / max(int(early.sum()), 1), 3),
        "other_exits_delayed": int(np.sum(~early & back_in)),
    }
    return out


def _in_other_store(store_ev: EventColumns, enters: EventColumns, mall_of: np.ndarray) -> np.ndarray:
    """Per enter: was the device, by the engine's own events, inside a neighbouring store at that time?"""
    # the engine's visits: each enter paired with the next exit of the same device and store
    order = np.lexsort((store_ev.ts, store_ev.store, store_ev.device))
    kind, dev, st, ts = store_ev.kind[order], store_ev.device[order], store_ev.store[order], store_ev.ts[order]
    is_enter = kind == "enter"
    is_exit = kind == "exit"
    nxt_same = np.r_[(dev[1:] == dev[:-1]) & (st[1:] == st[:-1]), False]
    # the visit of an enter ends at the next event that is an exit (or never)
    exit_pos = np.where(is_exit, np.arange(len(kind)), len(kind))
    next_exit = np.minimum.accumulate(exit_pos[::-1])[::-1]
    # last index of each (device, store) run
    ends = np.flatnonzero(~nxt_same)
    run_id = np.cumsum(np.r_[True, ~nxt_same[:-1]]) - 1
    group_end = ends[run_id]
    e = np.flatnonzero(is_enter)
    x = next_exit[e]
    closed = x <= group_end[e]
    v_dev, v_store, v_start = dev[e], st[e], ts[e]
    v_end = np.where(closed, ts[np.minimum(x, len(ts) - 1)], np.inf)
    result = np.zeros(len(enters), dtype=bool)
    by_dev = np.argsort(v_dev, kind="stable")
    v_dev, v_store, v_start, v_end = v_dev[by_dev], v_store[by_dev], v_start[by_dev], v_end[by_dev]
    lo = np.searchsorted(v_dev, enters.device, side="left")
    hi = np.searchsorted(v_dev, enters.device, side="right")
    for k in range(len(enters)):  # analysis only: one pass over the enters, a few visits each
        s, t = enters.store[k], enters.ts[k]
        sl = slice(lo[k], hi[k])
        open_ = (v_start[sl] < t) & (v_end[sl] > t)
        other = v_store[sl][open_]
        if np.any((other != s) & (mall_of[other] != s) & (mall_of[s] != other)):
            result[k] = True
    return result
