"""``proximity fences``: check a GeoJSON fence file, match points (CSV) against it."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from proximity.errors import ValidationError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fences", help="geofences: check a GeoJSON file, match points against it",
        description="Geofences: check a GeoJSON FeatureCollection of fences, match points (CSV) against it.")
    sub = parser.add_subparsers(dest="fences_command", metavar="SUBCOMMAND")
    parser.set_defaults(run=lambda args: (parser.print_help(sys.stderr), 2)[1])

    m = sub.add_parser(
        "match", help="which fences contain each point of a CSV",
        description="Match the points of a CSV (header with lon,lat and optionally accuracy_m; other columns "
                    "such as ts,device_id are ignored) against the fences of a GeoJSON file. Prints CSV "
                    "'point,fence_id' (plus 'confidence' when the CSV has accuracy_m: 3 the accuracy circle "
                    "is fully inside, 2 the point is inside, 1 outside but within its accuracy), one row per "
                    "pair, sorted by point then fence id; 'point' is the 0-based data row. The boundary counts "
                    "as inside. A bad file: 'file:line: message' on stderr and exit 2.",
        epilog="example: proximity fences match fences.geojson pings.csv --out matches.csv")
    m.add_argument("fences", metavar="FENCES.geojson")
    m.add_argument("points", metavar="POINTS.csv")
    m.add_argument("--out", metavar="FILE", help="write the CSV here instead of standard output")
    m.add_argument("--no-accuracy", action="store_true",
                   help="ignore the accuracy_m column (plain point-in-fence, no confidence column)")
    m.add_argument("--repair", action="store_true",
                   help="make invalid polygons valid (shapely make_valid) instead of rejecting the file")
    m.set_defaults(run=_run_match)

    c = sub.add_parser(
        "check", help="validate a GeoJSON fence file and summarise it",
        description="Load and validate a GeoJSON fence file; print how many fences of each kind it holds. "
                    "A bad file: 'file:line:col: message' on stderr and exit 2.")
    c.add_argument("fences", metavar="FENCES.geojson")
    c.add_argument("--repair", action="store_true", help="make invalid polygons valid instead of rejecting them")
    c.set_defaults(run=_run_check)


def read_points(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``lon, lat`` (and ``accuracy_m`` when the header has it) as float64 arrays.

    Raises ``ValidationError`` with the file, line and column for a missing column,
    a short row, or a value that is not a number in range.
    """
    source = str(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValidationError("empty file: expected a header with lon,lat", source=source, line=1)
        names = [h.strip() for h in header]
        missing = [c for c in ("lon", "lat") if c not in names]
        if missing:
            raise ValidationError(f"the header has no {' and '.join(repr(c) for c in missing)} column "
                                  f"(got {','.join(names)})", source=source, line=1, field=missing[0])
        wanted = [c for c in ("lon", "lat", "accuracy_m") if c in names]
        cols = [names.index(c) for c in wanted]
        need = max(cols) + 1
        values: list[list[str]] = [[] for _ in wanted]
        lines: list[int] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < need:
                raise ValidationError(f"row has {len(row)} fields, expected at least {need}", source=source,
                                      line=reader.line_num, row=len(lines))
            for k, c in enumerate(cols):
                values[k].append(row[c])
            lines.append(reader.line_num)
    arrays = [_numbers(v, name, lines, source) for v, name in zip(values, wanted, strict=True)]
    lon, lat = arrays[0], arrays[1]
    for arr, name, limit in ((lon, "lon", 180.0), (lat, "lat", 90.0)):
        bad = np.flatnonzero(np.abs(arr) > limit)
        if bad.size:
            k = int(bad[0])
            raise ValidationError(f"{name} {arr[k]} outside [-{limit:g}, {limit:g}] in column {name!r}",
                                  source=source, line=lines[k], field=name, row=k)
    acc = arrays[2] if len(arrays) > 2 else None
    if acc is not None:
        bad = np.flatnonzero(acc < 0)
        if bad.size:
            k = int(bad[0])
            raise ValidationError(f"accuracy_m {acc[k]} is negative in column 'accuracy_m'", source=source,
                                  line=lines[k], field="accuracy_m", row=k)
    return lon, lat, acc


def _numbers(texts: Sequence[str], name: str, lines: Sequence[int], source: str) -> np.ndarray:
    try:
        arr = np.asarray(texts, dtype=np.float64) if texts else np.empty(0)
    except ValueError:
        arr = None
    if arr is None or not np.isfinite(arr).all():
        for k, text in enumerate(texts):
            try:
                ok = np.isfinite(float(text))
            except ValueError:
                ok = False
            if not ok:
                raise ValidationError(f"bad number {text!r} in column {name!r}", source=source, line=lines[k],
                                      field=name, row=k) from None
    assert arr is not None
    return arr


def _run_match(args: argparse.Namespace) -> int:
    from geofence import FenceIndex, load_geojson  # here: numba loads only for the commands that use it

    index = FenceIndex(load_geojson(args.fences, repair=args.repair))
    lon, lat, acc = read_points(args.points)
    if args.no_accuracy:
        acc = None
    m = index.match(lon, lat, accuracy_m=acc)
    ids = index.fence_ids
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(ids.astype(str), kind="stable")] = np.arange(len(ids))
    order = np.lexsort((rank[m.fence], m.point))
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as out:
            _write(out, m.point[order], ids[m.fence[order]], m.confidence[order] if acc is not None else None)
    else:
        _write(sys.stdout, m.point[order], ids[m.fence[order]], m.confidence[order] if acc is not None else None)
    return 0


def _write(out: TextIO, point: np.ndarray, fence_id: np.ndarray, confidence: np.ndarray | None) -> None:
    writer = csv.writer(out, lineterminator="\n")
    if confidence is None:
        writer.writerow(["point", "fence_id"])
        writer.writerows(zip(point.tolist(), fence_id.tolist(), strict=True))
    else:
        writer.writerow(["point", "fence_id", "confidence"])
        writer.writerows(zip(point.tolist(), fence_id.tolist(), confidence.tolist(), strict=True))


def _run_check(args: argparse.Namespace) -> int:
    from geofence import load_geojson

    fences = load_geojson(args.fences, repair=args.repair)
    kinds = {"polygon": 0, "circle": 0}
    for f in fences:
        kinds[f.kind] += 1
    tags = sorted({t for f in fences for t in f.tags})
    print(f"{args.fences}: {len(fences)} fences ({kinds['polygon']} polygons, {kinds['circle']} circles)"
          + (f"; tags: {', '.join(tags)}" if tags else ""))
    return 0
