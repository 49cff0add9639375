"""One catalogue of nasty fences, reused through parametrize by every geofence test.

Each entry is a :class:`geofence.Fence`. ``probes(fence)`` gives points worth
testing against it: every vertex, edge midpoints, points on horizontal edges,
points in holes, and random points around the fence (seeded).
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from pyproj import Geod

from geofence import Fence, circle_fence

_GEOD = Geod(ellps="WGS84")


def polygon_fence(fid: str, geometry: shapely.Geometry, **props: object) -> Fence:
    return Fence(id=fid, name=fid, tags=(), properties=dict(props), geometry=geometry)


def _star(cx: float, cy: float, r_deg: float, n: int, seed: int, wobble: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = r_deg * (1.0 - wobble * rng.uniform(0, 1, n))
    pts = np.column_stack([cx + rad * np.cos(ang) / math.cos(math.radians(cy)), cy + rad * np.sin(ang)])
    return np.vstack([pts, pts[:1]])


def _comb(x0: float, y0: float, teeth: int, w: float, h: float) -> shapely.Polygon:
    """A comb: many horizontal edges at the same y, and vertices sharing y values."""
    pts = [(x0, y0)]
    for k in range(teeth):
        xa = x0 + 2 * k * w
        pts += [(xa, y0 + h), (xa + w, y0 + h), (xa + w, y0 + h / 3), (xa + 2 * w, y0 + h / 3)]
    pts += [(x0 + 2 * teeth * w, y0), (x0, y0)]
    return shapely.Polygon(pts)


def build() -> list[Fence]:
    fences = [
        polygon_fence("square", shapely.box(2.3500, 48.8500, 2.3510, 48.8507)),
        polygon_fence(
            "holes",
            shapely.Polygon(
                [(2.36, 48.86), (2.362, 48.86), (2.362, 48.8612), (2.36, 48.8612), (2.36, 48.86)],
                [[(2.3603, 48.8603), (2.3608, 48.8603), (2.3608, 48.8606), (2.3603, 48.8606), (2.3603, 48.8603)],
                 [(2.3612, 48.8602), (2.3617, 48.8608), (2.3613, 48.861), (2.3612, 48.8602)]],
            ),
        ),
        polygon_fence(
            "multipolygon",
            shapely.MultiPolygon([shapely.box(2.37, 48.87, 2.3705, 48.8705),
                                  shapely.Polygon(_star(2.3720, 48.8702, 0.0004, 24, seed=3))]),
        ),
        polygon_fence(
            "antimeridian",  # RFC 7946: split at +-180 into a MultiPolygon
            shapely.MultiPolygon([shapely.box(179.998, -16.79, 180.0, -16.787),
                                  shapely.box(-180.0, -16.79, -179.997, -16.787)]),
        ),
        circle_fence("circle-antimeridian", 179.9995, -17.5, 300.0),
        circle_fence("circle-west", -179.9998, 10.0, 120.0),
        polygon_fence("star-10k", shapely.Polygon(_star(2.3800, 48.8800, 0.0006, 10_000, seed=7))),
        polygon_fence("star-32", shapely.Polygon(_star(2.3820, 48.8800, 0.0006, 32, seed=8))),
        polygon_fence("comb", _comb(2.3900, 48.8900, 12, 0.00005, 0.0004)),
        polygon_fence("thin", shapely.Polygon([(2.40, 48.90), (2.41, 48.9000001), (2.41, 48.9000003),
                                               (2.40, 48.90)])),
        polygon_fence("huge", shapely.Polygon(_star(10.0, 50.0, 6.0, 400, seed=9, wobble=0.5))),
        polygon_fence("mall-a", shapely.box(2.4100, 48.9100, 2.4104, 48.9103)),
        polygon_fence("mall-b", shapely.box(2.4104, 48.9100, 2.4108, 48.9103)),  # shares a wall with mall-a
        polygon_fence("diamond", shapely.Polygon([(2.42, 48.92), (2.4205, 48.9205), (2.42, 48.921),
                                                  (2.4195, 48.9205), (2.42, 48.92)])),
        circle_fence("circle-city", 2.3505, 48.8503, 40.0),  # overlaps "square"
        circle_fence("circle-north", 30.0, 79.5, 20_000.0),
        circle_fence("circle-big", -70.0, -33.0, 50_000.0),
    ]
    return fences


CATALOGUE: list[Fence] = build()
IDS = [f.id for f in CATALOGUE]
BY_ID = {f.id: f for f in CATALOGUE}


def probes(fence: Fence, n_random: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points worth testing against ``fence`` (lon, lat)."""
    rng = np.random.default_rng(seed)
    geom = fence.geometry
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    coords = shapely.get_coordinates(geom)
    take = coords if len(coords) <= 2000 else coords[rng.choice(len(coords), 2000, replace=False)]
    xs.append(take[:, 0])
    ys.append(take[:, 1])
    rings = shapely.get_rings(shapely.get_parts(geom))
    for ring in rings:
        c = shapely.get_coordinates(ring)
        if len(c) > 400:
            c = c[: 400]
        mid = (c[:-1] + c[1:]) / 2.0
        xs.append(mid[:, 0])
        ys.append(mid[:, 1])
        horiz = c[:-1, 1] == c[1:, 1]
        if horiz.any():
            t = rng.uniform(0, 1, horiz.sum())
            xs.append(c[:-1][horiz, 0] + t * (c[1:][horiz, 0] - c[:-1][horiz, 0]))
            ys.append(c[:-1][horiz, 1])
        # just off the vertices
        xs.append(c[:, 0] + 1e-9)
        ys.append(c[:, 1] - 1e-9)
    for hole in shapely.get_rings(shapely.get_parts(geom))[1:]:
        p = shapely.point_on_surface(shapely.Polygon(hole))
        xs.append(np.array([p.x]))
        ys.append(np.array([p.y]))
    minx, miny, maxx, maxy = shapely.bounds(geom)
    w, h = maxx - minx, maxy - miny
    xs.append(rng.uniform(minx - 0.2 * w, maxx + 0.2 * w, n_random))
    ys.append(rng.uniform(miny - 0.2 * h, maxy + 0.2 * h, n_random))
    if fence.kind == "circle":
        cx, cy = fence.center  # type: ignore[misc]
        k = n_random // 2
        lon, lat, _ = _GEOD.fwd(np.full(k, cx), np.full(k, cy), rng.uniform(0, 360, k),
                                rng.uniform(0, 2.0 * fence.radius_m, k))  # type: ignore[operator]
        xs.append(np.append(lon, cx))
        ys.append(np.append(lat, cy))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    keep = (x >= -180) & (x <= 180) & (y >= -90) & (y <= 90)
    return x[keep], y[keep]
