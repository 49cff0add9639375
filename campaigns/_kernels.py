"""The hot loops of conversion reports (numba): grouping by device, visits, conversions, per-group medians.

Every kernel walks rows grouped by device (a counting sort, O(n)), and sorts
only inside one device's few rows, so a report over tens of millions of events
never sorts them all at once. A presence log in time order is not even grouped:
its visits are built in one walk in log order (:func:`visits_in_time_order`),
and only the visits are put in device order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import literal_unroll

from proxbase.jit import njit

#: event kinds as the kernels see them (ranked so that at one instant an exit closes before an enter opens)
EXIT, ENTER, DWELL = 0, 1, 2
#: attribution rules
LAST, EACH = 0, 1


#: codes up to this many are grouped in one scatter; above, in two cache-sized passes (see group_rows)
ONE_PASS_CODES = 1 << 12


def group(codes: np.ndarray, cols: Sequence[np.ndarray], n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`group_rows` with its arrays made here: the columns ``cols`` (each as long as ``codes``, of
    any numeric dtype) as float64 rows grouped by code (shape ``(n, len(cols))``), and each code's first row.

    Memory is what costs here: each fresh page is zeroed by the OS (on this VM a fresh GB cost
    more than a second of system time). So the columns are read as they are (no float64 copy of
    each first), and large arrays are numpy's, not numba's: numpy asks for huge pages, a
    thousand page faults for 2 GB instead of half a million."""
    columns = tuple(np.ascontiguousarray(c) for c in cols)
    n = len(codes)
    out = np.empty((n, len(columns)), np.float64)
    starts = np.zeros(n_codes + 1, np.int64)
    group_rows(codes, columns, out, starts, np.empty(n if n_codes > ONE_PASS_CODES else 0, np.int32))
    return out, starts


@njit
def group_rows(codes: np.ndarray, cols: tuple[np.ndarray, ...], out: np.ndarray, starts: np.ndarray,
               low: np.ndarray) -> None:  # pragma: no cover - numba
    """Fill ``out`` with the rows made of the columns ``cols`` (a tuple of numeric arrays: ``out[j, k]``
    from ``cols[k][i]``), grouped by code (a stable counting sort), and ``starts`` (zeros, one more than
    the codes) with each code's first row. Grouped rows are then read in sequence, with no random gathers.

    With few codes every row is scattered once to its place. With many (a million devices) one
    scatter would write each row to a random one of a million places (a cache and TLB miss a row),
    so rows go first to one of at most 2,048 buckets of consecutive codes (the high bits: a few
    thousand sequential write streams; ``low`` keeps the low bits of their codes), then each bucket,
    whose rows fit in the cache, is counted and scattered in place by the low bits. Both passes are
    stable, so the order is the same.
    """
    m, n = out.shape[1], len(codes)
    n_codes = len(starts) - 1
    if n_codes <= ONE_PASS_CODES:
        for i in range(n):
            starts[codes[i] + 1] += 1
        for c in range(n_codes):
            starts[c + 1] += starts[c]
        pos = starts[:-1].copy()
        for i in range(n):
            c = codes[i]
            p = pos[c]
            k = 0
            for col in literal_unroll(cols):  # unrolled: the tuple's length is part of its type
                out[p, k] = col[i]
                k += 1  # noqa: SIM113 - numba unrolls only a bare literal_unroll(), not enumerate()
            pos[c] = p + 1
        return
    bits = 0
    while (1 << bits) < n_codes:
        bits += 1
    lo = bits - min(11, (bits + 1) // 2)
    mask = (1 << lo) - 1
    n_b = ((n_codes - 1) >> lo) + 1
    b_starts = np.zeros(n_b + 1, np.int64)
    for i in range(n):
        b_starts[(codes[i] >> lo) + 1] += 1
    for b in range(n_b):
        b_starts[b + 1] += b_starts[b]
    pos = b_starts[:-1].copy()
    for i in range(n):  # pass 1: to the bucket of the high bits, in input order
        c = codes[i]
        b = c >> lo
        p = pos[b]
        low[p] = c & mask
        k = 0
        for column in literal_unroll(cols):  # (literal_unroll wants a name of its own per loop)
            out[p, k] = column[i]
            k += 1  # noqa: SIM113 - as above
        pos[b] = p + 1
    biggest = 0
    for b in range(n_b):
        biggest = max(biggest, b_starts[b + 1] - b_starts[b])
    scratch = np.empty((biggest, m), np.float64)
    for b in range(n_b):  # pass 2: each bucket in place, by the low bits
        a, e = b_starts[b], b_starts[b + 1]
        c0 = b << lo
        c1 = min(n_codes, c0 + (1 << lo))
        for j in range(a, e):
            starts[c0 + low[j] + 1] += 1
            for k in range(m):
                scratch[j - a, k] = out[j, k]
        starts[c0] = a
        for c in range(c0, c1):
            starts[c + 1] += starts[c]
        cpos = starts[c0:c1].copy()
        for j in range(a, e):
            q = low[j]
            p = cpos[q]
            for k in range(m):
                out[p, k] = scratch[j - a, k]
            cpos[q] = p + 1


@njit
def sort_groups(rows: np.ndarray, starts: np.ndarray) -> None:  # pragma: no cover - numba
    """Sort each group's rows by (column 0, column 1), stable, in place. Rows already in order (a log
    written in time order) cost one comparison each; a few unordered rows, an insertion sort."""
    for g in range(len(starts) - 1):
        a, b = starts[g], starts[g + 1]
        ordered = True
        for j in range(a + 1, b):
            if rows[j, 0] < rows[j - 1, 0] or (rows[j, 0] == rows[j - 1, 0] and rows[j, 1] < rows[j - 1, 1]):
                ordered = False
                break
        if ordered:
            continue
        if b - a <= 32:
            m = rows.shape[1]
            r = np.empty(m, rows.dtype)
            for j in range(a + 1, b):
                for q in range(m):
                    r[q] = rows[j, q]
                k = j - 1
                while k >= a and (rows[k, 0] > r[0] or (rows[k, 0] == r[0] and rows[k, 1] > r[1])):
                    for q in range(m):
                        rows[k + 1, q] = rows[k, q]
                    k -= 1
                for q in range(m):
                    rows[k + 1, q] = r[q]
        else:
            sub = rows[a:b].copy()
            o = np.argsort(sub[:, 1], kind="mergesort")
            o = o[np.argsort(sub[o, 0], kind="mergesort")]
            rows[a:b] = sub[o]


#: columns of grouped event rows
E_TS, E_KIND, E_FENCE, E_DWELL, E_PROB = 0, 1, 2, 3, 4


def visits(rows: np.ndarray, starts: np.ndarray, n_fences: int, n_enters: int) -> tuple[np.ndarray, ...]:
    """:func:`build_visits` with its arrays made here (numpy's: see :func:`group`), ``n_enters`` being
    the number of enter rows: ``device, fence, start, dwell, probability, closed, repeat, starts``."""
    out = (np.empty(n_enters, np.int64), np.empty(n_enters, np.int64), np.empty(n_enters, np.float64),
           np.empty(n_enters, np.float64), np.empty(n_enters, np.float64), np.zeros(n_enters, np.bool_),
           np.zeros(n_enters, np.bool_), np.zeros(len(starts), np.int64))
    build_visits(rows, starts, n_fences, *out)
    return out


@njit
def build_visits(rows: np.ndarray, starts: np.ndarray, n_fences: int, v_dev: np.ndarray, v_fence: np.ndarray,
                 v_ts: np.ndarray, v_dwell: np.ndarray, v_prob: np.ndarray, v_closed: np.ndarray,
                 v_repeat: np.ndarray, v_starts: np.ndarray) -> None:  # pragma: no cover - numba
    """Visits from store-level event rows grouped by device and sorted by (time, kind) within a device
    (``ts, kind, fence, dwell_s`` and ``probability`` when some event carries one).

    A visit opens at an enter and collects the dwell and exit events of the same
    fence until its exit; its dwell is the longest ``dwell_s`` seen, its
    probability the highest (NaN when no event carried one). Events of a visit
    whose enter is not in the log (it began before) are ignored. Fills the
    visits grouped by device and sorted by start within a device: ``device,
    fence, start, dwell, probability, closed, repeat`` (an earlier visit of the
    same device to the same fence is in the log; ``closed`` and ``repeat``
    given as zeros, each as long as the enter rows) and each device's first
    visit (``v_starts``, one more than the devices).
    One pass: per fence, the open visit and whether the device was seen there
    are stamped with the device, so nothing is reset between devices.
    """
    n_dev = len(starts) - 1
    has_prob = rows.shape[1] > E_PROB
    open_visit = np.full(n_fences, -1, np.int64)
    open_dev = np.full(n_fences, -1, np.int64)
    seen_dev = np.full(n_fences, -1, np.int64)
    k = 0
    for d in range(n_dev):
        v_starts[d] = k
        for j in range(starts[d], starts[d + 1]):
            f = int(rows[j, E_FENCE])
            kind = rows[j, E_KIND]
            if kind == ENTER:
                v_dev[k] = d
                v_fence[k] = f
                v_ts[k] = rows[j, E_TS]
                v_dwell[k] = rows[j, E_DWELL]
                v_prob[k] = rows[j, E_PROB] if has_prob else np.nan
                v_repeat[k] = seen_dev[f] == d
                seen_dev[f] = d
                open_visit[f] = k
                open_dev[f] = d
                k += 1
            elif open_dev[f] == d:
                cur = open_visit[f]
                if rows[j, E_DWELL] > v_dwell[cur]:
                    v_dwell[cur] = rows[j, E_DWELL]
                if has_prob:
                    p = rows[j, E_PROB]
                    if p == p and not (v_prob[cur] >= p):
                        v_prob[cur] = p
                if kind == EXIT:
                    v_closed[cur] = True
                    open_dev[f] = -1
    v_starts[n_dev] = k


#: open visits of one device at once (at distinct fences) past which the log's visits are built by grouping
MAX_OPEN = 64


@njit
def scan_log(ts: np.ndarray, kind: np.ndarray, device: np.ndarray, enters: np.ndarray) -> int:  # pragma: no cover
    """-1 unless the events are in time order (``ts`` non-decreasing, no NaN) with known kinds only (exit,
    enter, dwell); else 0, or 1 when events at one instant are not in the (exit, enter, dwell) order
    (see :func:`tie_order`), with ``enters`` (zeros, one per device) filled with each device's enters."""
    n = len(ts)
    if n and ts[0] != ts[0]:
        return -1
    ties = 0
    for i in range(1, n):
        if not ts[i] >= ts[i - 1]:
            return -1
        if ts[i] == ts[i - 1] and kind[i] < kind[i - 1]:
            ties = 1
    for i in range(n):
        k = kind[i]
        if k != EXIT and k != ENTER and k != DWELL:
            return -1
        if k == ENTER:
            enters[device[i]] += 1
    return ties


@njit
def tie_order(ts: np.ndarray, kind: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """The order in which to take a log in time order: at each instant, exits first, then enters, then
    dwells, each kind in log order (per device, the stable (time, kind) order of :func:`sort_groups`)."""
    n = len(ts)
    order = np.arange(n)
    i = 0
    while i < n:
        j = i + 1
        in_order = True
        while j < n and ts[j] == ts[i]:
            if kind[j] < kind[j - 1]:
                in_order = False
            j += 1
        if not in_order:
            q = i
            for want in (EXIT, ENTER, DWELL):
                for r in range(i, j):
                    if kind[r] == want:
                        order[q] = r
                        q += 1
        i = j
    return order


@njit
def visits_in_time_order(ts: np.ndarray, kind: np.ndarray, device: np.ndarray, fence: np.ndarray,
                         dwell: np.ndarray, prob: np.ndarray, has_prob: bool, v_starts: np.ndarray,
                         v_dev: np.ndarray, v_fence: np.ndarray, v_ts: np.ndarray, v_dwell: np.ndarray,
                         v_prob: np.ndarray, v_closed: np.ndarray, v_repeat: np.ndarray, n_fences: int,
                         order: np.ndarray, nxt: np.ndarray, head: np.ndarray) -> bool:  # pragma: no cover - numba
    """:func:`build_visits` for a log that :func:`scan_log` found in time order, without grouping its
    events: one walk in log order builds the visits, which are then put in device order.

    The events are taken in log order, or in ``order`` (:func:`tie_order`) when it is not empty:
    per device, the stable (time, kind) order :func:`sort_groups` gives. Each device's open
    visits (one at most per fence) form a list through ``nxt`` from ``head`` (-1s, one per device),
    usually of none or one, so finding the visit an event belongs to reads a slot or two. With few
    devices an enter is written straight to its place among its device's visits (``v_starts``, from
    the enter counts); with many (a million), where that would be a cache miss a column, it is
    written first to the bucket of its device's high bits (a thousand sequential write streams, as
    in :func:`group_rows`), where its later events still find it in the cache; each bucket, which
    fits in the cache, is then put in device order in place. Returns False, with the outputs
    unfinished, when a device has more than :data:`MAX_OPEN` visits open at once (then group instead).
    Fills the same columns as :func:`build_visits` (``v_closed`` and ``v_repeat`` given as zeros)."""
    n, n_dev = len(ts), len(v_starts) - 1
    lo = 0  # bucket b holds devices [b << lo, (b + 1) << lo): with lo 0, each device is its own
    if n_dev > ONE_PASS_CODES:
        bits = 0
        while (1 << bits) < n_dev:
            bits += 1
        lo = bits - min(11, (bits + 1) // 2)
    n_b = ((n_dev - 1) >> lo) + 1 if n_dev else 0
    pos = np.empty(n_b, np.int64)
    for b in range(n_b):
        pos[b] = v_starts[b << lo]
    has_order = len(order) > 0
    for q in range(n):
        r = order[q] if has_order else q
        kd = kind[r]
        d, f = device[r], fence[r]
        prev, cur, steps = -1, head[d], 0
        while cur >= 0 and v_fence[cur] != f:
            prev, cur = cur, nxt[cur]
            steps += 1
            if steps > MAX_OPEN:
                return False
        if kd == ENTER:
            if cur >= 0:  # an enter without an exit: the earlier visit stays open, with no more events
                if prev < 0:
                    head[d] = nxt[cur]
                else:
                    nxt[prev] = nxt[cur]
            b = d >> lo
            k = pos[b]
            pos[b] = k + 1
            v_dev[k] = d
            v_fence[k] = f
            v_ts[k] = ts[r]
            v_dwell[k] = dwell[r]
            v_prob[k] = prob[r] if has_prob else np.nan
            nxt[k] = head[d]
            head[d] = k
        elif cur >= 0:
            if dwell[r] > v_dwell[cur]:
                v_dwell[cur] = dwell[r]
            if has_prob:
                p = prob[r]
                if p == p and not (v_prob[cur] >= p):
                    v_prob[cur] = p
            if kd == EXIT:
                v_closed[cur] = True
                if prev < 0:
                    head[d] = nxt[cur]
                else:
                    nxt[prev] = nxt[cur]
    if lo > 0:
        _buckets_in_device_order(v_starts, lo, v_dev, v_fence, v_ts, v_dwell, v_prob, v_closed)
    seen = np.full(n_fences, -1, np.int64)
    for k in range(v_starts[n_dev]):  # visits of a device by start: an earlier one to the same fence?
        f, d = v_fence[k], v_dev[k]
        v_repeat[k] = seen[f] == d
        seen[f] = d
    return True


@njit
def _buckets_in_device_order(v_starts: np.ndarray, lo: int, v_dev: np.ndarray, v_fence: np.ndarray,
                             v_ts: np.ndarray, v_dwell: np.ndarray, v_prob: np.ndarray,
                             v_closed: np.ndarray) -> None:  # pragma: no cover - numba
    """Each bucket of visits (devices ``[b << lo, (b + 1) << lo)``, in log order) put in device order in
    place, stable (a counting sort through a copy of the bucket)."""
    n_dev = len(v_starts) - 1
    n_b = ((n_dev - 1) >> lo) + 1
    biggest = 0
    for b in range(n_b):
        biggest = max(biggest, v_starts[min(n_dev, (b + 1) << lo)] - v_starts[b << lo])
    s_dev, s_fence = np.empty(biggest, v_dev.dtype), np.empty(biggest, v_fence.dtype)
    s_ts, s_dwell, s_prob = np.empty(biggest), np.empty(biggest), np.empty(biggest)
    s_closed = np.empty(biggest, np.bool_)
    cpos = np.empty(1 << lo, np.int64)
    for b in range(n_b):
        c0, c1 = b << lo, min(n_dev, (b + 1) << lo)
        a, e = v_starts[c0], v_starts[c1]
        for j in range(a, e):
            s_dev[j - a], s_fence[j - a], s_ts[j - a] = v_dev[j], v_fence[j], v_ts[j]
            s_dwell[j - a], s_prob[j - a], s_closed[j - a] = v_dwell[j], v_prob[j], v_closed[j]
        for c in range(c0, c1):
            cpos[c - c0] = v_starts[c]
        for j in range(e - a):
            q = s_dev[j] - c0
            k = cpos[q]
            cpos[q] = k + 1
            v_dev[k], v_fence[k], v_ts[k] = s_dev[j], s_fence[j], s_ts[j]
            v_dwell[k], v_prob[k], v_closed[k] = s_dwell[j], s_prob[j], s_closed[j]


@njit
def _qualifies(v: int, c: int, v_fence: np.ndarray, v_dwell: np.ndarray, v_prob: np.ndarray,
               place_ok: np.ndarray, min_dwell: np.ndarray, min_prob: np.ndarray) -> bool:  # pragma: no cover
    if not place_ok[c, v_fence[v]]:
        return False
    if v_dwell[v] < min_dwell[c]:
        return False
    p = v_prob[v]
    return not (min_prob[c] > 0 and p == p and p < min_prob[c])


#: columns of grouped exposure rows (the index breaks ties of time: input order; treated: 0 holdout, 1 not)
X_TS, X_INDEX, X_CAMPAIGN, X_TREATED = 0, 1, 2, 3


@njit
def convert(x_rows: np.ndarray, x_starts: np.ndarray, n_exposures: int,
            v_starts: np.ndarray, v_fence: np.ndarray, v_ts: np.ndarray, v_dwell: np.ndarray, v_prob: np.ndarray,
            place_ok: np.ndarray, within: np.ndarray, min_dwell: np.ndarray, min_prob: np.ndarray,
            attribution: int, out: np.ndarray, cand: np.ndarray, final: np.ndarray) -> None:  # pragma: no cover
    """For each exposure, the visit that converts it (-1: none).

    Exposure rows (``ts, index, campaign``; grouped by device, sorted by time
    within a device) and visits (grouped the same way, sorted by start) of one
    device are walked together. An exposure's candidate is its first visit
    that starts strictly after it, within its campaign's window, at one of its
    places, long and probable enough. With ``LAST`` attribution, when several
    exposures (any campaign) have the same candidate, the latest of them converts
    with it and the others do not; with ``EACH`` every exposure converts with its
    candidate. Fills ``out`` (by exposure), ``cand`` (by grouped row: the first qualifying visit) and
    ``final`` (by grouped row: the converting visit), all given as -1.
    """
    n_dev = len(x_starts) - 1
    for d in range(n_dev):
        ea, eb = x_starts[d], x_starts[d + 1]
        if eb == ea or d + 1 >= len(v_starts):
            continue
        va, vb = v_starts[d], v_starts[d + 1]
        if vb == va:
            continue
        nxt = va
        for i in range(ea, eb):
            c = int(x_rows[i, X_CAMPAIGN])
            t = x_rows[i, X_TS]
            while nxt < vb and v_ts[nxt] <= t:
                nxt += 1
            for v in range(nxt, vb):
                if v_ts[v] > t + within[c]:
                    break
                if _qualifies(v, c, v_fence, v_dwell, v_prob, place_ok, min_dwell, min_prob):
                    cand[i] = v
                    break
        for i in range(ea, eb):
            v = cand[i]
            if v < 0:
                continue
            if attribution == LAST:
                for j in range(i + 1, eb):  # a later exposure whose first qualifying visit is the same one wins
                    if x_rows[j, X_TS] >= v_ts[v]:
                        break
                    if cand[j] == v:
                        v = -1
                        break
            final[i] = v
            out[int(x_rows[i, X_INDEX])] = v


@njit
def cluster_sums(x_rows: np.ndarray, x_starts: np.ndarray, row_visit: np.ndarray, n_campaigns: int):  # pragma: no cover
    """Per campaign and group (0 holdout, 1 treated), over devices: exposures N, conversions X, devices K,
    and the sums of n_i^2, x_i n_i, x_i^2 of each device's exposures n_i and conversions x_i (the
    cluster-robust variance of a rate whose unit of assignment is the device)."""
    acc = np.zeros((n_campaigns, 2, 6))
    n_c = np.zeros(n_campaigns)
    x_c = np.zeros(n_campaigns)
    t_c = np.zeros(n_campaigns, np.int64)
    stamp = np.full(n_campaigns, -1, np.int64)
    touched = np.empty(n_campaigns, np.int64)
    for d in range(len(x_starts) - 1):
        m = 0
        for i in range(x_starts[d], x_starts[d + 1]):
            c = int(x_rows[i, X_CAMPAIGN])
            if stamp[c] != d:
                stamp[c] = d
                n_c[c] = 0.0
                x_c[c] = 0.0
                t_c[c] = int(x_rows[i, X_TREATED])
                touched[m] = c
                m += 1
            n_c[c] += 1.0
            if row_visit[i] >= 0:
                x_c[c] += 1.0
        for j in range(m):
            c = touched[j]
            t = t_c[c]
            n, x = n_c[c], x_c[c]
            acc[c, t, 0] += n
            acc[c, t, 1] += x
            acc[c, t, 2] += 1.0
            acc[c, t, 3] += n * n
            acc[c, t, 4] += x * n
            acc[c, t, 5] += x * x
    return acc


@njit
def store_days(ts: np.ndarray, fence: np.ndarray, day_starts: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[i] = fence[i] * n_days + d`` where ``day_starts[d] <= ts[i] < day_starts[d + 1]`` (local
    midnights, covering every ``ts``): the day as ``searchsorted(side="right") - 1`` finds it, from a
    guess at 24 h a day that a DST day moves by one at most."""
    n_days = len(day_starts)
    t0 = day_starts[0]
    for i in range(len(ts)):
        t = ts[i]
        d = min(max(int((t - t0) / 86400.0), 0), n_days - 1)
        while d > 0 and day_starts[d] > t:
            d -= 1
        while d + 1 < n_days and day_starts[d + 1] <= t:
            d += 1
        out[i] = fence[i] * n_days + d


@njit
def store_day_visitors(v_starts: np.ndarray, sd: np.ndarray, repeat: np.ndarray, n_sd: int):  # pragma: no cover
    """Per store-day: unique visitors, and those of them with a repeat visit (an earlier one to that store).
    One pass over the visits grouped by device, stamping each store-day with the device last counted."""
    unique = np.zeros(n_sd, np.int64)
    returning = np.zeros(n_sd, np.int64)
    counted = np.full(n_sd, -1, np.int64)
    counted_rep = np.full(n_sd, -1, np.int64)
    for d in range(len(v_starts) - 1):
        for j in range(v_starts[d], v_starts[d + 1]):
            k = sd[j]
            if counted[k] != d:
                counted[k] = d
                unique[k] += 1
            if repeat[j] and counted_rep[k] != d:
                counted_rep[k] = d
                returning[k] += 1
    return unique, returning


@njit
def closed_dwells_by_key(key: np.ndarray, closed: np.ndarray, dwell: np.ndarray,
                         bounds: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """The ``dwell`` of the closed rows grouped by ``key`` (each key's rows ``bounds[k]:bounds[k + 1]``;
    ``bounds`` given as zeros, one more than the keys), in no set order within a key: for medians.
    One count and one scatter, straight from the columns (no copies of the closed rows first)."""
    n_keys = len(bounds) - 1
    for j in range(len(key)):
        if closed[j]:
            bounds[key[j] + 1] += 1
    for k in range(n_keys):
        bounds[k + 1] += bounds[k]
    pos = bounds[:-1].copy()
    out = np.empty(bounds[n_keys], np.float64)
    for j in range(len(key)):
        if closed[j]:
            k = key[j]
            out[pos[k]] = dwell[j]
            pos[k] += 1
    return out


@njit
def group_medians(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """The median of column 0 of each group's rows (NaN for an empty group)."""
    n = len(starts) - 1
    out = np.full(n, np.nan)
    for g in range(n):
        a, b = starts[g], starts[g + 1]
        if b > a:
            out[g] = np.median(rows[a:b, 0])
    return out
