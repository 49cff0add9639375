"""The index's kernels, matching: pings in tile order, each against the fences of its cells, into sorted (point, slot, confidence) pairs.

Part of :mod:`geofence._kernels` (its doc describes the arrays' layout).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from geofence._kernels_geometry import (
    BOUNDARY,
    INSIDE,
    OUTSIDE,
    _lon_shift,
    distance_m,
    edge_within,
    locate_polygon,
    metres_per_degree,
)
from geofence._kernels_grid import cell_index, cell_key, lon_pieces, lookup, occupied
from proxbase.jit import njit

# ---------------------------------------------------------------- matching

@njit
def spatial_order(lon, lat, acc, use_acc, only_occupied, levels, cs0, meta, bits, order, slon, slat, sacc, tile):
    """Group the ping indices by a coarse tile (counting sort), so that nearby pings are processed together:
    writes into ``order``, ``slon``, ``slat`` (and ``sacc``) the indices and coordinates (and accuracies)
    in that order and returns how many there are. Pings with a non-finite coordinate are left out, and
    with ``only_occupied`` those whose cell is empty on every level of the occupancy bitmaps (they can
    match nothing: the caller knows there is no delta table and no accuracy).

    The buffers (``tile`` too, int32) are the caller's, reused from call to call (fresh arrays of this
    size cost more in page faults than the sort itself), and at least as long as ``lon``."""
    n = lon.shape[0]
    nl = levels.shape[0]
    cell_inv = np.empty(nl)  # per level, computed as the rasterisers do (same cells)
    for li in range(nl):
        cell_inv[li] = 1.0 / (cs0 * (2.0 ** levels[li]))
    minx = np.inf
    miny = np.inf
    maxx = -np.inf
    maxy = -np.inf
    good = 0
    for i in range(n):
        px = lon[i]
        py = lat[i]
        keep = math.isfinite(px) and math.isfinite(py)
        if keep and only_occupied:
            keep = False
            for li in range(nl):
                if occupied(meta, bits, li, cell_index(px, 180.0, cell_inv[li]), cell_index(py, 90.0, cell_inv[li])):
                    keep = True
                    break
        if keep:
            minx = min(minx, px)
            maxx = max(maxx, px)
            miny = min(miny, py)
            maxy = max(maxy, py)
            good += 1
            tile[i] = 0
        else:
            tile[i] = -1
    # at most 64 x 64 tiles: finer tiles bought no locality that paid for the scattered writes of the
    # sort (1M city pings, 10k fences: 512 x 512 tiles cost 26 ms to sort and saved 1 ms of matching)
    g = 1
    while g < 64 and g * g * 8 < good:
        g *= 2
    sx = g / max(maxx - minx, 1e-12)
    sy = g / max(maxy - miny, 1e-12)
    starts = np.zeros(g * g + 1, dtype=np.int64)
    for i in range(n):
        if tile[i] >= 0:
            tx = min(g - 1, int((lon[i] - minx) * sx))
            ty = min(g - 1, int((lat[i] - miny) * sy))
            if ty & 1:  # serpentine rows keep consecutive tiles adjacent
                tx = g - 1 - tx
            t = ty * g + tx
            tile[i] = t
            starts[t + 1] += 1
    for t in range(g * g):
        starts[t + 1] += starts[t]
    for i in range(n):  # sequential reads, scattered writes (cheaper than a gather's scattered reads)
        t = tile[i]
        if t >= 0:
            k = starts[t]
            order[k] = i
            slon[k] = lon[i]
            slat[k] = lat[i]
            if use_acc:
                sacc[k] = acc[i]
            starts[t] = k + 1
    return good


@njit
def _sort_tail(out_s, out_c, start, end):
    # insertion sort of one point's results by slot (a handful of entries)
    for a in range(start + 1, end):
        sv = out_s[a]
        cv = out_c[a]
        b = a - 1
        while b >= start and out_s[b] > sv:
            out_s[b + 1] = out_s[b]
            out_c[b + 1] = out_c[b]
            b -= 1
        out_s[b + 1] = sv
        out_c[b + 1] = cv


@njit
def _polygon_conf(px, py, a, s, kx, ky, rx, ry, rec, cells, refs, seg):
    where = locate_polygon(px, py, s, rec, cells, refs, seg)
    if where == INSIDE:
        if a > 0.0 and edge_within(px, py, s, a, kx, ky, rx, ry, rec, cells, refs, seg, True):
            return 2
        return 3
    if where == BOUNDARY:
        return 2
    if a == 0.0:
        return 0
    sh = _lon_shift(rec[s, 1], rec[s, 3], px)
    if not (rec[s, 1] + sh - rx <= px <= rec[s, 3] + sh + rx and rec[s, 2] - ry <= py <= rec[s, 4] + ry):
        return 0
    if edge_within(px, py, s, a, kx, ky, rx, ry, rec, cells, refs, seg, False):
        return 1
    return 0


@njit
def _scan_point(htab, ents, key, i, px, py, rec, cells, refs, seg, out_p, out_s, out_c, m, end):
    e0, e1 = lookup(htab, key)
    for e in range(e0, e1):
        ent = ents[e]
        s = ent >> 1
        kind = rec[s, 0]
        if kind < 0.0:
            continue
        hit = (ent & 1) == 1
        if not hit:
            if kind == 1.0:
                hit = distance_m(rec[s, 1], rec[s, 2], px, py) <= rec[s, 3]
            else:
                hit = locate_polygon(px, py, s, rec, cells, refs, seg) != OUTSIDE
        if hit:
            if m == end:
                return -1
            out_p[m] = i
            out_s[m] = s
            out_c[m] = 2
            m += 1
    return m


@njit
def _scan_accuracy(htab, ents, key, i, px, py, a, kx, ky, rx, ry, rec, cells, refs, seg, stamp,
                   out_p, out_s, out_c, m, end):
    e0, e1 = lookup(htab, key)
    for e in range(e0, e1):
        s = ents[e] >> 1
        kind = rec[s, 0]
        if kind < 0.0 or stamp[s] == i:
            continue
        stamp[s] = i
        conf = 0
        if kind == 1.0:
            d = distance_m(rec[s, 1], rec[s, 2], px, py)
            r = rec[s, 3]
            if d + a <= r:
                conf = 3
            elif d <= r:
                conf = 2
            elif d <= r + a:
                conf = 1
        else:
            conf = _polygon_conf(px, py, a, s, kx, ky, rx, ry, rec, cells, refs, seg)
        if conf > 0:
            if m == end:
                return -1
            out_p[m] = i
            out_s[m] = s
            out_c[m] = conf
            m += 1
    return m


@njit
def _match_range(order, lo, hi, lon, lat, acc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1, ents1, rec,
                 cells, refs, seg, out_p, out_s, out_c, base, cap, stamp):
    """Match pings order[lo:hi] into out_*[base:base + cap]; the number written, or -1 when full.

    ``lon``, ``lat`` and ``acc`` are already in processing order (``order[k]`` is the ping's index).
    """
    m = base
    end = base + cap
    cell_inv = np.empty(levels.shape[0])  # per level, computed as the rasterisers do (same cells)
    for li in range(levels.shape[0]):
        cell_inv[li] = 1.0 / (cs0 * (2.0 ** levels[li]))
    for k in range(lo, hi):
        i = order[k]
        px = lon[k]
        py = lat[k]
        start = m
        if not use_acc:
            for li in range(levels.shape[0]):
                lv = levels[li]
                inv = cell_inv[li]
                ix = cell_index(px, 180.0, inv)
                iy = cell_index(py, 90.0, inv)
                key = cell_key(lv, ix, iy)
                if occupied(meta, bits, li, ix, iy):
                    m = _scan_point(htab0, ents0, key, i, px, py, rec, cells, refs, seg, out_p, out_s,
                                    out_c, m, end)
                    if m < 0:
                        return -1
                if ents1.shape[0]:
                    m = _scan_point(htab1, ents1, key, i, px, py, rec, cells, refs, seg, out_p, out_s,
                                    out_c, m, end)
                    if m < 0:
                        return -1
        else:
            a = acc[k]
            kx, ky = metres_per_degree(py)
            ry = a / ky
            rx = a / kx if kx * 180.0 > a else 360.0
            # the search box is 1% wider: circle fences measure at the mid-latitude
            pieces = lon_pieces(px - rx * 1.01, px + rx * 1.01)
            for li in range(levels.shape[0]):
                lv = levels[li]
                inv = cell_inv[li]
                iy0 = cell_index(max(-90.0, py - ry * 1.01), 90.0, inv)
                iy1 = cell_index(min(90.0, py + ry * 1.01), 90.0, inv)
                for p in range(pieces.shape[0]):
                    ix0 = cell_index(pieces[p, 0], 180.0, inv)
                    ix1 = cell_index(pieces[p, 1], 180.0, inv)
                    for gy in range(iy0, iy1 + 1):
                        for gx in range(ix0, ix1 + 1):
                            key = cell_key(lv, gx, gy)
                            if occupied(meta, bits, li, gx, gy):
                                m = _scan_accuracy(htab0, ents0, key, i, px, py, a, kx, ky, rx, ry, rec,
                                                   cells, refs, seg, stamp, out_p, out_s, out_c, m, end)
                                if m < 0:
                                    return -1
                            if ents1.shape[0]:
                                m = _scan_accuracy(htab1, ents1, key, i, px, py, a, kx, ky, rx, ry, rec,
                                                   cells, refs, seg, stamp, out_p, out_s, out_c, m, end)
                                if m < 0:
                                    return -1
        if m - start > 1:
            _sort_tail(out_s, out_c, start, m)
    return m - base


@njit
def _grow_run(order, lo, hi, lon, lat, acc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1, ents1, rec, cells, refs,
              seg, cap):
    stamp = np.full(rec.shape[0], -1, dtype=np.int64)
    while True:
        out_p = np.empty(cap, dtype=np.int64)
        out_s = np.empty(cap, dtype=np.int64)
        out_c = np.empty(cap, dtype=np.int8)
        got = _match_range(order, lo, hi, lon, lat, acc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1, ents1, rec,
                           cells, refs, seg, out_p, out_s, out_c, 0, cap, stamp)
        if got >= 0:
            return out_p[:got], out_s[:got], out_c[:got]
        stamp[:] = -1
        cap *= 4


@njit
def _plan(lon, lat, acc, use_acc, nchunks, levels, cs0, meta, bits, ents1, w_order, w_lon, w_lat, w_acc, w_tile):
    """Processing order (pings grouped by tile) and the pings in it that may match something, in views of
    the work buffers ``w_*``; chunking; each chunk's share of the output arrays, and its count (``got``)."""
    only_occupied = not use_acc and ents1.shape[0] == 0
    good = spatial_order(lon, lat, acc, use_acc, only_occupied, levels, cs0, meta, bits, w_order, w_lon, w_lat,
                         w_acc, w_tile)
    order = w_order[:good]
    slon = w_lon[:good]
    slat = w_lat[:good]
    sacc = w_acc[:good] if use_acc else w_acc[:0]
    nchunks = max(1, min(nchunks, good // 2048 + 1))
    chunk = (good + nchunks - 1) // nchunks
    cap = 4096 + 2 * chunk
    out_p = np.empty(nchunks * cap, dtype=np.int64)
    out_s = np.empty(nchunks * cap, dtype=np.int64)
    out_c = np.empty(nchunks * cap, dtype=np.int8)
    got = np.zeros(nchunks, dtype=np.int64)
    return order, slon, slat, sacc, nchunks, chunk, cap, out_p, out_s, out_c, got


@njit
def _run_chunk(c, order, chunk, cap, slon, slat, sacc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1, ents1,
               rec, cells, refs, seg, out_p, out_s, out_c):
    """Match chunk c of the pings (in processing order) into its share of the output."""
    lo = c * chunk
    hi = min(order.shape[0], lo + chunk)
    stamp = np.full(rec.shape[0] if use_acc else 0, -1, dtype=np.int64)
    return _match_range(order, lo, hi, slon, slat, sacc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1,
                        ents1, rec, cells, refs, seg, out_p, out_s, out_c, c * cap, cap, stamp)


@njit
def _collect(n, got, order, chunk, cap, slon, slat, sacc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1, ents1,
             rec, cells, refs, seg, out_p, out_s, out_c, w_counts):
    """Redo chunks that overflowed their share with room to grow, then scatter every point's run of
    pairs to its place in point order (``w_counts``: a work buffer of at least ``n + 1``)."""
    nchunks = got.shape[0]
    good = order.shape[0]
    extra_p = []
    extra_s = []
    extra_c = []
    for c in range(nchunks):
        if got[c] < 0:
            lo = c * chunk
            hi = min(good, lo + chunk)
            p, s, cc = _grow_run(order, lo, hi, slon, slat, sacc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1,
                                 ents1, rec, cells, refs, seg, 8 * cap)
            extra_p.append(p)
            extra_s.append(s)
            extra_c.append(cc)
    counts = w_counts[: n + 1]
    counts[:] = 0
    total = 0
    for c in range(nchunks):
        for k in range(c * cap, c * cap + max(got[c], 0)):
            counts[out_p[k] + 1] += 1
        total += max(got[c], 0)
    for x in range(len(extra_p)):
        for k in range(extra_p[x].shape[0]):
            counts[extra_p[x][k] + 1] += 1
        total += extra_p[x].shape[0]
    for i in range(n):
        counts[i + 1] += counts[i]
    res_p = np.empty(total, dtype=np.int64)
    res_s = np.empty(total, dtype=np.int64)
    res_c = np.empty(total, dtype=np.int8)
    for c in range(nchunks):
        for k in range(c * cap, c * cap + max(got[c], 0)):
            d = counts[out_p[k]]
            counts[out_p[k]] += 1
            res_p[d] = out_p[k]
            res_s[d] = out_s[k]
            res_c[d] = out_c[k]
    for x in range(len(extra_p)):
        for k in range(extra_p[x].shape[0]):
            d = counts[extra_p[x][k]]
            counts[extra_p[x][k]] += 1
            res_p[d] = extra_p[x][k]
            res_s[d] = extra_s[x][k]
            res_c[d] = extra_c[x][k]
    return res_p, res_s, res_c


@njit
def match(lon, lat, acc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1, ents1, rec, cells, refs, seg,
          w_order, w_lon, w_lat, w_acc, w_tile, w_counts):
    """Pairs (point, slot, confidence), sorted by point then slot; on the calling thread.

    Without accuracy every pair has confidence 2 (the point is inside or on the
    boundary). With accuracy: 3 the circle lies fully inside, 2 the point is
    inside, 1 the point is outside but within ``acc`` metres of the fence.
    ``w_*`` are work buffers, overwritten: ``w_order``, ``w_lon``, ``w_lat``, ``w_tile`` (int32) at
    least as long as ``lon``, ``w_acc`` too when ``use_acc``, ``w_counts`` one longer.
    """
    order, slon, slat, sacc, nchunks, chunk, cap, out_p, out_s, out_c, got = _plan(
        lon, lat, acc, use_acc, 1, levels, cs0, meta, bits, ents1, w_order, w_lon, w_lat, w_acc, w_tile)
    for c in range(nchunks):
        got[c] = _run_chunk(c, order, chunk, cap, slon, slat, sacc, use_acc, levels, cs0, meta, bits,
                            htab0, ents0, htab1, ents1, rec, cells, refs, seg, out_p, out_s, out_c)
    return _collect(lon.shape[0], got, order, chunk, cap, slon, slat, sacc, use_acc, levels, cs0, meta, bits, htab0,
                    ents0, htab1, ents1, rec, cells, refs, seg, out_p, out_s, out_c, w_counts)


@njit(parallel=True)
def match_parallel(lon, lat, acc, use_acc, levels, cs0, meta, bits, htab0, ents0, htab1, ents1, rec, cells, refs,
                   seg, w_order, w_lon, w_lat, w_acc, w_tile, w_counts, nchunks):
    """:func:`match` with the chunks spread over numba's threads (one parallel region)."""
    order, slon, slat, sacc, nchunks, chunk, cap, out_p, out_s, out_c, got = _plan(
        lon, lat, acc, use_acc, nchunks, levels, cs0, meta, bits, ents1, w_order, w_lon, w_lat, w_acc, w_tile)
    for c in prange(nchunks):
        got[c] = _run_chunk(c, order, chunk, cap, slon, slat, sacc, use_acc, levels, cs0, meta, bits,
                            htab0, ents0, htab1, ents1, rec, cells, refs, seg, out_p, out_s, out_c)
    return _collect(lon.shape[0], got, order, chunk, cap, slon, slat, sacc, use_acc, levels, cs0, meta, bits, htab0,
                    ents0, htab1, ents1, rec, cells, refs, seg, out_p, out_s, out_c, w_counts)
