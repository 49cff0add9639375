"""Fences: a polygon (holes allowed), a multipolygon, or a metre circle, with an id and properties."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import shapely

from geofence.geodesy import MAX_RADIUS_M, circle_extent_deg, circle_polygon
from proxbase.errors import ValidationError

FenceKind = Literal["polygon", "circle"]


class FenceError(ValidationError):
    """A fence that cannot be accepted, with where it is.

    The project's located error (:class:`proxbase.ValidationError`), plus ``feature``
    (0-based index in the FeatureCollection, also the ``row`` when none is given)
    and ``fence_id`` when known.
    """

    def __init__(self, message: str, *, row: int | None = None, feature: int | None = None,
                 fence_id: str | None = None, **where: Any) -> None:
        """``where``: the located error's ``source``, ``line``, ``col`` and ``field``."""
        super().__init__(message, row=row if row is not None else feature, **where)
        self.feature = feature
        self.fence_id = fence_id


def _positive_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_properties(properties: Mapping[str, Any]) -> str | None:
    """The reason the presence properties are unusable (``dwell_s``, ``max_accuracy_m``, ``tags``), or None."""
    for key in ("dwell_s", "max_accuracy_m"):
        if key in properties and properties[key] is not None and not _positive_finite(properties[key]):
            return f"{key} must be a positive finite number, got {properties[key]!r}"
    tags = properties.get("tags")
    if tags is not None and (not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags)):
        return f"tags must be a list of strings, got {tags!r}"
    return None


@dataclass(frozen=True)
class Fence:
    """A geofence in lon/lat (WGS84).

    ``geometry`` is a shapely Polygon or MultiPolygon; for a circle it is the
    polygonised circle (for display only: matching uses ``center`` and
    ``radius_m`` as a true metre circle on the ellipsoid).
    """

    id: str
    name: str
    tags: tuple[str, ...]
    properties: Mapping[str, Any] = field(hash=False)
    geometry: shapely.Geometry
    kind: FenceKind = "polygon"
    center: tuple[float, float] | None = None
    radius_m: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise FenceError(f"fence id must be a non-empty string, got {self.id!r}", field="id")
        object.__setattr__(self, "tags", tuple(self.tags))
        if not all(isinstance(t, str) for t in self.tags):
            raise FenceError(f"fence {self.id!r}: tags must be strings", field="tags", fence_id=self.id)
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))
        reason = check_properties(self.properties)
        if reason:
            raise FenceError(f"fence {self.id!r}: {reason}", field="properties", fence_id=self.id)
        if self.kind == "circle":
            if self.center is None or not _positive_finite(self.radius_m):
                raise FenceError(f"circle fence {self.id!r} needs a center and a positive radius_m",
                                 field="radius_m", fence_id=self.id)
            object.__setattr__(self, "center", (float(self.center[0]), float(self.center[1])))
            object.__setattr__(self, "radius_m", float(self.radius_m))  # type: ignore[arg-type]
        elif self.kind == "polygon":
            if shapely.get_type_id(self.geometry) not in (3, 6) or shapely.is_empty(self.geometry):
                raise FenceError(f"fence {self.id!r}: geometry must be a non-empty Polygon or MultiPolygon",
                                 field="geometry", fence_id=self.id)
        else:
            raise FenceError(f"fence {self.id!r}: kind must be 'polygon' or 'circle'", field="kind",
                             fence_id=self.id)

    @property
    def dwell_s(self) -> float | None:
        """The fence's own dwell time in seconds, if its properties set one."""
        value = self.properties.get("dwell_s")
        return float(value) if value is not None else None

    @property
    def max_accuracy_m(self) -> float | None:
        value = self.properties.get("max_accuracy_m")
        return float(value) if value is not None else None


def circle_fence(
    id: str,
    lon: float,
    lat: float,
    radius_m: float,
    *,
    name: str | None = None,
    tags: Iterable[str] = (),
    properties: Mapping[str, Any] | None = None,
) -> Fence:
    """A circle of ``radius_m`` metres (0 < r <= 50 km) around ``(lon, lat)``."""
    for label, value in (("lon", lon), ("lat", lat), ("radius_m", radius_m)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise FenceError(f"circle fence {id!r}: {label} must be a finite number, got {value!r}",
                             field=label, fence_id=id)
    if not -180.0 <= lon <= 180.0:
        raise FenceError(f"circle fence {id!r}: longitude {lon} outside [-180, 180]", field="lon", fence_id=id)
    if not -90.0 <= lat <= 90.0:
        raise FenceError(f"circle fence {id!r}: latitude {lat} outside [-90, 90]", field="lat", fence_id=id)
    if not 0.0 < radius_m <= MAX_RADIUS_M:
        raise FenceError(f"circle fence {id!r}: radius_m must be > 0 and <= {MAX_RADIUS_M:.0f} m, got {radius_m}",
                         field="radius_m", fence_id=id)
    dlon, _ = circle_extent_deg(lat, radius_m)
    if dlon >= 180.0:
        raise FenceError(f"circle fence {id!r}: a circle may not contain a pole", field="lat", fence_id=id)
    props = dict(properties or {})
    props.setdefault("radius_m", float(radius_m))
    return Fence(
        id=id,
        name=name if name is not None else str(props.get("name", id)),
        tags=tuple(tags),
        properties=props,
        geometry=circle_polygon(float(lon), float(lat), float(radius_m)),
        kind="circle",
        center=(float(lon), float(lat)),
        radius_m=float(radius_m),
    )


#: metres per degree on a sphere, as the visit kernels' distances use (``proximity._kernels_visit.M_PER_DEG``);
#: :func:`geofence.geodesy.metres_per_degree` (WGS84) would change a radius by -0.3 % to +0.2 % (0 to 60 degrees)
_M_PER_DEG = 111_320.0


def equivalent_radius_m(fence: Any) -> float:
    """A fence's size as one number: ``sqrt(area / pi)`` in metres (a circle's own radius). The area is the
    polygon's in degrees, scaled at its centroid's latitude (a fence is small against the Earth)."""
    if getattr(fence, "radius_m", None):
        return float(fence.radius_m)
    geom = fence.geometry
    lat = float(shapely.get_coordinates(shapely.centroid(geom))[0, 1])
    area_m2 = float(shapely.area(geom)) * _M_PER_DEG * _M_PER_DEG * math.cos(math.radians(lat))
    return math.sqrt(max(area_m2, 0.0) / math.pi)


__all__ = ["Fence", "FenceError", "FenceKind", "check_properties", "circle_fence", "equivalent_radius_m"]
