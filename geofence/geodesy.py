"""WGS84 metric frames and distances used by fences and the index.

Circle fences are true metre circles on the WGS84 ellipsoid. Distances up to
50 km are computed in a local ellipsoidal frame at the mid-latitude of the two
points (meridional radius ``M`` and prime-vertical radius ``N``), which stays
within 0.01% of pyproj's geodesic (``Geod(ellps="WGS84")``) up to 80 degrees of
latitude; the tests check it against pyproj.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod

WGS84_A = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
MAX_RADIUS_M = 50_000.0

_GEOD = Geod(ellps="WGS84")


def metres_per_degree(lat: float | npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Metres per degree of longitude and of latitude at ``lat`` (WGS84)."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    s = np.sin(phi)
    w = 1.0 - WGS84_E2 * s * s
    n = WGS84_A / np.sqrt(w)
    m = WGS84_A * (1.0 - WGS84_E2) / (w * np.sqrt(w))
    return n * np.cos(phi) * (math.pi / 180.0), m * (math.pi / 180.0)


def wrap_lon(dlon: npt.ArrayLike) -> np.ndarray:
    """A longitude difference brought into [-180, 180)."""
    return (np.asarray(dlon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def distance_m(lon0: npt.ArrayLike, lat0: npt.ArrayLike, lon: npt.ArrayLike, lat: npt.ArrayLike) -> np.ndarray:
    """Distance in metres between points (local WGS84 frame at the mid-latitude; for d <= 50 km)."""
    lat0 = np.asarray(lat0, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    kx, ky = metres_per_degree((lat0 + lat) / 2.0)
    lon_a, lon0_a = np.asarray(lon, dtype=np.float64), np.asarray(lon0, dtype=np.float64)
    return np.hypot(kx * wrap_lon(lon_a - lon0_a), ky * (lat - lat0))


def circle_extent_deg(lat: float, radius_m: float) -> tuple[float, float]:
    """Half-width in longitude and half-height in latitude (degrees) of a circle's bounding box.

    The longitude half-width is 180 when the circle reaches a pole.
    """
    _, ky = metres_per_degree(lat)
    dlat = radius_m / float(ky) * 1.001
    top = min(90.0, abs(lat) + dlat)
    if top >= 89.999:
        return 180.0, dlat
    kx, _ = metres_per_degree(top)
    return min(180.0, radius_m / float(kx) * 1.001), dlat


def circle_polygon(lon: float, lat: float, radius_m: float, segments: int = 72) -> shapely.Geometry:
    """The circle as a polygon for display (geodesic points; split at +-180 when it crosses)."""
    az = np.linspace(0.0, 360.0, segments, endpoint=False)
    plon, plat, _ = _GEOD.fwd(np.full(segments, lon), np.full(segments, lat), az, np.full(segments, radius_m))
    plon = lon + wrap_lon(np.asarray(plon) - lon)
    ring = np.column_stack([plon, plat])
    poly = shapely.Polygon(np.vstack([ring, ring[:1]]))
    if plon.min() >= -180.0 and plon.max() <= 180.0:
        return poly
    world = shapely.box(-180.0, -90.0, 180.0, 90.0)
    parts = [shapely.intersection(poly, world)]
    for shift in (-360.0, 360.0):
        moved = shapely.transform(poly, lambda xy, s=shift: xy + np.array([s, 0.0]))
        piece = shapely.intersection(moved, world)
        if not piece.is_empty and piece.area > 0:
            parts.append(piece)
    polys = [p for g in parts for p in shapely.get_parts(g) if p.geom_type == "Polygon" and p.area > 0]
    return shapely.MultiPolygon(polys)


__all__ = [
    "MAX_RADIUS_M",
    "WGS84_A",
    "WGS84_E2",
    "WGS84_F",
    "circle_extent_deg",
    "circle_polygon",
    "distance_m",
    "metres_per_degree",
    "wrap_lon",
]
