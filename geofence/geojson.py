"""Reading fences from an RFC 7946 FeatureCollection, with errors that say where.

Each feature becomes a :class:`~geofence.fences.Fence`: Polygon and MultiPolygon
geometries as they are; a Point with a ``radius_m`` property (metres, 0 < r <= 50 km)
as a circle. The fence id is the feature's ``id`` (or ``properties.id``); the
name is ``properties.name`` (default: the id); ``tags`` a list of strings.

A bad feature raises :class:`~geofence.fences.FenceError` naming the feature
(index and id), the field and, for files and JSON text, the line and column.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from geofence.fences import Fence, FenceError, check_properties, circle_fence
from geofence.geodesy import MAX_RADIUS_M

PathPart = str | int


class _Problem(Exception):
    def __init__(self, message: str, path: Sequence[PathPart]) -> None:
        super().__init__(message)
        self.message = message
        self.path = tuple(path)


def _field(path: Sequence[PathPart]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


_DECODER = json.JSONDecoder()


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def locate(text: str, path: Sequence[PathPart]) -> int | None:
    """Offset in the JSON ``text`` of the value at ``path`` (keys and indexes); the deepest found."""
    i = _skip_ws(text, 0)
    try:
        for step in path:
            if i >= len(text):
                return None
            if isinstance(step, int) and text[i] == "[":
                j = _skip_ws(text, i + 1)
                for _ in range(step):
                    _, j = _DECODER.raw_decode(text, j)
                    j = _skip_ws(text, j)
                    if text[j] != ",":
                        return i
                    j = _skip_ws(text, j + 1)
                i = j
            elif isinstance(step, str) and text[i] == "{":
                j = _skip_ws(text, i + 1)
                found = None
                while j < len(text) and text[j] != "}":
                    key, j = _DECODER.raw_decode(text, j)
                    j = _skip_ws(text, j)
                    j = _skip_ws(text, j + 1)  # ':'
                    if key == step:
                        found = j
                    _, j = _DECODER.raw_decode(text, j)
                    j = _skip_ws(text, j)
                    if j < len(text) and text[j] == ",":
                        j = _skip_ws(text, j + 1)
                if found is None:
                    return i
                i = found
            else:
                return i
    except (ValueError, IndexError):
        return i
    return i


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _positions(value: Any, path: list[PathPart], min_len: int = 1) -> np.ndarray:
    if not isinstance(value, list) or len(value) < min_len:
        raise _Problem(f"expected a list of at least {min_len} positions", path)
    for k, pos in enumerate(value):
        if (not isinstance(pos, list) or len(pos) < 2
                or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in pos)):
            raise _Problem(f"a position must be [lon, lat] numbers, got {json.dumps(pos)[:60]}", [*path, k])
    arr = np.array([pos[:2] for pos in value], dtype=np.float64)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _Problem(f"non-finite coordinate {value[k][:2]}", [*path, k])
    bad = np.abs(arr[:, 1]) > 90.0
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _Problem(f"latitude {arr[k, 1]} outside [-90, 90]", [*path, k])
    bad = np.abs(arr[:, 0]) > 180.0
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _Problem(f"longitude {arr[k, 0]} outside [-180, 180]", [*path, k])
    return arr


def _ring(value: Any, path: list[PathPart]) -> np.ndarray:
    if not isinstance(value, list):
        raise _Problem("a ring must be a list of positions", path)
    arr = _positions(value, path, min_len=0)
    if arr.shape[0] < 4:
        raise _Problem(f"a ring needs at least 4 positions, got {arr.shape[0]}", path)
    if not np.array_equal(arr[0], arr[-1]):
        raise _Problem(f"ring is not closed: first position {arr[0].tolist()} != last {arr[-1].tolist()}",
                       [*path, len(value) - 1])
    return arr


def _polygon_rings(value: Any, path: list[PathPart]) -> list[np.ndarray]:
    if not isinstance(value, list) or not value:
        raise _Problem("a polygon must be a non-empty list of rings", path)
    return [_ring(r, [*path, k]) for k, r in enumerate(value)]


def _where_on_rings(rings: list[tuple[list[PathPart], np.ndarray]], x: float, y: float) -> list[PathPart]:
    """Path of the ring position starting the segment nearest to (x, y)."""
    best: tuple[float, list[PathPart]] = (math.inf, [])
    for path, arr in rings:
        a, b = arr[:-1], arr[1:]
        d = b - a
        l2 = (d * d).sum(axis=1)
        t = np.clip(((np.array([x, y]) - a) * d).sum(axis=1) / np.where(l2 > 0, l2, 1.0), 0.0, 1.0)
        q = a + t[:, None] * d
        dist = np.hypot(q[:, 0] - x, q[:, 1] - y)
        k = int(np.argmin(dist))
        if dist[k] < best[0]:
            best = (float(dist[k]), [*path, k])
    return best[1]


def _geometry(geom: Any, props: Mapping[str, Any], fpath: list[PathPart], repair: bool
              ) -> tuple[str, Any]:
    gpath = [*fpath, "geometry"]
    if not isinstance(geom, dict):
        raise _Problem("feature has no geometry object", gpath)
    gtype = geom.get("type")
    coords = geom.get("coordinates")
    cpath = [*gpath, "coordinates"]
    if gtype == "Point":
        pos = _positions([coords] if isinstance(coords, list) else coords, cpath, 1)
        radius = props.get("radius_m")
        if (isinstance(radius, bool) or not isinstance(radius, int | float) or not math.isfinite(radius)
                or radius <= 0 or radius > MAX_RADIUS_M):
            raise _Problem(f"a Point fence needs a radius_m property > 0 and <= {MAX_RADIUS_M:.0f} m, "
                           f"got {radius!r}", [*fpath, "properties", "radius_m"])
        return "circle", (float(pos[0, 0]), float(pos[0, 1]), float(radius))
    if gtype == "Polygon":
        polys = [(cpath, _polygon_rings(coords, cpath))]
    elif gtype == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise _Problem("a MultiPolygon must be a non-empty list of polygons", cpath)
        polys = [([*cpath, k], _polygon_rings(p, [*cpath, k])) for k, p in enumerate(coords)]
    else:
        raise _Problem(f"unsupported geometry type {gtype!r} (use Polygon, MultiPolygon, or Point with radius_m)",
                       [*gpath, "type"])
    shapes = [shapely.Polygon(rings[0], rings[1:]) for _, rings in polys]
    shape = shapes[0] if gtype == "Polygon" else shapely.MultiPolygon(shapes)
    if shapely.is_valid(shape):
        return "polygon", shape
    if repair:
        fixed = shapely.make_valid(shape)
        parts = [p for p in shapely.get_parts(shapely.get_parts(fixed)) if p.geom_type == "Polygon" and p.area > 0]
        if not parts:
            raise _Problem("geometry has no area left after repair", cpath)
        return "polygon", parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    reason = shapely.is_valid_reason(shape)
    where: list[PathPart] = cpath
    loc = shapely.is_valid_reason(shape).rsplit("[", 1)
    if len(loc) == 2:
        try:
            x, y = (float(v) for v in loc[1].rstrip("]").split()[:2])
        except ValueError:
            pass
        else:
            ring_paths = [([*ppath, k], r) for ppath, rings in polys for k, r in enumerate(rings)]
            where = _where_on_rings(ring_paths, x, y)
            kind = "self-intersecting ring" if reason.lower().startswith(("self-intersection", "ring self"))\
                else reason.split("[")[0].strip().lower()
            raise _Problem(f"invalid polygon: {kind} at ({x:.7g}, {y:.7g}); fix it or load with repair=True",
                           where)
    raise _Problem(f"invalid polygon: {reason}; fix it or load with repair=True", where)


def _feature(feat: Any, k: int, repair: bool) -> Fence:
    fpath: list[PathPart] = ["features", k]
    if not isinstance(feat, dict) or feat.get("type") != "Feature":
        raise _Problem("expected a GeoJSON Feature object", fpath)
    props = feat.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise _Problem("properties must be an object", [*fpath, "properties"])
    fid = feat.get("id", props.get("id"))
    if fid is None or fid == "" or isinstance(fid, bool) or not isinstance(fid, str | int | float):
        raise _Problem("feature has no id (set the Feature's \"id\" or properties.id)", fpath)
    fid = str(fid)
    reason = check_properties(props)
    if reason:
        key = reason.split(" ", 1)[0]
        raise _Problem(reason, [*fpath, "properties", key])
    name = props.get("name", fid)
    if not isinstance(name, str):
        raise _Problem(f"name must be a string, got {name!r}", [*fpath, "properties", "name"])
    tags = tuple(props.get("tags") or ())
    kind, geom = _geometry(feat.get("geometry"), props, fpath, repair)
    if kind == "circle":
        lon, lat, radius = geom
        try:
            return circle_fence(fid, lon, lat, radius, name=name, tags=tags, properties=props)
        except FenceError as exc:
            raise _Problem(exc.message, [*fpath, "geometry"]) from None
    return Fence(id=fid, name=name, tags=tags, properties=props, geometry=geom)


def load_geojson(source: str | os.PathLike[str] | Mapping[str, Any], *, repair: bool = False) -> list[Fence]:
    """Fences from a GeoJSON FeatureCollection: a file path, JSON text, or an already parsed dict.

    ``repair=True`` makes invalid polygons valid with shapely's ``make_valid``
    instead of rejecting them.
    """
    text: str | None = None
    name: str | None = None
    if isinstance(source, Mapping):
        doc: Any = source
    else:
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text, name = source, "<geojson>"
        else:
            name = os.fspath(source)
            text = Path(source).read_text(encoding="utf-8")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FenceError(f"not valid JSON: {exc.msg}", source=name, line=exc.lineno, col=exc.colno) from None
    try:
        return _collection(doc, repair)
    except _Problem as problem:
        line = col = None
        if text is not None:
            off = locate(text, problem.path)
            if off is not None:
                line, col = _line_col(text, off)
        at = problem.path[1] if len(problem.path) > 1 and problem.path[0] == "features" else None
        feature = at if isinstance(at, int) else None
        fence_id = None
        if isinstance(feature, int):
            feat = doc["features"][feature]
            if isinstance(feat, dict):
                raw = feat.get("id", (feat.get("properties") or {}).get("id")
                               if isinstance(feat.get("properties"), dict) else None)
                fence_id = str(raw) if raw is not None else None
        prefix = ""
        if isinstance(feature, int):
            prefix = f"feature {feature}" + (f" (id {fence_id!r})" if fence_id else "") + ": "
        raise FenceError(prefix + problem.message, source=name, line=line, col=col,
                         field=_field(problem.path), feature=feature, fence_id=fence_id) from None


def _collection(doc: Any, repair: bool) -> list[Fence]:
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise _Problem("expected a GeoJSON FeatureCollection", [])
    feats = doc.get("features")
    if not isinstance(feats, list):
        raise _Problem("FeatureCollection has no features list", ["features"])
    fences: list[Fence] = []
    seen: dict[str, int] = {}
    for k, feat in enumerate(feats):
        fence = _feature(feat, k, repair)
        if fence.id in seen:
            raise _Problem(f"duplicate id {fence.id!r} (also feature {seen[fence.id]})", ["features", k])
        seen[fence.id] = k
        fences.append(fence)
    return fences


__all__ = ["load_geojson", "locate"]
