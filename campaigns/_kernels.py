"""The hot loops of conversion reports (numba): grouping by device, visits, conversions, per-group medians.

Every kernel walks rows grouped by device (a counting sort, O(n)), and sorts
only inside one device's few rows, so a report over tens of millions of events
never sorts them all at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: event kinds as the kernels see them (ranked so that at one instant an exit closes before an enter opens)
EXIT, ENTER, DWELL = 0, 1, 2
#: attribution rules
LAST, EACH = 0, 1


@njit(cache=True)
def group_order(codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """Stable order of rows by code (counting sort) and the start of each code's rows (``n_codes + 1``)."""
    n = len(codes)
    starts = np.zeros(n_codes + 1, np.int64)
    for i in range(n):
        starts[codes[i] + 1] += 1
    for c in range(n_codes):
        starts[c + 1] += starts[c]
    pos = starts[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        c = codes[i]
        order[pos[c]] = i
        pos[c] += 1
    return order, starts


@njit(cache=True)
def sort_within(order: np.ndarray, starts: np.ndarray, ts: np.ndarray) -> None:  # pragma: no cover - numba
    """Sort each group's rows of ``order`` by ``ts`` (stable), in place."""
    for g in range(len(starts) - 1):
        a, b = starts[g], starts[g + 1]
        if b - a > 1:
            rows = order[a:b].copy()
            order[a:b] = rows[np.argsort(ts[rows], kind="mergesort")]


@njit(cache=True)
def build_visits(order: np.ndarray, starts: np.ndarray, kind: np.ndarray, fence: np.ndarray, ts: np.ndarray,
                 dwell: np.ndarray, prob: np.ndarray):  # pragma: no cover - numba
    """Visits from store-level events grouped by device (``order``, ``starts``).

    A visit opens at an enter and collects the dwell and exit events of the same
    fence until its exit; its dwell is the longest ``dwell_s`` seen, its
    probability the highest (NaN when no event carried one). Events of a visit
    whose enter is not in the log (it began before) are ignored. Returns the
    visits grouped by device and sorted by start within a device: ``device,
    fence, start, dwell, probability, closed, repeat`` (an earlier visit of the
    same device to the same fence is in the log) and each device's first visit.
    """
    n_dev = len(starts) - 1
    n = 0
    for i in range(len(kind)):
        if kind[i] == ENTER:
            n += 1
    v_dev = np.empty(n, np.int64)
    v_fence = np.empty(n, np.int64)
    v_ts = np.empty(n, np.float64)
    v_dwell = np.empty(n, np.float64)
    v_prob = np.empty(n, np.float64)
    v_closed = np.zeros(n, np.bool_)
    v_repeat = np.zeros(n, np.bool_)
    v_starts = np.zeros(n_dev + 1, np.int64)
    k = 0
    for d in range(n_dev):
        a, b = starts[d], starts[d + 1]
        v_starts[d] = k
        if b == a:
            continue
        rows = order[a:b].copy()
        rows = rows[np.argsort(kind[rows], kind="mergesort")]
        rows = rows[np.argsort(ts[rows], kind="mergesort")]
        rows = rows[np.argsort(fence[rows], kind="mergesort")]
        first = k
        cur = -1
        last_fence = -1
        seen_fence = False
        for r in rows:
            f = fence[r]
            if f != last_fence:
                cur = -1
                seen_fence = False
                last_fence = f
            if kind[r] == ENTER:
                cur = k
                v_dev[k] = d
                v_fence[k] = f
                v_ts[k] = ts[r]
                v_dwell[k] = dwell[r]
                v_prob[k] = prob[r]
                v_repeat[k] = seen_fence
                seen_fence = True
                k += 1
            elif cur >= 0:
                if dwell[r] > v_dwell[cur]:
                    v_dwell[cur] = dwell[r]
                p = prob[r]
                if p == p and not (v_prob[cur] >= p):
                    v_prob[cur] = p
                if kind[r] == EXIT:
                    v_closed[cur] = True
                    cur = -1
        if k - first > 1:
            o = np.argsort(v_ts[first:k], kind="mergesort") + first
            v_fence[first:k] = v_fence[o]
            v_ts[first:k] = v_ts[o]
            v_dwell[first:k] = v_dwell[o]
            v_prob[first:k] = v_prob[o]
            v_closed[first:k] = v_closed[o]
            v_repeat[first:k] = v_repeat[o]
    v_starts[n_dev] = k
    return v_dev, v_fence, v_ts, v_dwell, v_prob, v_closed, v_repeat, v_starts


@njit(cache=True)
def _qualifies(v: int, c: int, v_fence: np.ndarray, v_dwell: np.ndarray, v_prob: np.ndarray,
               place_ok: np.ndarray, min_dwell: np.ndarray, min_prob: np.ndarray) -> bool:  # pragma: no cover
    if not place_ok[c, v_fence[v]]:
        return False
    if v_dwell[v] < min_dwell[c]:
        return False
    p = v_prob[v]
    return not (min_prob[c] > 0 and p == p and p < min_prob[c])


@njit(cache=True)
def convert(e_order: np.ndarray, e_starts: np.ndarray, e_camp: np.ndarray, e_ts: np.ndarray,
            v_starts: np.ndarray, v_fence: np.ndarray, v_ts: np.ndarray, v_dwell: np.ndarray, v_prob: np.ndarray,
            place_ok: np.ndarray, within: np.ndarray, min_dwell: np.ndarray, min_prob: np.ndarray,
            attribution: int):  # pragma: no cover - numba
    """For each exposure, the visit that converts it (-1: none).

    Exposures (grouped by device by ``e_order``/``e_starts``, sorted by time
    within a device) and visits (grouped the same way, sorted by start) of one
    device are walked together. An exposure's candidate is its first visit
    that starts strictly after it, within its campaign's window, at one of its
    places, long and probable enough. With ``LAST`` attribution a visit belongs
    to the latest exposure before it for which it qualifies (any campaign), and
    an exposure converts only if its candidate belongs to it; with ``EACH``
    every exposure converts with its candidate.
    """
    n_e = len(e_camp)
    out = np.full(n_e, -1, np.int64)
    max_within = 0.0
    for c in range(len(within)):
        if within[c] > max_within:
            max_within = within[c]
    n_dev = len(e_starts) - 1
    for d in range(n_dev):
        ea, eb = e_starts[d], e_starts[d + 1]
        if eb == ea or d + 1 >= len(v_starts):
            continue
        va, vb = v_starts[d], v_starts[d + 1]
        if vb == va:
            continue
        nxt = va
        for i in range(ea, eb):
            e = e_order[i]
            c = e_camp[e]
            t = e_ts[e]
            while nxt < vb and v_ts[nxt] <= t:
                nxt += 1
            for v in range(nxt, vb):
                if v_ts[v] > t + within[c]:
                    break
                if _qualifies(v, c, v_fence, v_dwell, v_prob, place_ok, min_dwell, min_prob):
                    out[e] = v
                    break
        if attribution == EACH:
            continue
        # the owner of each candidate visit: the latest exposure before it that it qualifies for
        for i in range(ea, eb):
            e = e_order[i]
            v = out[e]
            if v < 0:
                continue
            for j in range(i + 1, eb):
                e2 = e_order[j]
                t2 = e_ts[e2]
                if t2 >= v_ts[v]:
                    break
                c2 = e_camp[e2]
                if v_ts[v] - t2 <= within[c2] and _qualifies(v, c2, v_fence, v_dwell, v_prob, place_ok,
                                                            min_dwell, min_prob):
                    out[e] = -1  # a later exposure claims the visit
                    break
    return out


@njit(cache=True)
def store_day_visitors(v_starts: np.ndarray, sd: np.ndarray, repeat: np.ndarray, n_sd: int):  # pragma: no cover
    """Per store-day: unique visitors, and those of them with a repeat visit (an earlier one to that store)."""
    unique = np.zeros(n_sd, np.int64)
    returning = np.zeros(n_sd, np.int64)
    for d in range(len(v_starts) - 1):
        a, b = v_starts[d], v_starts[d + 1]
        if b == a:
            continue
        keys = sd[a:b]
        o = np.argsort(keys, kind="mergesort")
        prev = -1
        rep = False
        for j in range(len(o)):
            k = keys[o[j]]
            if k != prev:
                if prev >= 0 and rep:
                    returning[prev] += 1
                unique[k] += 1
                prev = k
                rep = False
            if repeat[a + o[j]]:
                rep = True
        if prev >= 0 and rep:
            returning[prev] += 1
    return unique, returning


@njit(cache=True)
def group_medians(order: np.ndarray, starts: np.ndarray, values: np.ndarray) -> np.ndarray:  # pragma: no cover
    """The median of ``values`` in each group (NaN for an empty one)."""
    n = len(starts) - 1
    out = np.full(n, np.nan)
    for g in range(n):
        a, b = starts[g], starts[g + 1]
        if b > a:
            out[g] = np.median(values[order[a:b]])
    return out
