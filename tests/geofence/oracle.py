"""Reference answers from shapely (GEOS) and pyproj, for the property tests."""

from __future__ import annotations

import numpy as np
import shapely
from pyproj import Geod, Transformer

from geofence import Fence

GEOD = Geod(ellps="WGS84")
CIRCLE_TOL = 5e-4  # relative band around a circle's radius where the oracle abstains


def point_pairs(fences: list[Fence], x: np.ndarray, y: np.ndarray) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(expected pairs, pairs the oracle abstains on) for point-in-fence."""
    expected: set[tuple[int, int]] = set()
    unsure: set[tuple[int, int]] = set()
    for j, f in enumerate(fences):
        if f.kind == "circle":
            cx, cy = f.center  # type: ignore[misc]
            _, _, d = GEOD.inv(np.full_like(x, cx), np.full_like(y, cy), x, y)
            r = f.radius_m
            inside = np.flatnonzero(d <= r)
            band = np.flatnonzero(np.abs(d - r) <= CIRCLE_TOL * r)
            expected.update((int(i), j) for i in inside)
            unsure.update((int(i), j) for i in band)
        else:
            inside = np.flatnonzero(shapely.intersects_xy(f.geometry, x, y))
            expected.update((int(i), j) for i in inside)
    return expected, unsure


def accuracy_conf(fence: Fence, x: float, y: float, acc: float, tol: float) -> int | None:
    """Expected confidence (0 = no pair) with the accuracy circle built in an AEQD frame at the point;
    None when the point is within ``tol`` metres of a decision boundary."""
    if fence.kind == "circle":
        cx, cy = fence.center  # type: ignore[misc]
        _, _, d = GEOD.inv(cx, cy, x, y)
        r = fence.radius_m
        t = tol + CIRCLE_TOL * r
        if min(abs(d + acc - r), abs(d - r), abs(d - r - acc)) <= t:
            return None
        return 3 if d + acc <= r else 2 if d <= r else 1 if d <= r + acc else 0
    tr = Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={y} +lon_0={x} +ellps=WGS84 +units=m", always_xy=True
    )
    geom = fence.geometry
    minx, _, maxx, _ = shapely.bounds(geom)
    if maxx - minx < 180.0:  # clip far-away parts (keeps huge fences cheap); clip edges lie beyond 3 x acc
        kx, ky = 111_320.0 * max(np.cos(np.radians(y)), 1e-6), 110_570.0
        rx, ry = 3.0 * (acc + tol) / kx + 1e-9, 3.0 * (acc + tol) / ky + 1e-9
        geom = shapely.clip_by_rect(geom, x - rx, y - ry, x + rx, y + ry)
        if geom.is_empty:
            return 0
    dense = shapely.segmentize(geom, 0.0005)
    projected = shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    origin = shapely.Point(0.0, 0.0)
    d_b = float(shapely.distance(projected.boundary, origin))
    inside = bool(shapely.intersects_xy(fence.geometry, x, y))
    if inside:
        if d_b <= tol:
            return 2
        if abs(d_b - acc) <= tol:
            return None
        return 3 if d_b >= acc else 2
    if abs(d_b - acc) <= tol:
        return None
    return 1 if d_b <= acc else 0
