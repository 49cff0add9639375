"""``proximity fences match|check``: output format, ordering, errors as file:line: message, exit 2."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely

from geofence import load_geojson
from proximity.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "proximity" / "examples"
SQUARE = [[[2.35, 48.85], [2.351, 48.85], [2.351, 48.851], [2.35, 48.851], [2.35, 48.85]]]


@pytest.fixture
def fences_file(tmp_path: Path) -> Path:
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "zeta", "properties": {}, "geometry": {"type": "Polygon", "coordinates": SQUARE}},
        {"type": "Feature", "id": "alpha", "properties": {"radius_m": 30},
         "geometry": {"type": "Point", "coordinates": [2.3505, 48.8505]}},
    ]}
    path = tmp_path / "f.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_match_prints_pairs_sorted_by_point_then_fence_id(tmp_path: Path, fences_file: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    pts = tmp_path / "p.csv"
    pts.write_text("ts,device_id,lat,lon\n2026-01-01T00:00:00Z,d,48.8505,2.3505\nx,d,0,0\nx,d,48.85,2.35\n")
    code, out, err = run(["fences", "match", str(fences_file), str(pts)], capsys)
    assert code == 0 and err == ""
    assert out.splitlines() == ["point,fence_id", "0,alpha", "0,zeta", "2,zeta"]


def test_match_with_accuracy_adds_confidence_and_out_file(tmp_path: Path, fences_file: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pts = tmp_path / "p.csv"
    # 0: centre of both. 1 and 2: 5.0 m outside the square's east edge and 41.7 m from the 30 m circle's
    # centre (pyproj geodesic), so 20 m of accuracy touches both fences and 10 m only the square. 3: far away.
    east = 2.351 + 5.0 / 73_000
    pts.write_text(f"lon,lat,accuracy_m\n2.3505,48.8505,10\n{east},48.8505,20\n{east},48.8505,10\n"
                   "2.0,48.0,5\n")
    out_file = tmp_path / "m.csv"
    code, out, _ = run(["fences", "match", str(fences_file), str(pts), "--out", str(out_file)], capsys)
    assert code == 0 and out == ""
    rows = list(csv.reader(io.StringIO(out_file.read_text())))
    assert rows == [["point", "fence_id", "confidence"], ["0", "alpha", "3"], ["0", "zeta", "3"],
                    ["1", "alpha", "1"], ["1", "zeta", "1"], ["2", "zeta", "1"]]
    code, out, _ = run(["fences", "match", str(fences_file), str(pts), "--no-accuracy"], capsys)
    assert out.splitlines() == ["point,fence_id", "0,alpha", "0,zeta"]


@pytest.mark.parametrize("content, line, message", [
    ("lon,lat\n2.35,48.85\n2.35,abc\n", 3, "bad number 'abc' in column 'lat'"),
    ("lon,lat,accuracy_m\n2.35,48.85,5\n2.35,48.85,\n", 3, "bad number '' in column 'accuracy_m'"),
    ("lon,lat,accuracy_m\n2.35,48.85,-5\n", 2, "accuracy_m -5.0 is negative"),
    ("lon,lat\n2.35,48.85\n\n200,48.85\n", 4, "lon 200.0 outside [-180, 180]"),
    ("lon,lat\nnan,48.85\n", 2, "bad number 'nan' in column 'lon'"),
    ("lon,lat\n2.35\n", 2, "row has 1 fields"),
    ("x,y\n1,2\n", 1, "no 'lon' and 'lat' column"),
    ("", 1, "empty file"),
])
def test_bad_points_file_is_reported_with_line_and_exit_2(tmp_path: Path, fences_file: Path, content: str,
                                                          line: int, message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pts = tmp_path / "p.csv"
    pts.write_text(content)
    code, out, err = run(["fences", "match", str(fences_file), str(pts)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"{pts}:{line}: ") and message in err, err
    assert "Traceback" not in err


def test_bad_fences_file_is_reported_with_line_and_exit_2(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [\n'
                    '{"type": "Feature", "id": "a", "properties": {}, "geometry": '
                    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},\n'
                    '{"type": "Feature", "id": "b", "properties": {}, "geometry": '
                    '{"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}}\n]}\n')
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat\n0.5,0.5\n")
    code, out, err = run(["fences", "match", str(path), str(pts)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"{path}:3:") and "feature 1 (id 'b')" in err and "self-intersecting ring" in err
    code, out, _ = run(["fences", "match", str(path), str(pts), "--repair"], capsys)
    assert code == 0 and out.splitlines()[1:] == ["0,a", "0,b"]
    code, _, err = run(["fences", "check", str(path)], capsys)
    assert code == 2 and err.startswith(f"{path}:3:")
    code, _, err = run(["fences", "match", str(tmp_path / "nope.geojson"), str(pts)], capsys)
    assert code == 2 and "nope.geojson" in err


def test_example_data_matches_shapely_and_has_the_expected_shape(capsys: pytest.CaptureFixture[str]) -> None:
    fences = load_geojson(EXAMPLES / "fences.geojson")
    ids = [f.id for f in fences]
    assert ids == [f"store-{k:02d}" for k in range(1, len(ids) + 1)] and 12 <= len(ids) <= 20
    assert sum(f.kind == "circle" for f in fences) == 3
    assert all(f.properties["timezone"] == "Europe/Paris" and f.properties["opening_hours"] for f in fences)
    code, out, _ = run(["fences", "match", str(EXAMPLES / "fences.geojson"), str(EXAMPLES / "pings.csv"),
                        "--no-accuracy"], capsys)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))[1:]
    pings = list(csv.DictReader(io.StringIO((EXAMPLES / "pings.csv").read_text())))
    assert {p["device_id"] for p in pings} == {f"dev-{k:03d}" for k in range(1, 21)}
    lon = np.array([float(p["lon"]) for p in pings])
    lat = np.array([float(p["lat"]) for p in pings])
    expected = set()
    for f in fences:
        if f.kind == "polygon":
            expected |= {(int(i), f.id) for i in np.flatnonzero(shapely.intersects_xy(f.geometry, lon, lat))}
    got = {(int(p), fid) for p, fid in rows if fences[ids.index(fid)].kind == "polygon"}
    assert got == expected
    assert len({fid for _, fid in rows}) >= 15, "most stores get visits"


def test_check_summarises(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["fences", "check", str(EXAMPLES / "fences.geojson")], capsys)
    assert code == 0 and "19 fences (16 polygons, 3 circles)" in out and "mall" in out


def test_examples_are_reproducible(tmp_path: Path) -> None:
    from proximity.examples import make_examples

    make_examples.main(tmp_path)
    for name in ("fences.geojson", "pings.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name
    assert (EXAMPLES / "pings.csv").stat().st_size < 1_000_000


def test_real_subprocess(tmp_path: Path, fences_file: Path) -> None:
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat\n2.3505,48.8505\n2.35,oops\n")
    proc = subprocess.run([sys.executable, "-m", "proximity", "fences", "match", str(fences_file), str(pts)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"{pts}:3: bad number 'oops' in column 'lat'"
    pts.write_text("lon,lat\n2.3505,48.8505\n")
    proc = subprocess.run([sys.executable, "-m", "proximity", "fences", "match", str(fences_file), str(pts)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["point,fence_id", "0,alpha", "0,zeta"]
