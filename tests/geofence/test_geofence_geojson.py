"""load_geojson: happy paths, and every bad input named with feature, field, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shapely

import geofence
from geofence import FenceError, FenceIndex, load_geojson

SQUARE = [[[2.35, 48.85], [2.351, 48.85], [2.351, 48.851], [2.35, 48.851], [2.35, 48.85]]]


def feature(fid: object = "a", geometry: object = None, **props: object) -> dict:
    feat: dict = {"type": "Feature", "properties": dict(props),
                  "geometry": geometry if geometry is not None else {"type": "Polygon", "coordinates": SQUARE}}
    if fid is not None:
        feat["id"] = fid
    return feat


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def write(tmp_path: Path, doc: dict) -> Path:
    """One feature per line block, pretty-printed, so line numbers are meaningful."""
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, occurrence: int = 0) -> int:
    lines = path.read_text().splitlines()
    hits = [k + 1 for k, line in enumerate(lines) if needle in line]
    return hits[occurrence]


def test_loads_polygons_multipolygons_circles_and_properties(tmp_path: Path) -> None:
    doc = collection(
        feature("shop", name="Shop", tags=["coffee"], dwell_s=120, timezone="Europe/Paris",
                opening_hours={"mon-fri": "09:00-20:00"}),
        feature("multi", {"type": "MultiPolygon", "coordinates": [SQUARE, [[[3, 4], [3.1, 4], [3.1, 4.1], [3, 4]]]]}),
        feature("circle", {"type": "Point", "coordinates": [2.36, 48.86]}, radius_m=25),
        {"type": "Feature", "properties": {"id": 7, "name": "by property id"},
         "geometry": {"type": "Polygon", "coordinates": SQUARE}},
    )
    fences = load_geojson(write(tmp_path, doc))
    assert [f.id for f in fences] == ["shop", "multi", "circle", "7"]
    shop, multi, circle, numeric = fences
    assert shop.name == "Shop" and shop.tags == ("coffee",) and shop.dwell_s == 120.0
    assert shop.properties["timezone"] == "Europe/Paris" and shop.properties["opening_hours"]["mon-fri"]
    assert shop.kind == "polygon" and shapely.equals(shop.geometry, shapely.Polygon(SQUARE[0]))
    assert multi.geometry.geom_type == "MultiPolygon"
    assert circle.kind == "circle" and circle.center == (2.36, 48.86) and circle.radius_m == 25.0
    assert numeric.name == "by property id"
    assert load_geojson(doc)[0] == shop, "a dict gives the same fences"
    assert load_geojson(json.dumps(doc))[2] == circle, "so does JSON text"
    index = FenceIndex(fences)
    m = index.match([2.3505, 2.36], [48.8505, 48.86])
    assert index.fence_ids[m.fence].tolist() == ["shop", "multi", "7", "circle"]


BAD_CASES = [
    # (feature, expected message part, field, line needle)
    (feature(None), "has no id", "features[1]", None),
    (feature("a"), "duplicate id 'a'", "features[1]", None),
    (feature("b", {"type": "Polygon", "coordinates": [[[2, 91], [3, 48], [3, 49], [2, 91]]]}),
     "latitude 91.0 outside [-90, 90]", "features[1].geometry.coordinates[0][0]", "91"),
    (feature("b", {"type": "Polygon", "coordinates": [[[2, 48], [181, 48], [3, 49], [2, 48]]]}),
     "longitude 181.0 outside [-180, 180]", "features[1].geometry.coordinates[0][1]", "181"),
    (feature("b", {"type": "Polygon", "coordinates": [[[2, 48], [3, 48], [2, 48]]]}),
     "at least 4 positions", "features[1].geometry.coordinates[0]", None),
    (feature("b", {"type": "Polygon", "coordinates": [[[2, 48], [3, 48], [3, 49], [2, 49]]]}),
     "not closed", "features[1].geometry.coordinates[0][3]", None),
    (feature("b", {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}),
     "self-intersecting ring at (1, 1)", "features[1].geometry.coordinates[0][0]", None),
    (feature("b", {"type": "Point", "coordinates": [2, 48]}, radius_m=0),
     "radius_m property > 0", "features[1].properties.radius_m", None),
    (feature("b", {"type": "Point", "coordinates": [2, 48]}, radius_m=50_001),
     "radius_m property > 0 and <= 50000", "features[1].properties.radius_m", None),
    (feature("b", {"type": "Point", "coordinates": [2, 48]}), "radius_m", "features[1].properties.radius_m", None),
    (feature("b", {"type": "LineString", "coordinates": [[2, 48], [3, 48]]}),
     "unsupported geometry type 'LineString'", "features[1].geometry.type", "LineString"),
    (feature("b", dwell_s=-1), "dwell_s must be a positive finite number", "features[1].properties.dwell_s", None),
    (feature("b", max_accuracy_m="far"), "max_accuracy_m must be", "features[1].properties.max_accuracy_m", None),
    (feature("b", tags="coffee"), "tags must be a list of strings", "features[1].properties.tags", None),
    (feature("b", tags=["ok", 3]), "tags must be a list of strings", "features[1].properties.tags", None),
]


@pytest.mark.parametrize("bad, message, field, needle", BAD_CASES)
def test_bad_features_name_feature_field_and_line(tmp_path: Path, bad: dict, message: str, field: str,
                                                   needle: str | None) -> None:
    path = write(tmp_path, collection(feature("a"), bad))
    with pytest.raises(FenceError) as info:
        load_geojson(path)
    exc = info.value
    assert message in exc.message
    assert exc.feature == 1 and exc.row == 1 and exc.field == field
    assert exc.source == str(path) and exc.line is not None and exc.col is not None
    assert exc.message.startswith("feature 1")
    if "id" in bad:  # the feature is named by its index and its id
        assert exc.fence_id == bad["id"] and exc.message.startswith(f"feature 1 (id {bad['id']!r}): ")
    else:
        assert exc.fence_id is None and exc.message.startswith("feature 1: ")
    second_feature_line = line_of(path, '"type": "Feature"', 1) - 1  # its opening brace
    assert exc.line >= second_feature_line, "the line points into the bad feature"
    if needle is not None:  # json.dumps(indent=2) puts a position's numbers on the lines after its "["
        assert needle in " ".join(path.read_text().splitlines()[exc.line - 1 : exc.line + 3])
    assert str(exc).startswith(f"{path}:{exc.line}:{exc.col}: feature 1")


def test_non_finite_numbers_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "nan.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [\n {"type": "Feature", "id": "x", "properties": {},\n'
                    '  "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [NaN, 1], [1, 1], [0, 0]]]}}]}')
    with pytest.raises(FenceError, match="non-finite") as info:
        load_geojson(path)
    assert info.value.line == 3 and info.value.fence_id == "x"
    path.write_text('{"type": "FeatureCollection",\n "features": [,]}')
    with pytest.raises(FenceError, match="not valid JSON") as info:
        load_geojson(path)
    assert info.value.line == 2
    with pytest.raises(FenceError, match="FeatureCollection"):
        load_geojson({"type": "Feature"})
    with pytest.raises(OSError):
        load_geojson(tmp_path / "missing.geojson")


def test_repair_makes_invalid_polygons_valid() -> None:
    bowtie = feature("bow", {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]})
    with pytest.raises(FenceError, match="repair=True"):
        load_geojson(collection(bowtie))
    (fence,) = load_geojson(collection(bowtie), repair=True)
    assert fence.geometry.is_valid and fence.geometry.area == pytest.approx(2.0)
    index = FenceIndex([fence])
    assert len(index.match([0.5, 1.5, 1.0], [1.0, 1.0, 0.2])) == 2


def test_antimeridian_multipolygon_and_circle_file(tmp_path: Path) -> None:
    doc = collection(
        feature("fiji", {"type": "MultiPolygon", "coordinates": [
            [[[179.9, -17], [180, -17], [180, -16.9], [179.9, -16.9], [179.9, -17]]],
            [[[-180, -17], [-179.9, -17], [-179.9, -16.9], [-180, -16.9], [-180, -17]]]]}),
        feature("ring", {"type": "Point", "coordinates": [179.9999, -18.0]}, radius_m=100),
    )
    index = FenceIndex(load_geojson(write(tmp_path, doc)))
    m = index.match([179.95, -179.95, -179.9995], [-16.95, -16.95, -18.0])
    assert index.fence_ids[m.fence].tolist() == ["fiji", "fiji", "ring"]
    ring = index.fences[index.position("ring")]
    assert ring.geometry.geom_type == "MultiPolygon", "the display polygon is split at +-180"


def test_error_renders_through_the_project_describe(tmp_path: Path) -> None:
    from proximity.errors import as_json, describe

    path = write(tmp_path, collection(feature("a"), feature("a")))
    with pytest.raises(FenceError) as info:
        load_geojson(path)
    text = describe(info.value)
    assert text.startswith(f"{path}:") and "duplicate id 'a'" in text
    assert as_json(info.value)["field"] == "features[1]"


def test_public_api_is_exported_and_sorted() -> None:
    assert geofence.__all__ == sorted(geofence.__all__)
    public = {n for n in dir(geofence) if not n.startswith("_")} - {"fences", "geodesy", "geojson", "index"}
    assert set(geofence.__all__) == public
