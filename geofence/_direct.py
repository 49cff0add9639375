"""Matching small batches against few fences in numpy and GEOS, with nothing to compile.

:class:`geofence.index.FenceIndex` answers a batch here while the work is small (few fences,
``pings x fences`` below a bound) and its grid is not built yet: a first run then compiles none of
the index's kernels. The answers are the kernels' own (``tests/geofence/test_geofence_direct.py``
compares both paths on random fences and pings): the point-in-polygon test is GEOS's (which the
kernels equal, boundary included), and the circle distances, the accuracy confidences and the
edge distances repeat the kernels' arithmetic operation for operation in float64
(:mod:`geofence._kernels`: ``distance_m``, ``_polygon_conf``, ``edge_within``, ``_scan_accuracy``).

Every step is a whole-array operation over (ping, fence) pairs, or over (pair, edge) rows for the
accuracy test; no Python loop runs per ping or per fence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

import geofence._kernels_geometry as KG


@dataclass(frozen=True)
class DirectTable:
    """The live fences of an index as flat arrays (``slots`` in slot order)."""

    slots: np.ndarray  # int64 slot of each fence
    circle: np.ndarray  # bool: a circle (else a polygon)
    box: np.ndarray  # (F, 4) minx, miny, maxx, maxy of the polygon's vertices (circles: unused)
    geoms: np.ndarray  # object: the polygons' shapely geometries, prepared (circles: None)
    centre: np.ndarray  # (F, 3) cx, cy, radius_m of a circle (polygons: unused)
    edges: np.ndarray  # (E, 4) every ring edge x1, y1, x2, y2 of every polygon, fence after fence
    edge_ptr: np.ndarray  # int64 (F + 1): fence k's edges are edges[edge_ptr[k]:edge_ptr[k + 1]]


def build_table(slots: np.ndarray, kinds: np.ndarray, geoms: list[object], centres: np.ndarray) -> DirectTable:
    """A table for fences of ``slots``: ``kinds`` 1 circle, 0 polygon (``geoms[k]`` its geometry; circles'
    ``centres[k]`` = cx, cy, radius_m)."""
    circle = kinds == 1
    g = np.empty(len(geoms), dtype=object)
    g[:] = [None if c else geom for c, geom in zip(circle.tolist(), geoms, strict=True)]
    poly = np.flatnonzero(~circle)
    box = np.zeros((slots.shape[0], 4))
    counts = np.zeros(slots.shape[0], dtype=np.int64)
    edges = np.empty((0, 4))
    if poly.size:
        shapely.prepare(g[poly])
        parts, parts_of = shapely.get_parts(g[poly], return_index=True)
        rings, ring_of = shapely.get_rings(parts, return_index=True)
        coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
        fence_of_ring = poly[parts_of[ring_of]]
        # an edge joins each vertex to the next one of its ring (the closing vertex starts none)
        starts = np.flatnonzero(coord_ring[:-1] == coord_ring[1:])
        edges = np.column_stack([coords[starts], coords[starts + 1]])
        edge_fence = fence_of_ring[coord_ring[starts]]  # rings come fence after fence, in order
        counts = np.bincount(edge_fence, minlength=slots.shape[0]).astype(np.int64)
        vfence = fence_of_ring[coord_ring]
        for col, (fn, axis) in enumerate(((np.minimum, 0), (np.minimum, 1), (np.maximum, 0), (np.maximum, 1))):
            init = np.inf if fn is np.minimum else -np.inf
            b = np.full(slots.shape[0], init)
            fn.at(b, vfence, coords[:, axis])
            box[poly, col] = b[poly]
    edge_ptr = np.zeros(slots.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=edge_ptr[1:])
    return DirectTable(slots=slots, circle=circle, box=box, geoms=g, centre=centres, edges=edges, edge_ptr=edge_ptr)


# ---------------------------------------------------------------- the kernels' arithmetic, on arrays

#: the kernel's own arithmetic (written with numpy functions), applied to arrays
metres_per_degree = KG.metres_per_degree.py_func


def wrap(d: np.ndarray) -> np.ndarray:
    return np.where(d > 180.0, d - 360.0, np.where(d < -180.0, d + 360.0, d))


def distance_m(lon0: np.ndarray, lat0: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    kx, ky = metres_per_degree(0.5 * (lat0 + lat))
    return np.hypot(kx * wrap(lon - lon0), ky * (lat - lat0))


def lon_shift(a: np.ndarray, b: np.ndarray, px: np.ndarray) -> np.ndarray:
    """The shift in {-360, 0, 360} bringing x-range [a, b] (relative to px) nearest to 0."""
    lo = np.minimum(a, b) - px
    hi = np.maximum(a, b) - px
    best = np.zeros_like(lo)
    bestd = np.maximum(np.maximum(lo, -hi), 0.0)
    for sh in (-360.0, 360.0):
        d = np.maximum(np.maximum(lo + sh, -(hi + sh)), 0.0)
        better = d < bestd
        bestd = np.where(better, d, bestd)
        best = np.where(better, sh, best)
    return best


def edges_within(t: DirectTable, fence: np.ndarray, px: np.ndarray, py: np.ndarray, acc: np.ndarray,
                 kx: np.ndarray, ky: np.ndarray, ry: np.ndarray, strict: np.ndarray) -> np.ndarray:
    """Per pair: whether an edge of polygon ``fence`` lies within ``acc`` metres of the point (``< acc``
    when ``strict``), measured in the local metric frame at the point, as ``edge_within`` does."""
    counts = t.edge_ptr[fence + 1] - t.edge_ptr[fence]
    pair = np.repeat(np.arange(fence.shape[0]), counts)
    first = np.repeat(t.edge_ptr[fence] - np.cumsum(counts) + counts, counts)
    e = t.edges[first + np.arange(pair.shape[0])]
    x1, y1, x2, y2 = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    qx_, qy_, a, kxp, kyp, ryp = px[pair], py[pair], acc[pair], kx[pair], ky[pair], ry[pair]
    near = ~((np.minimum(y1, y2) > qy_ + ryp) | (np.maximum(y1, y2) < qy_ - ryp))
    sh = lon_shift(x1, x2, qx_)
    ax = (x1 + sh - qx_) * kxp
    bx = (x2 + sh - qx_) * kxp
    near &= ~((np.minimum(ax, bx) > a) | (np.maximum(ax, bx) < -a))
    ay = (y1 - qy_) * kyp
    by = (y2 - qy_) * kyp
    dx = bx - ax
    dy = by - ay
    l2 = dx * dx + dy * dy
    pos = l2 > 0.0
    tt = np.zeros_like(l2)
    np.divide(-(ax * dx + ay * dy), l2, out=tt, where=pos)
    tt = np.where(pos, np.minimum(1.0, np.maximum(0.0, tt)), 0.0)
    qx = ax + tt * dx
    qy = ay + tt * dy
    d2 = qx * qx + qy * qy
    acc2 = a * a
    hit = near & ((d2 < acc2) | (~strict[pair] & (d2 == acc2)))
    return np.bincount(pair[hit], minlength=fence.shape[0]) > 0


# ---------------------------------------------------------------- matching

def match(t: DirectTable, x: np.ndarray, y: np.ndarray, acc: np.ndarray, use_acc: bool,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (point, slot, confidence) sorted by point then slot, as ``geofence._kernels.match`` returns."""
    good = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    px, py = x[good], y[good]
    pa = acc[good] if use_acc else np.zeros(good.shape[0])
    out_p: list[np.ndarray] = []
    out_f: list[np.ndarray] = []
    out_c: list[np.ndarray] = []
    circ = np.flatnonzero(t.circle)
    if circ.size and good.size:
        i, k = (a.ravel() for a in np.meshgrid(np.arange(good.shape[0]), circ, indexing="ij"))
        cx, cy, r = t.centre[k, 0], t.centre[k, 1], t.centre[k, 2]
        d = distance_m(cx, cy, px[i], py[i])
        if use_acc:
            a = pa[i]
            conf = np.where(d + a <= r, 3, np.where(d <= r, 2, np.where(d <= r + a, 1, 0)))
        else:
            conf = np.where(d <= r, 2, 0)
        keep = conf > 0
        out_p.append(i[keep])
        out_f.append(k[keep])
        out_c.append(conf[keep])
    poly = np.flatnonzero(~t.circle)
    if poly.size and good.size:
        box = t.box[poly]
        if use_acc:
            kx, ky = metres_per_degree(py)
            ry = pa / ky
            rx = np.where(kx * 180.0 > pa, pa / kx, 360.0)
            lo_x = box[None, :, 0]
            hi_x = box[None, :, 2]
            sh = lon_shift(lo_x, hi_x, px[:, None])
            near = ((lo_x + sh - rx[:, None] <= px[:, None]) & (px[:, None] <= hi_x + sh + rx[:, None])
                    & (box[None, :, 1] - ry[:, None] <= py[:, None]) & (py[:, None] <= box[None, :, 3] + ry[:, None]))
        else:
            near = np.zeros((good.shape[0], poly.shape[0]), dtype=bool)
        inbox = ((box[None, :, 0] <= px[:, None]) & (px[:, None] <= box[None, :, 2])
                 & (box[None, :, 1] <= py[:, None]) & (py[:, None] <= box[None, :, 3]))
        i, j = np.nonzero(inbox | near)
        k = poly[j]
        ib = inbox[i, j]
        nb = near[i, j]
        touches = np.zeros(i.shape[0], dtype=bool)
        touches[ib] = shapely.intersects_xy(t.geoms[k[ib]], px[i[ib]], py[i[ib]])
        if use_acc:
            inside = np.zeros(i.shape[0], dtype=bool)
            inside[touches] = shapely.contains_xy(t.geoms[k[touches]], px[i[touches]], py[i[touches]])
            a = pa[i]
            # inside: 3 unless an edge lies strictly within the accuracy (2); on the boundary: 2;
            # outside (with accuracy > 0): 1 when an edge lies within the accuracy
            ask = (inside & (a > 0.0)) | (~touches & (a != 0.0) & nb)
            within = np.zeros(i.shape[0], dtype=bool)
            q = np.flatnonzero(ask)
            within[q] = edges_within(t, k[q], px[i[q]], py[i[q]], a[q], kx[i[q]], ky[i[q]], ry[i[q]], inside[q])
            conf = np.where(inside, np.where(within, 2, 3), np.where(touches, 2, np.where(within, 1, 0)))
        else:
            conf = np.where(touches, 2, 0)
        keep = conf > 0
        out_p.append(i[keep])
        out_f.append(k[keep])
        out_c.append(conf[keep])
    if not out_p:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8)
    p = good[np.concatenate(out_p)].astype(np.int64)
    s = t.slots[np.concatenate(out_f)].astype(np.int64)
    c = np.concatenate(out_c).astype(np.int8)
    order = np.lexsort((s, p))
    return p[order], s[order], c[order]
