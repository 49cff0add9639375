"""Generate the bundled example data (deterministic: same bytes on every run).

- ``fences.geojson``: a small district in Paris (Les Halles): standalone stores
  (polygons 20-150 m across), a mall whose shops share walls, three circle
  fences; ids ``store-01`` ... ``store-19``.
- ``pings.csv``: ``ts,device_id,lon,lat,accuracy_m,timezone,age,segments,opt_out``
  for 20 devices (``dev-001`` ...) on Saturday 14 March 2026: a ping every 30 s
  with GPS noise, visits of 3-25 minutes to stores, walk-bys, and one device
  parked just outside a store. Most devices come in the morning; three early
  birds get coffee before 08:00 (inside the campaigns' quiet hours) and three
  shop in the evening after 21:30. The last three columns are device attributes
  the campaigns' audiences read (``age``, one segment, an opt-out flag).

Run: ``python -m proximity.examples.make_examples`` (writes next to this file).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path

import numpy as np

SEED = 20260314
LON0, LAT0 = 2.3470, 48.8620  # Les Halles, Paris
DAY = dt.datetime(2026, 3, 14, 8, 0, tzinfo=dt.UTC)  # 09:00 in Paris
PING_S = 30
HERE = Path(__file__).resolve().parent

_KX = 111_320.0 * math.cos(math.radians(LAT0))  # metres per degree of longitude (local, for generation)
_KY = 111_132.0


def to_lonlat(x: float | np.ndarray, y: float | np.ndarray) -> tuple:
    return LON0 + np.asarray(x) / _KX, LAT0 + np.asarray(y) / _KY


def rect(x: float, y: float, w: float, h: float, angle_deg: float = 0.0) -> list[list[float]]:
    """A w x h metre rectangle with its south-west corner at (x, y) metres from the origin, rotated."""
    a = math.radians(angle_deg)
    pts = [(0, 0), (w, 0), (w, h), (0, h)]
    out = []
    for px, py in pts:
        rx = x + px * math.cos(a) - py * math.sin(a)
        ry = y + px * math.sin(a) + py * math.cos(a)
        lon, lat = to_lonlat(rx, ry)
        out.append([round(float(lon), 7), round(float(lat), 7)])
    return [*out, out[0]]


def l_shape(x: float, y: float, w: float, h: float, cut_w: float, cut_h: float) -> list[list[float]]:
    pts = [(0, 0), (w, 0), (w, h - cut_h), (w - cut_w, h - cut_h), (w - cut_w, h), (0, h)]
    out = []
    for px, py in pts:
        lon, lat = to_lonlat(x + px, y + py)
        out.append([round(float(lon), 7), round(float(lat), 7)])
    return [*out, out[0]]


HOURS = {"mon-fri": "09:00-20:00", "sat": "10:00-19:00"}
LATE = {"mon-sat": "07:30-22:00", "sun": "09:00-13:00"}

# (id, name, tags, ring in metres or circle, extra properties)
STORES: list[tuple[str, str, list[str], object, dict]] = [
    ("store-01", "Café Lumière", ["coffee"], rect(-180, 60, 22, 18, 8), {"dwell_s": 120, "opening_hours": LATE}),
    ("store-02", "Marché Bio", ["grocery"], rect(-120, -140, 70, 45, -5), {"dwell_s": 300}),
    ("store-03", "Librairie du Louvre", ["books"], rect(60, 150, 35, 28, 12), {"dwell_s": 240}),
    ("store-04", "Pharmacie Centrale", ["pharmacy"], rect(210, -60, 25, 20), {"max_accuracy_m": 30}),
    ("store-05", "Boulangerie Saint-Eustache", ["bakery", "coffee"], rect(-60, 200, 20, 16, -10),
     {"dwell_s": 90, "opening_hours": LATE}),
    ("store-06", "SuperPrix", ["grocery"], l_shape(260, 120, 110, 90, 40, 35), {"dwell_s": 300}),
    ("store-07", "Sport Zone", ["sports", "fashion"], rect(-300, -40, 60, 40, 20), {}),
    ("store-08", "Opticien Rivoli", ["optician"], rect(120, -180, 18, 22), {"dwell_s": 180}),
    ("store-09", "Fleurs & Co", ["flowers"], rect(-250, 180, 20, 20, 30), {}),
    ("store-10", "Halle Électronique", ["electronics"], rect(320, -200, 130, 80, -3), {"dwell_s": 240}),
    # the mall and its shops (shared walls)
    ("store-11", "Forum des Halles", ["mall"], rect(-40, -40, 160, 110), {"dwell_s": 600}),
    ("store-12", "Mode Forum", ["fashion"], rect(-40, -40, 50, 40), {"dwell_s": 180}),
    ("store-13", "Tech Forum", ["electronics"], rect(10, -40, 50, 40), {"dwell_s": 180}),
    ("store-14", "Café du Forum", ["coffee"], rect(60, -40, 30, 40), {"dwell_s": 120}),
    ("store-15", "Chaussures Forum", ["fashion", "shoes"], rect(90, -40, 30, 40), {"dwell_s": 180}),
    ("store-16", "Jouets Forum", ["toys"], rect(-40, 30, 60, 40), {"dwell_s": 180}),
    # circles: (x, y, radius) in metres
    ("store-17", "Kiosque Châtelet", ["news", "coffee"], ("circle", 160, 40, 15.0), {"dwell_s": 60}),
    ("store-18", "Marché aux Puces", ["market"], ("circle", -200, -250, 40.0), {"dwell_s": 300}),
    ("store-19", "Station Rivoli", ["fuel"], ("circle", 380, 60, 30.0), {"dwell_s": 120}),
]


def build_fences() -> dict:
    features = []
    for fid, name, tags, shape, extra in STORES:
        props = {"name": name, "tags": tags, "timezone": "Europe/Paris", "opening_hours": HOURS}
        props.update(extra)
        if isinstance(shape, tuple):
            _, x, y, r = shape
            lon, lat = to_lonlat(x, y)
            props["radius_m"] = r
            geometry = {"type": "Point", "coordinates": [round(float(lon), 7), round(float(lat), 7)]}
        else:
            geometry = {"type": "Polygon", "coordinates": [shape]}
        features.append({"type": "Feature", "id": fid, "properties": props, "geometry": geometry})
    return {"type": "FeatureCollection", "features": features}


def fences_text(doc: dict) -> str:
    """One feature per line, so error line numbers point at a feature."""
    lines = [json.dumps(f, ensure_ascii=False) for f in doc["features"]]
    return '{"type": "FeatureCollection", "features": [\n' + ",\n".join(lines) + "\n]}\n"


def _inside_point(rng: np.random.Generator, fence: dict) -> tuple[float, float]:
    """A point (metres) well inside a fence."""
    geom = fence["geometry"]
    if geom["type"] == "Point":
        lon, lat = geom["coordinates"]
        r = fence["properties"]["radius_m"] * 0.5 * math.sqrt(rng.uniform())
        a = rng.uniform(0, 2 * math.pi)
        return (lon - LON0) * _KX + r * math.cos(a), (lat - LAT0) * _KY + r * math.sin(a)
    ring = np.array(geom["coordinates"][0][:-1])
    xs, ys = (ring[:, 0] - LON0) * _KX, (ring[:, 1] - LAT0) * _KY
    cx, cy = xs.mean(), ys.mean()
    t = rng.uniform(0.0, 0.35)
    k = rng.integers(len(xs))
    return cx + t * (xs[k] - cx), cy + t * (ys[k] - cy)


def _walk(a: tuple[float, float], b: tuple[float, float], speed: float) -> int:
    return max(1, int(math.hypot(b[0] - a[0], b[1] - a[1]) / (speed * PING_S)))


EARLY = (15, 16, 17)  # early birds: coffee at 07:30-08:00 in Paris, inside the quiet hours (held)
EVENING = (18, 19, 20)  # evening shoppers after 21:30 in Paris (held until the morning)
SEGMENTS = ("gold", "silver", "bronze", "")
STAFF, OPTED_OUT, MINOR = 4, 12, 9  # a shop employee, a device that opted out, a 16-year-old


def device_attrs(rng: np.random.Generator, d: int) -> tuple[str, str, str, str]:
    """``(timezone, age, segments, opt_out)`` of device ``d`` (the CSV's attribute columns)."""
    age = 16 if d == MINOR else int(rng.integers(19, 70))
    segment = "staff" if d == STAFF else SEGMENTS[int(rng.integers(len(SEGMENTS)))]
    return "Europe/Paris", str(age), segment, "true" if d == OPTED_OUT else ""


def build_pings(doc: dict) -> list[tuple[str, ...]]:
    rng = np.random.default_rng(SEED)
    feats = {f["id"]: f for f in doc["features"]}
    visitable = [fid for fid in feats if fid != "store-11"]
    rows: list[tuple[str, ...]] = []
    for d in range(1, 21):
        device = f"dev-{d:03d}"
        attrs = device_attrs(rng, d)
        plan: list[str] = []  # the first stores visited, before random ones
        if d in EARLY:  # 07:20-07:40 in Paris; the cafés open at 07:30
            t = DAY - dt.timedelta(minutes=100) + dt.timedelta(seconds=int(rng.integers(0, 20)) * 60)
            plan = [["store-01", "store-05"][d % 2], "store-17"]
        elif d in EVENING:  # 21:00-21:30 in Paris
            t = DAY + dt.timedelta(hours=13, seconds=int(rng.integers(0, 30)) * 60)
            plan = [["store-02", "store-06"][d % 2], "store-01"]
        else:
            t = DAY + dt.timedelta(seconds=int(rng.integers(0, 90)) * 60 + int(rng.integers(0, 30)))
        pos = (float(rng.uniform(-450, 450)), float(rng.uniform(-350, 350)))
        track: list[tuple[float, float, float]] = []  # (x, y, accuracy) per ping
        if d == 7:  # parked just outside store-03 (8 m beyond its east wall) for 40 minutes
            ring = np.array(feats["store-03"]["geometry"]["coordinates"][0][:-1])
            xs, ys = (ring[:, 0] - LON0) * _KX, (ring[:, 1] - LAT0) * _KY
            spot = (float(xs.max()) + 8.0, float(ys.mean()))
            for _ in range(_walk(pos, spot, 1.3)):
                pos = (pos[0] + (spot[0] - pos[0]) * 0.2, pos[1] + (spot[1] - pos[1]) * 0.2)
                track.append((pos[0], pos[1], 12.0))
            track += [(spot[0], spot[1], 10.0)] * 80
        else:
            for k in range(int(rng.integers(3, 8))):
                kind = rng.uniform()
                fid = visitable[int(rng.integers(len(visitable)))]
                if k < len(plan):
                    kind, fid = 0.5 + 0.5 * kind, plan[k]  # a planned visit, never a walk-by
                target = _inside_point(rng, feats[fid])
                if kind < 0.25:  # walk-by: pass 25-40 m from the store without entering
                    off = float(rng.uniform(25, 40))
                    target = (target[0] + off, target[1] - off)
                steps = _walk(pos, target, float(rng.uniform(1.1, 1.5)))
                for k in range(1, steps + 1):
                    f = k / steps
                    track.append((pos[0] + f * (target[0] - pos[0]), pos[1] + f * (target[1] - pos[1]), 15.0))
                pos = target
                if kind >= 0.25:  # a visit of 3-25 minutes, indoors (worse accuracy)
                    for _ in range(int(rng.integers(6, 51))):
                        track.append((pos[0] + rng.normal(0, 1.5), pos[1] + rng.normal(0, 1.5), 20.0))
        for x, y, acc in track:
            accuracy = max(3.0, acc * float(rng.uniform(0.6, 1.4)))
            nx, ny = rng.normal(0, accuracy / 2.5, 2)
            lon, lat = to_lonlat(x + nx, y + ny)
            rows.append((t.strftime("%Y-%m-%dT%H:%M:%SZ"), device, f"{float(lon):.7f}", f"{float(lat):.7f}",
                         f"{accuracy:.1f}", *attrs))
            t += dt.timedelta(seconds=PING_S + int(rng.integers(-2, 3)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


PING_COLUMNS = ("ts", "device_id", "lon", "lat", "accuracy_m", "timezone", "age", "segments", "opt_out")


def pings_text(rows: list[tuple[str, ...]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PING_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def main(out_dir: Path = HERE) -> None:
    doc = build_fences()
    (out_dir / "fences.geojson").write_text(fences_text(doc), encoding="utf-8")
    (out_dir / "pings.csv").write_text(pings_text(build_pings(doc)), encoding="utf-8")


if __name__ == "__main__":
    main()
