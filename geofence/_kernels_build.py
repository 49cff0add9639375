"""The index's kernels, building: a polygon's bands, columns, cells, reference points and copied edges.

Part of :mod:`geofence._kernels` (its doc describes the arrays' layout).
"""

from __future__ import annotations

import numpy as np

from geofence._kernels_geometry import (
    CELL_BUDGET,
    CELL_RES,
    COLS_PER_EDGE,
    MAX_BANDS,
    MAX_COLS,
    NB_BITS,
    _crosses,
    band_of,
    col_of,
    orient,
)
from proxbase.jit import njit

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
