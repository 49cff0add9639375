"""Geofences and a fast spatial index: which fences contain each of an array of pings.

>>> from geofence import FenceIndex, circle_fence
>>> index = FenceIndex([circle_fence("cafe", 2.35, 48.85, 30.0)])
>>> m = index.match([2.35, 2.36], [48.85, 48.85])
>>> m.point.tolist(), index.fence_ids[m.fence].tolist()
([0], ['cafe'])

Standalone: this package imports no other package of the project.
"""

from geofence.fences import Fence, FenceError, circle_fence
from geofence.geodesy import distance_m
from geofence.geojson import load_geojson
from geofence.index import FenceIndex, Match, match_fences

__all__ = [
    "Fence",
    "FenceError",
    "FenceIndex",
    "Match",
    "circle_fence",
    "distance_m",
    "load_geojson",
    "match_fences",
]
