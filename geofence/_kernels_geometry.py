"""The index's kernels, exact orientation, and the geometry of one fence: locating a point in a polygon's cells, metre distances, edges within a distance.

Part of :mod:`geofence._kernels` (its doc describes the arrays' layout).
"""

from __future__ import annotations

import math

import numpy as np

from proxbase.jit import njit

A = 6378137.0
E2 = (1.0 / 298.257223563) * (2.0 - 1.0 / 298.257223563)
DEG = math.pi / 180.0
KEY_BITS = 29
EMPTY = -1

OUTSIDE = 0
BOUNDARY = 1
INSIDE = 2

REC_WIDTH = 8
NB_BITS = 131072.0  # 2**17: rec[7] = bstart * NB_BITS + nb
MAX_BANDS = 1 << 16
MAX_COLS = 1 << 12
#: bands are capped so that an edge is copied into about this many cells at most, on average
CELL_BUDGET = 16.0
#: columns per band: this many per ``per_cell`` edges of the band
COLS_PER_EDGE = 1
#: a cell is at least this fraction of its coordinates' magnitude (plus one degree) a side
CELL_RES = 1e-10



# ---------------------------------------------------------------- exact orientation

@njit
def _two_sum(a, b):
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    return s, err


@njit
def _split(a):
    c = 134217729.0 * a
    hi = c - (c - a)
    return hi, a - hi


@njit
def _two_product(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    err = al * bl - (((p - ah * bh) - al * bh) - ah * bl)
    return p, err


@njit
def _exact_orient_sign(ax, ay, bx, by, cx, cy):
    # det = (ax - cx) * (by - cy) - (ay - cy) * (bx - cx), evaluated exactly.
    d1, d1e = _two_sum(ax, -cx)
    d2, d2e = _two_sum(by, -cy)
    d3, d3e = _two_sum(ay, -cy)
    d4, d4e = _two_sum(bx, -cx)
    terms = np.empty(16)
    k = 0
    for u, v, sign in ((d1, d2, 1.0), (d1, d2e, 1.0), (d1e, d2, 1.0), (d1e, d2e, 1.0),
                       (d3, d4, -1.0), (d3, d4e, -1.0), (d3e, d4, -1.0), (d3e, d4e, -1.0)):
        p, e = _two_product(u, v)
        terms[k] = sign * p
        terms[k + 1] = sign * e
        k += 2
    # grow an exact, non-overlapping expansion term by term (Shewchuk)
    exp = np.zeros(17)
    m = 0
    for t in range(16):
        q = terms[t]
        for i in range(m):
            q, h = _two_sum(q, exp[i])
            exp[i] = h
        exp[m] = q
        m += 1
    for i in range(m - 1, -1, -1):
        if exp[i] > 0.0:
            return 1
        if exp[i] < 0.0:
            return -1
    return 0


@njit
def orient(ax, ay, bx, by, cx, cy):
    """Sign of the turn a -> b -> c: 1 left (counter-clockwise), -1 right, 0 collinear. Exact."""
    detleft = (ax - cx) * (by - cy)
    detright = (ay - cy) * (bx - cx)
    det = detleft - detright
    if detleft > 0.0:
        if detright <= 0.0:
            return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
        detsum = detleft + detright
    elif detleft < 0.0:
        if detright >= 0.0:
            return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
        detsum = -detleft - detright
    else:
        return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
    errbound = 3.3306690738754716e-16 * detsum
    if det >= errbound:
        return 1
    if -det >= errbound:
        return -1
    return _exact_orient_sign(ax, ay, bx, by, cx, cy)


# ---------------------------------------------------------------- geometry on one fence

@njit
def band_of(y, y0, invh, nb):
    b = math.floor((y - y0) * invh)
    if b < 0:
        return 0
    if b >= nb:
        return nb - 1
    return int(b)


@njit
def col_of(x, minx, maxx, nc):
    """The column of longitude ``x`` in a band of ``nc`` equal columns over ``[minx, maxx]`` (clamped)."""
    w = maxx - minx
    if nc <= 1 or not w > 0.0:
        return 0
    c = math.floor((x - minx) * (nc / w))
    if c < 0:
        return 0
    if c >= nc:
        return nc - 1
    return int(c)


@njit
def band_table(rec, s):
    packed = rec[s, 7]
    bstart = np.int64(packed / NB_BITS)
    nb = np.int64(packed - bstart * NB_BITS)
    return bstart, nb


@njit
def band_cells(cells, row):
    """(first cell row, number of columns) of the band whose row in ``cells`` is ``row``."""
    head = cells[row, 0]
    if head < 0.0:
        return np.int64(-1.0 - head), np.int64(cells[row, 1])
    return np.int64(row), np.int64(1)


@njit
def cell_of(px, py, s, rec, cells):
    """The row in ``cells`` of the polygon cell that holds (px, py)."""
    bstart, nb = band_table(rec, s)
    row = bstart + band_of(py, rec[s, 5], rec[s, 6], nb)
    head = cells[row, 0]
    if head < 0.0:  # a band of several columns
        return np.int64(-1.0 - head) + col_of(px, rec[s, 1], rec[s, 3], np.int64(cells[row, 1]))
    return row


@njit
def _crosses(rx, ry, px, py, x1, y1, x2, y2, ob):
    """Whether segment r -> p crosses edge (x1, y1) -> (x2, y2), neither r nor p lying on the edge.

    ``ob`` is ``orient(edge, p)``. Vertices on the line r p count as lying on its right (a symbolic
    shift of the segment), so an edge chain through such a vertex is counted once or not at all and
    the parity of the crossings is the parity of the boundary crossings.
    """
    sa = orient(rx, ry, px, py, x1, y1) > 0
    sb = orient(rx, ry, px, py, x2, y2) > 0
    if sa == sb:
        return False
    oa = orient(x1, y1, x2, y2, rx, ry)
    return (oa > 0 and ob < 0) or (oa < 0 and ob > 0)


@njit
def locate_in_cell(px, py, c, cells, refs, seg):
    """OUTSIDE, BOUNDARY or INSIDE for a point of polygon cell ``c``: the cell's reference point's state,
    flipped by each crossing of the segment from it to the point with the cell's edges (the rule of
    :func:`_crosses`, computed here with the point-on-edge test folded in)."""
    head = np.int64(cells[c, 0])
    lo = head >> 2
    hi = np.int64(cells[c, 1])
    inside = head & 1
    if lo == hi:
        return INSIDE if inside else OUTSIDE
    if head & 2:
        # the last cell of a band: its reference is the point right of the polygon at the point's height
        # (outside), and the segment to it is GEOS's ray: one orientation test per edge it may cross
        crossings = 0
        for j in range(lo, hi):
            x1 = seg[j, 0]
            x2 = seg[j, 2]
            if x1 < px and x2 < px:
                continue
            y1 = seg[j, 1]
            y2 = seg[j, 3]
            if px == x2 and py == y2:
                return BOUNDARY
            if y1 == py and y2 == py:
                if min(x1, x2) <= px <= max(x1, x2):
                    return BOUNDARY
                continue
            if (y1 > py and y2 <= py) or (y2 > py and y1 <= py):
                o = orient(x1, y1, x2, y2, px, py)
                if o == 0:
                    return BOUNDARY
                if y2 < y1:
                    o = -o
                if o > 0:
                    crossings += 1
        return INSIDE if crossings & 1 else OUTSIDE
    rx = refs[c, 0]
    ry = refs[c, 1]
    sx0 = min(rx, px)
    sx1 = max(rx, px)
    sy0 = min(ry, py)
    sy1 = max(ry, py)
    for j in range(lo, hi):
        x1 = seg[j, 0]
        x2 = seg[j, 2]
        if (x1 < sx0 and x2 < sx0) or (x1 > sx1 and x2 > sx1):
            continue
        y1 = seg[j, 1]
        y2 = seg[j, 3]
        if (y1 < sy0 and y2 < sy0) or (y1 > sy1 and y2 > sy1):
            continue  # the segment's box (which holds the point) misses the edge's box
        sa = orient(rx, ry, px, py, x1, y1)
        sb = orient(rx, ry, px, py, x2, y2)
        if (sa > 0 and sb > 0) or (sa < 0 and sb < 0):
            continue  # both ends on one side of the line r p: no crossing, and the point is not on the edge
        ob = orient(x1, y1, x2, y2, px, py)
        if ob == 0 and min(x1, x2) <= px <= max(x1, x2) and min(y1, y2) <= py <= max(y1, y2):
            return BOUNDARY
        if (sa > 0) != (sb > 0):
            oa = orient(x1, y1, x2, y2, rx, ry)
            if (oa > 0 and ob < 0) or (oa < 0 and ob > 0):
                inside ^= 1
    return INSIDE if inside else OUTSIDE


@njit
def locate_polygon(px, py, s, rec, cells, refs, seg):
    """OUTSIDE, BOUNDARY or INSIDE for point (px, py) and polygon slot s (all rings of all parts)."""
    if px < rec[s, 1] or px > rec[s, 3] or py < rec[s, 2] or py > rec[s, 4]:
        return OUTSIDE
    return locate_in_cell(px, py, cell_of(px, py, s, rec, cells), cells, refs, seg)


@njit
def metres_per_degree(lat):
    """Metres per degree of longitude and latitude at ``lat``; numpy functions, so that its ``py_func``
    gives the small-batch path (:mod:`geofence._direct`) the same arithmetic on arrays."""
    phi = lat * DEG
    s = np.sin(phi)
    w = 1.0 - E2 * s * s
    n = A / np.sqrt(w)
    m = A * (1.0 - E2) / (w * np.sqrt(w))
    return n * np.cos(phi) * DEG, m * DEG


@njit
def wrap(d):
    if d > 180.0:
        return d - 360.0
    if d < -180.0:
        return d + 360.0
    return d


@njit
def distance_m(lon0, lat0, lon, lat):
    kx, ky = metres_per_degree(0.5 * (lat0 + lat))
    return math.hypot(kx * wrap(lon - lon0), ky * (lat - lat0))


@njit
def _lon_shift(a, b, px):
    # the shift in {-360, 0, 360} that brings x-range [a, b] (relative to px) nearest to 0
    lo = min(a, b) - px
    hi = max(a, b) - px
    best = 0.0
    bestd = max(lo, -hi, 0.0)
    for sh in (-360.0, 360.0):
        d = max(lo + sh, -(hi + sh), 0.0)
        if d < bestd:
            bestd = d
            best = sh
    return best


@njit
def edge_within(px, py, s, acc, kx, ky, rx, ry, rec, cells, refs, seg, strict):
    """Whether an edge of polygon slot s lies within ``acc`` metres of the point (``< acc`` when strict).

    Distances are measured in the local metric frame at the point (metres per degree kx, ky). The
    cells scanned are those the box of half-sides (rx, ry) degrees around the point overlaps, with
    the point's longitude taken as is and one turn either way (fences across the antimeridian).
    """
    bstart, nb = band_table(rec, s)
    minx = rec[s, 1]
    maxx = rec[s, 3]
    b0 = band_of(py - ry, rec[s, 5], rec[s, 6], nb)
    b1 = band_of(py + ry, rec[s, 5], rec[s, 6], nb)
    acc2 = acc * acc
    for b in range(b0, b1 + 1):
        c0, nc = band_cells(cells, bstart + b)
        for turn in (-360.0, 0.0, 360.0):
            qlo = px - turn - rx
            qhi = px - turn + rx
            if qhi < minx or qlo > maxx:
                continue
            k0 = col_of(qlo, minx, maxx, nc)
            k1 = col_of(qhi, minx, maxx, nc)
            for c in range(c0 + k0, c0 + k1 + 1):
                for j in range(np.int64(cells[c, 0]) >> 2, np.int64(cells[c, 1])):
                    y1 = seg[j, 1]
                    y2 = seg[j, 3]
                    if min(y1, y2) > py + ry or max(y1, y2) < py - ry:
                        continue
                    x1 = seg[j, 0]
                    x2 = seg[j, 2]
                    sh = _lon_shift(x1, x2, px)
                    ax = (x1 + sh - px) * kx
                    bx = (x2 + sh - px) * kx
                    if min(ax, bx) > acc or max(ax, bx) < -acc:
                        continue
                    ay = (y1 - py) * ky
                    by = (y2 - py) * ky
                    dx = bx - ax
                    dy = by - ay
                    l2 = dx * dx + dy * dy
                    t = 0.0
                    if l2 > 0.0:
                        t = -(ax * dx + ay * dy) / l2
                        t = min(1.0, max(0.0, t))
                    qx = ax + t * dx
                    qy = ay + t * dy
                    d2 = qx * qx + qy * qy
                    if d2 < acc2 or (not strict and d2 == acc2):
                        return True
    return False
