"""The index's kernels, the grids: cell keys, rasterising fences into cells, the hash tables and the occupancy bitmaps.

Part of :mod:`geofence._kernels` (its doc describes the arrays' layout).
"""

from __future__ import annotations

import math

import numpy as np

from geofence._kernels_geometry import (
    EMPTY,
    INSIDE,
    KEY_BITS,
    band_cells,
    band_table,
    distance_m,
    locate_polygon,
    wrap,
)
from proxbase.jit import njit


@njit
def cell_key(level, ix, iy):
    return (np.int64(level) << 58) | (np.int64(iy) << KEY_BITS) | np.int64(ix)


@njit
def cell_index(v, origin, inv):
    # ``inv`` is 1 / cell side, computed as ``1.0 / (cs0 * 2.0 ** level)`` by every caller (same cells)
    return np.int64(math.floor((v + origin) * inv))


@njit
def _segment_touches_box(x1, y1, x2, y2, xmin, ymin, xmax, ymax):
    # Liang-Barsky clip of the segment against the (closed) box
    t0 = 0.0
    t1 = 1.0
    dx = x2 - x1
    dy = y2 - y1
    for p, q in ((-dx, x1 - xmin), (dx, xmax - x1), (-dy, y1 - ymin), (dy, ymax - y1)):
        if p == 0.0:
            if q < 0.0:
                return False
        else:
            t = q / p
            if p < 0.0:
                if t > t1:
                    return False
                t0 = max(t0, t)
            else:
                if t < t0:
                    return False
                t1 = min(t1, t)
    return True


@njit
def _push(keys, ents, n, key, ent):
    if n == keys.shape[0]:
        cap = max(16, 2 * n)
        k2 = np.empty(cap, dtype=np.int64)
        e2 = np.empty(cap, dtype=np.int64)
        for i in range(n):  # a loop, not a slice assignment: see _grow2
            k2[i] = keys[i]
            e2[i] = ents[i]
        keys, ents = k2, e2
    keys[n] = key
    ents[n] = ent
    return keys, ents, n + 1


@njit
def raster_polygons(new_slots, level, cs0, rec, cells, refs, seg):
    """Cell entries (key, slot * 2 + flag) of polygon slots: flag 1 covered, 0 crossed by the boundary."""
    cap = 64 + 16 * new_slots.shape[0]
    keys = np.empty(cap, dtype=np.int64)
    ents = np.empty(cap, dtype=np.int64)
    n = 0
    for i in range(new_slots.shape[0]):
        s = new_slots[i]
        lv = level[i]
        cs = cs0 * (2.0 ** lv)
        inv = 1.0 / cs
        eps = cs * 1e-7
        ix0 = cell_index(rec[s, 1], 180.0, inv)
        ix1 = cell_index(rec[s, 3], 180.0, inv)
        iy0 = cell_index(rec[s, 2], 90.0, inv)
        iy1 = cell_index(rec[s, 4], 90.0, inv)
        nx = ix1 - ix0 + 1
        ny = iy1 - iy0 + 1
        touched = np.zeros(nx * ny, dtype=np.bool_)
        bstart, nb = band_table(rec, s)
        first, _ = band_cells(cells, bstart)
        last, nc = band_cells(cells, bstart + nb - 1)
        # a polygon's edges are contiguous, its cells in band order
        for j in range(np.int64(cells[first, 0]) >> 2, np.int64(cells[last + nc - 1, 1])):
            x1 = seg[j, 0]
            y1 = seg[j, 1]
            x2 = seg[j, 2]
            y2 = seg[j, 3]
            ex0 = max(ix0, cell_index(min(x1, x2) - eps, 180.0, inv))
            ex1 = min(ix1, cell_index(max(x1, x2) + eps, 180.0, inv))
            ey0 = max(iy0, cell_index(min(y1, y2) - eps, 90.0, inv))
            ey1 = min(iy1, cell_index(max(y1, y2) + eps, 90.0, inv))
            for cy in range(ey0, ey1 + 1):
                for cx in range(ex0, ex1 + 1):
                    idx = (cy - iy0) * nx + (cx - ix0)
                    if touched[idx]:
                        continue
                    bx0 = cx * cs - 180.0 - eps
                    by0 = cy * cs - 90.0 - eps
                    if _segment_touches_box(x1, y1, x2, y2, bx0, by0, bx0 + cs + 2 * eps, by0 + cs + 2 * eps):
                        touched[idx] = True
        for cy in range(iy0, iy1 + 1):
            for cx in range(ix0, ix1 + 1):
                idx = (cy - iy0) * nx + (cx - ix0)
                if touched[idx]:
                    keys, ents, n = _push(keys, ents, n, cell_key(lv, cx, cy), s * 2)
                else:
                    mx = (cx + 0.5) * cs - 180.0
                    my = (cy + 0.5) * cs - 90.0
                    if locate_polygon(mx, my, s, rec, cells, refs, seg) == INSIDE:
                        keys, ents, n = _push(keys, ents, n, cell_key(lv, cx, cy), s * 2 + 1)
    return keys[:n], ents[:n]


@njit
def lon_pieces(lo, hi):
    """Split a longitude interval that may leave [-180, 180] into at most two inside it."""
    out = np.empty((2, 2))
    if hi - lo >= 360.0:
        out[0, 0] = -180.0
        out[0, 1] = 180.0
        return out[:1]
    k = 0
    out[k, 0] = max(lo, -180.0)
    out[k, 1] = min(hi, 180.0)
    k += 1
    if lo < -180.0:
        out[k, 0] = lo + 360.0
        out[k, 1] = 180.0
        k += 1
    elif hi > 180.0:
        out[k, 0] = -180.0
        out[k, 1] = hi - 360.0
        k += 1
    return out[:k]


@njit
def raster_circles(new_slots, level, cs0, rec, dlon, dlat):
    cap = 64 + 16 * new_slots.shape[0]
    keys = np.empty(cap, dtype=np.int64)
    ents = np.empty(cap, dtype=np.int64)
    n = 0
    for i in range(new_slots.shape[0]):
        s = new_slots[i]
        lv = level[i]
        cs = cs0 * (2.0 ** lv)
        inv = 1.0 / cs
        cx = rec[s, 1]
        cy = rec[s, 2]
        r = rec[s, 3]
        iy0 = cell_index(max(-90.0, cy - dlat[i]), 90.0, inv)
        iy1 = cell_index(min(90.0, cy + dlat[i]), 90.0, inv)
        pieces = lon_pieces(cx - dlon[i], cx + dlon[i])
        for p in range(pieces.shape[0]):
            ix0 = cell_index(pieces[p, 0], 180.0, inv)
            ix1 = cell_index(pieces[p, 1], 180.0, inv)
            for gy in range(iy0, iy1 + 1):
                ylo = gy * cs - 90.0
                yhi = ylo + cs
                for gx in range(ix0, ix1 + 1):
                    xlo = gx * cs - 180.0
                    xhi = xlo + cs
                    # nearest and farthest points of the cell from the centre (longitude wrapped)
                    if xlo <= cx <= xhi:
                        nearx = cx
                    else:
                        dx = wrap(xlo - cx)
                        nearx = cx + min(max(0.0, dx), dx + cs)
                    neary = min(max(cy, ylo), yhi)
                    if distance_m(cx, cy, nearx, neary) > r * 1.05 + 1.0:
                        continue
                    dfar = 0.0
                    for qx in (xlo, xhi):
                        for qy in (ylo, yhi):
                            dfar = max(dfar, distance_m(cx, cy, qx, qy))
                    flag = 1 if dfar < r * 0.95 - 1.0 else 0
                    keys, ents, n = _push(keys, ents, n, cell_key(lv, gx, gy), s * 2 + flag)
    return keys[:n], ents[:n]


@njit
def _hash(key, mask):
    # splitmix64 finaliser of the key's 4 x 4 block of cells, plus the cell's place in its block:
    # neighbouring cells land in neighbouring table slots (pings are processed in spatial order)
    fine = (key & 3) | ((key >> (KEY_BITS - 2)) & 12)
    z = np.uint64(key & ~((np.int64(3) << KEY_BITS) | np.int64(3)))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (np.int64(z & np.uint64(mask)) + fine) & mask


@njit
def build_hash(keys):
    """Open-addressing table over entries sorted by key: rows (key, first entry, end entry)."""
    ncells = 0
    for e in range(keys.shape[0]):
        if e == 0 or keys[e] != keys[e - 1]:
            ncells += 1
    size = 16
    while size < 2 * ncells:
        size *= 2
    mask = size - 1
    htab = np.full((size, 3), EMPTY, dtype=np.int64)
    e = 0
    while e < keys.shape[0]:
        f = e + 1
        while f < keys.shape[0] and keys[f] == keys[e]:
            f += 1
        h = _hash(keys[e], mask)
        while htab[h, 0] != EMPTY:
            h = (h + 1) & mask
        htab[h, 0] = keys[e]
        htab[h, 1] = e
        htab[h, 2] = f
        e = f
    return htab


@njit
def lookup(htab, key):
    """(first, end) entries of the cell ``key`` (an empty range when absent)."""
    mask = htab.shape[0] - 1
    h = _hash(key, mask)
    while True:
        k = htab[h, 0]
        if k == key:
            return htab[h, 1], htab[h, 2]
        if k == EMPTY:
            return 0, 0
        h = (h + 1) & mask


@njit
def build_occupancy(keys, levels, max_bits):
    """Per level, a bitmap of the cells that have entries: ``meta[li] = (ox, oy, w, h, word offset)``
    (``w == 0``: no bitmap for that level, always probe the table)."""
    nl = levels.shape[0]
    meta = np.zeros((nl, 5), dtype=np.int64)
    lo_x = np.full(nl, np.iinfo(np.int64).max, dtype=np.int64)
    lo_y = np.full(nl, np.iinfo(np.int64).max, dtype=np.int64)
    hi_x = np.full(nl, -1, dtype=np.int64)
    hi_y = np.full(nl, -1, dtype=np.int64)
    mask = (np.int64(1) << KEY_BITS) - 1
    for e in range(keys.shape[0]):
        lv = keys[e] >> 58
        li = np.searchsorted(levels, lv)
        ix = keys[e] & mask
        iy = (keys[e] >> KEY_BITS) & mask
        lo_x[li] = min(lo_x[li], ix)
        hi_x[li] = max(hi_x[li], ix)
        lo_y[li] = min(lo_y[li], iy)
        hi_y[li] = max(hi_y[li], iy)
    words = 0
    for li in range(nl):
        if hi_x[li] < 0:
            continue
        w = hi_x[li] - lo_x[li] + 1
        h = hi_y[li] - lo_y[li] + 1
        if w * h > max_bits:
            continue
        meta[li, 0] = lo_x[li]
        meta[li, 1] = lo_y[li]
        meta[li, 2] = w
        meta[li, 3] = h
        meta[li, 4] = words
        words += (w * h + 63) // 64
    bits = np.zeros(words, dtype=np.uint64)
    for e in range(keys.shape[0]):
        li = np.searchsorted(levels, keys[e] >> 58)
        if meta[li, 2] == 0:
            continue
        ix = (keys[e] & mask) - meta[li, 0]
        iy = ((keys[e] >> KEY_BITS) & mask) - meta[li, 1]
        b = iy * meta[li, 2] + ix
        bits[meta[li, 4] + (b >> 6)] |= np.uint64(1) << np.uint64(b & 63)
    return meta, bits


@njit
def occupied(meta, bits, li, ix, iy):
    """Whether cell (ix, iy) of level li may have entries in the main table."""
    w = meta[li, 2]
    if w == 0:
        return True
    x = ix - meta[li, 0]
    y = iy - meta[li, 1]
    if x < 0 or y < 0 or x >= w or y >= meta[li, 3]:
        return False
    b = y * w + x
    return (bits[meta[li, 4] + (b >> 6)] >> np.uint64(b & 63)) & np.uint64(1) != 0
