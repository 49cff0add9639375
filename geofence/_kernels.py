"""The index's hot loops (numba). Everything here works on flat numpy arrays.

Layout (built by :mod:`geofence.index`):

- fences live in *slots* (append-only); ``rec[s]`` is one cache line per slot:
  ``kind`` (0 polygon, 1 circle, -1 removed), then for a polygon its bbox
  ``minx, miny, maxx, maxy``, band origin ``y0``, ``1 / band height`` and
  ``bstart * 2**17 + nb`` (its band rows in ``cells``); for a circle ``cx, cy, radius_m``;
- a polygon's bbox is cut into ``nb`` horizontal bands, each band into equal columns
  (one for most bands; many where a horizontal line crosses many edges, as on a spiky
  star). ``cells[bstart + b]`` is band b's row: its only cell, or ``(-1 - first cell
  row, columns)``. A cell row is ``(first edge * 4 + ray * 2 + inside, end edge)``: it
  lists in ``seg`` every edge (``x1, y1, x2, y2``, copied in cell order) that reaches
  it. A point of a cell is located from the cell's reference point, whose state
  (``inside``) is known from the build: each crossing of the segment between them
  with the cell's edges flips it. The last cell of a band (``ray``) takes the point
  right of the polygon at the point's height (outside), which is GEOS's ray; other
  cells a fixed point ``refs[cell]`` off the boundary. So a point test reads the
  handful of edges of one cell, whatever the polygon's size and shape, and a cell
  with no edges answers with no geometry;
- a grid per level (cell side ``cs0 * 2**level`` degrees) hashed by cell key
  (``htab`` rows: key, first entry, end entry); an entry is ``slot * 2 + flag``,
  flag 1 when the fence covers the whole cell (no geometry needed), 0 when its
  boundary may cross the cell (exact test).

The point-in-polygon test is GEOS's ``RayCrossingCounter`` rule (boundary counts
as inside, half-open vertex rule), generalised to any segment (see ``_crosses``),
with an exact orientation predicate, so the results equal shapely's ``intersects``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

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
    phi = lat * DEG
    s = math.sin(phi)
    w = 1.0 - E2 * s * s
    n = A / math.sqrt(w)
    m = A * (1.0 - E2) / (w * math.sqrt(w))
    return n * math.cos(phi) * DEG, m * DEG


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


# ---------------------------------------------------------------- building

@njit
def _halton(i, base):
    f = 1.0
    r = 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


@njit
def _edge_x_between(x1, y1, x2, y2, ylo, yhi):
    # the x-range of the part of the edge with ylo <= y <= yhi (empty: lo > hi)
    if y1 == y2:
        return min(x1, x2), max(x1, x2)
    ta = (ylo - y1) / (y2 - y1)
    tb = (yhi - y1) / (y2 - y1)
    t0 = max(0.0, min(ta, tb))
    t1 = min(1.0, max(ta, tb))
    if t0 > t1:
        return np.inf, -np.inf
    xa = x1 + t0 * (x2 - x1)
    xb = x1 + t1 * (x2 - x1)
    return min(xa, xb), max(xa, xb)


@njit
def _edge_cols(x1, y1, x2, y2, b, nb, y0, h, eps_y, minx, maxx, nc, eps_x):
    # columns of band b that the edge may reach (padded, so that float rounding in band_of/col_of
    # never puts a point of the edge in a cell that does not list it); (0, -1) when none
    ylo = -np.inf if b == 0 else y0 + b * h - eps_y
    yhi = np.inf if b == nb - 1 else y0 + (b + 1) * h + eps_y
    xl, xr = _edge_x_between(x1, y1, x2, y2, ylo, yhi)
    if xl > xr:
        return 0, -1
    return col_of(xl - eps_x, minx, maxx, nc), col_of(xr + eps_x, minx, maxx, nc)


@njit
def _grow2(a, need):
    if need <= a.shape[0]:
        return a
    out = np.empty((max(need, 2 * a.shape[0]), a.shape[1]), dtype=a.dtype)
    # copies here are loops (LLVM makes them a memcpy): an array-to-array slice assignment makes numba
    # compile its shape-mismatch error message, which cost ~5 s of a first run's compile
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j]
    return out


@njit
def _place_edges(edges, k, miny, h, invh, eps_y, minx, maxx, xmag, cstart, ccount, cseg, ceid, fill, counting):
    # one pass over the edges and the cells each reaches: count them (counting) or copy them there
    w = maxx - minx
    for e in range(edges.shape[0]):
        x1 = edges[e, 0]
        y1 = edges[e, 1]
        x2 = edges[e, 2]
        y2 = edges[e, 3]
        b0 = band_of(min(y1, y2) - eps_y, miny, invh, k)
        b1 = band_of(max(y1, y2) + eps_y, miny, invh, k)
        for b in range(b0, b1 + 1):
            nc = cstart[b + 1] - cstart[b]
            eps_x = 1e-6 * (w / nc) + 4e-15 * xmag
            ka, kb = _edge_cols(x1, y1, x2, y2, b, k, miny, h, eps_y, minx, maxx, nc, eps_x)
            for c in range(cstart[b] + ka, cstart[b] + kb + 1):
                if counting:
                    ccount[c + 1] += 1
                else:
                    f = fill[c]
                    cseg[f, 0] = x1
                    cseg[f, 1] = y1
                    cseg[f, 2] = x2
                    cseg[f, 3] = y2
                    ceid[f] = e
                    fill[c] = f + 1


@njit
def build_cells(vxy, ring_ptr, slot_ring_ptr, slot_of, per_cell, rec, cell_base, edge_base):
    """Fill ``rec`` of each new polygon slot; return the tails of (cells, seg).

    ``vxy`` are the new vertices (rings closed, concatenated); ``ring_ptr`` the ring offsets into
    them; ``slot_ring_ptr[i]:slot_ring_ptr[i+1]`` the rings of the i-th new polygon, whose slot is
    ``slot_of[i]``. Indexes written are absolute: band tables from ``band_base``, cell rows from
    ``cell_base``, edges from ``edge_base``.

    A polygon's bounding box is cut into horizontal bands (about ``per_cell`` edges each, fewer when
    the edges are tall, so that the copies stay a few per edge), and each band into equal columns
    (about ``per_cell`` edges per cell). A cell lists the edges that reach it and a reference point
    off the boundary whose inside/outside state is found by walking the band from its left.
    """
    cell_out = np.empty((16, 2))
    ref_out = np.empty((16, 2))
    seg_out = np.empty((16, 4))
    ncell = 0
    nseg = 0
    for i in range(slot_of.shape[0]):
        s = slot_of[i]
        m = 0
        for r in range(slot_ring_ptr[i], slot_ring_ptr[i + 1]):
            m += ring_ptr[r + 1] - ring_ptr[r] - 1
        edges = np.empty((m, 4))
        minx = np.inf
        miny = np.inf
        maxx = -np.inf
        maxy = -np.inf
        sdy = 0.0
        e = 0
        for r in range(slot_ring_ptr[i], slot_ring_ptr[i + 1]):
            for v in range(ring_ptr[r], ring_ptr[r + 1] - 1):
                edges[e, 0] = vxy[v, 0]
                edges[e, 1] = vxy[v, 1]
                edges[e, 2] = vxy[v + 1, 0]
                edges[e, 3] = vxy[v + 1, 1]
                minx = min(minx, vxy[v, 0])
                maxx = max(maxx, vxy[v, 0])
                miny = min(miny, vxy[v, 1])
                maxy = max(maxy, vxy[v, 1])
                sdy += abs(vxy[v + 1, 1] - vxy[v, 1])
                e += 1
        w = maxx - minx
        hh = maxy - miny
        xmag = 1.0 + max(abs(minx), abs(maxx))
        ymag = 1.0 + max(abs(miny), abs(maxy))
        k = max(1, min(MAX_BANDS, m // per_cell))
        if sdy > 0.0:
            k = min(k, max(1, int((CELL_BUDGET - 1.0) * m * hh / sdy)))
        k = max(1, min(k, int(hh / (CELL_RES * ymag))))
        h = hh / k
        if not h > 0.0:
            k = 1
            h = 0.0
        invh = 1.0 / h if h > 0.0 else 0.0
        rec[s, 0] = 0.0
        rec[s, 1] = minx
        rec[s, 2] = miny
        rec[s, 3] = maxx
        rec[s, 4] = maxy
        rec[s, 5] = miny
        rec[s, 6] = invh
        rec[s, 7] = (cell_base + ncell) * NB_BITS + k
        eps_y = 1e-6 * h + 4e-15 * ymag
        # edges per band, then columns per band
        cnt = np.zeros(k, dtype=np.int64)
        for e in range(m):
            b0 = band_of(min(edges[e, 1], edges[e, 3]) - eps_y, miny, invh, k)
            b1 = band_of(max(edges[e, 1], edges[e, 3]) + eps_y, miny, invh, k)
            for b in range(b0, b1 + 1):
                cnt[b] += 1
        max_cols = max(1, min(MAX_COLS, int(w / (CELL_RES * xmag))))
        cstart = np.zeros(k + 1, dtype=np.int64)
        for b in range(k):
            cstart[b + 1] = cstart[b] + max(1, min(max_cols, COLS_PER_EDGE * cnt[b] // per_cell))
        nc_all = cstart[k]
        ccount = np.zeros(nc_all + 1, dtype=np.int64)
        cseg = np.empty((0, 4))
        ceid = np.empty(0, dtype=np.int64)
        _place_edges(edges, k, miny, h, invh, eps_y, minx, maxx, xmag, cstart, ccount, cseg, ceid, ccount, True)
        for c in range(nc_all):
            ccount[c + 1] += ccount[c]
        total = ccount[nc_all]
        cseg = np.empty((total, 4))
        ceid = np.empty(total, dtype=np.int64)
        _place_edges(edges, k, miny, h, invh, eps_y, minx, maxx, xmag, cstart, ccount, cseg, ceid,
                     ccount[:nc_all].copy(), False)
        # a reference point off the boundary in every cell
        ref = np.empty((nc_all, 2))
        for b in range(k):
            nc = cstart[b + 1] - cstart[b]
            yl = miny + b * h
            ref[cstart[b] + nc - 1, 0] = np.nan  # the ray to the right, see locate_in_cell
            ref[cstart[b] + nc - 1, 1] = np.nan
            for col in range(nc - 1):
                c = cstart[b] + col
                xl = minx + col * (w / nc)
                xr = maxx if col == nc - 1 else minx + (col + 1) * (w / nc)
                yh = maxy if b == k - 1 else miny + (b + 1) * h
                found = False
                for t in range(1, 257):
                    qx = xl + _halton(t, 2) * (xr - xl)
                    qy = yl + _halton(t, 3) * (yh - yl)
                    if band_of(qy, miny, invh, k) != b or col_of(qx, minx, maxx, nc) != col:
                        continue
                    on_edge = False
                    for j in range(ccount[c], ccount[c + 1]):
                        ax = cseg[j, 0]
                        ay = cseg[j, 1]
                        bx = cseg[j, 2]
                        by = cseg[j, 3]
                        if (min(ax, bx) <= qx <= max(ax, bx) and min(ay, by) <= qy <= max(ay, by)
                                and orient(ax, ay, bx, by, qx, qy) == 0):
                            on_edge = True
                            break
                    if not on_edge:
                        ref[c, 0] = qx
                        ref[c, 1] = qy
                        found = True
                        break
                if not found:
                    raise ValueError("geofence: no reference point off the boundary in a polygon cell")
        # their states, walking each band from a point left of the polygon
        state = np.zeros(nc_all, dtype=np.int64)
        stamp = np.full(m, -1, dtype=np.int64)
        for b in range(k):
            c0 = cstart[b]
            ax = minx - (w + 1.0)
            ay = ref[c0, 1]
            inside = 0
            for c in range(c0, cstart[b + 1] - 1):
                bx = ref[c, 0]
                by = ref[c, 1]
                for cc in range(max(c0, c - 1), c + 1):
                    for j in range(ccount[cc], ccount[cc + 1]):
                        if stamp[ceid[j]] == c:
                            continue
                        stamp[ceid[j]] = c
                        x1 = cseg[j, 0]
                        y1 = cseg[j, 1]
                        x2 = cseg[j, 2]
                        y2 = cseg[j, 3]
                        if _crosses(ax, ay, bx, by, x1, y1, x2, y2, orient(x1, y1, x2, y2, bx, by)):
                            inside ^= 1
                state[c] = inside
                ax = bx
                ay = by
        # append: one row per band (the cell itself when the band has one column, else a pointer to its
        # cells: -1 - first row, number of columns), then the cells of the bands of several columns
        extra = 0
        for b in range(k):
            if cstart[b + 1] - cstart[b] > 1:
                extra += cstart[b + 1] - cstart[b]
        cell_out = _grow2(cell_out, ncell + k + extra)
        ref_out = _grow2(ref_out, ncell + k + extra)
        more = ncell + k
        for b in range(k):
            nc = cstart[b + 1] - cstart[b]
            if nc > 1:
                cell_out[ncell + b, 0] = -1.0 - (cell_base + more)
                cell_out[ncell + b, 1] = nc
                ref_out[ncell + b, 0] = 0.0
                ref_out[ncell + b, 1] = 0.0
                rows = more
                more += nc
            else:
                rows = ncell + b
            for col in range(nc):
                c = cstart[b] + col
                ray = 2 if col == nc - 1 else 0
                cell_out[rows + col, 0] = (edge_base + nseg + ccount[c]) * 4 + ray + state[c]
                cell_out[rows + col, 1] = edge_base + nseg + ccount[c + 1]
                ref_out[rows + col, 0] = ref[c, 0]
                ref_out[rows + col, 1] = ref[c, 1]
        ncell = more
        seg_out = _grow2(seg_out, nseg + total)
        for i in range(total):  # a loop, not a slice assignment: see _grow2
            for j in range(4):
                seg_out[nseg + i, j] = cseg[i, j]
        nseg += total
    return cell_out[:ncell], ref_out[:ncell], seg_out[:nseg]


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
