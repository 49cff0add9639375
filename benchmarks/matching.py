"""Matching: ``FenceIndex.match`` side by side with shapely 2, geopandas, PostGIS and Redis GEOSEARCH.

    python -m benchmarks matching [--quick] [--pings N] [--fences N,N,...] [--peer-pings N]
                                  [--threads N] [--no-geopandas] [--no-postgis] [--no-redis]

One seeded synthetic city (0.6 x 0.6 degrees around Paris): store-sized fences
(polygons of 8 to 64 vertices, circles; 40 to 150 m across) and pings, half of
them within 100 m of a store, half anywhere. Every system answers the same
question on the same data in the same run, "which (ping, fence) pairs
intersect", and its pairs are compared with FenceIndex's before its time counts:

- FenceIndex: ``index.match(lon, lat)`` on float64 arrays (numba kernels; one
  thread unless ``--threads``); the index is built beforehand (build time reported apart).
- shapely 2: ``STRtree(geoms)`` built beforehand; timed: ``shapely.points(lon, lat)``
  plus ``tree.query(points, predicate="intersects")`` (one core).
- geopandas: the fences' GeoDataFrame and its sindex built beforehand; timed:
  ``GeoDataFrame(geometry=points_from_xy(...))`` plus ``sjoin(predicate="intersects")``.
- PostGIS: fences in a GiST-indexed table; the pings COPYed in once ("load",
  reported apart, with the points' GiST index the circle join uses); timed: one
  ``ST_Intersects`` join (circles: ``ST_DWithin`` on geography, spheroid) on one
  backend (no parallel workers), including fetching the pairs to Python.
- Redis: circle centres GEOADDed under a unique key (deleted afterwards); timed:
  one ``GEOSEARCH ... BYRADIUS <largest radius> m WITHDIST`` per ping, pipelined
  in chunks of 10,000, plus the client's filter ``dist <= that fence's radius``.
  Redis has no polygon query, so it runs on circles only.

Checking: polygon pairs must be equal (all systems use planar lon/lat geometry).
Circles differ by construction (FenceIndex: WGS84 ellipsoid; PostGIS: spheroid;
Redis: a sphere and 52-bit geohash positions; shapely and geopandas: the fences'
72-gon display polygons), so a differing pair is accepted only when the ping's
pyproj geodesic distance to the centre is within 0.5% of the radius + 1 m; any
other difference marks the peer MISMATCH and its ratio is not given.

PostGIS and Redis run on the first ``--peer-pings`` pings; FenceIndex is timed
again on exactly those pings for their ratio. Ratios are peer time / FenceIndex
time (higher: FenceIndex faster). Absolute times on a shared machine are noisy;
the ratios are what to read.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks._common import describe_machine, markdown_table, table, write_results
from benchmarks._matching_peers import (
    GeoPandas,
    PostGIS,
    Redis,
    Shapely,
    Timing,
    Unavailable,
    run_fenceindex,
)

CITY = (2.0, 48.6, 2.6, 49.2)
M_LAT = 111_320.0
CIRCLE_BAND_REL = 0.005
CIRCLE_BAND_ABS_M = 1.0


# ---------------------------------------------------------------------------- data


def _m_lon(lat: np.ndarray) -> np.ndarray:
    return M_LAT * np.cos(np.radians(lat))


def store_polygons(n: int, seed: int, prefix: str = "p") -> list[Any]:
    """``n`` star-shaped store polygons (8 to 64 vertices, 40 to 150 m across) over the city."""
    import shapely

    from geofence import Fence

    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = CITY
    lon, lat = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    size = rng.uniform(40.0, 150.0, n)
    k = rng.integers(8, 65, n)
    owner = np.repeat(np.arange(n), k)
    within = np.arange(owner.size) - np.repeat(np.cumsum(k) - k, k)
    ang = (within + rng.uniform(0.0, 0.9, owner.size)) * (2.0 * np.pi / k[owner])  # gaps < pi: a simple star
    rad = size[owner] / 2.0 * rng.uniform(0.7, 1.0, owner.size)
    xy = np.column_stack([lon[owner] + rad * np.cos(ang) / _m_lon(lat[owner]), lat[owner] + rad * np.sin(ang) / M_LAT])
    polys = shapely.polygons(shapely.linearrings(xy, indices=owner))
    if not shapely.is_valid(polys).all():  # cannot happen with distinct sorted angles; checked, not assumed
        raise RuntimeError("generated an invalid store polygon")
    return [Fence(id=f"{prefix}{i:06d}", name=f"{prefix}{i:06d}", tags=(), properties={}, geometry=g)
            for i, g in enumerate(polys)]


def store_circles(n: int, seed: int) -> list[Any]:
    """``n`` circle fences (radius 20 to 75 m) over the city, each with its 72-gon display polygon."""
    import shapely
    from pyproj import Geod

    from geofence import Fence

    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = CITY
    lon, lat = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    r = rng.uniform(20.0, 75.0, n)
    seg = 72
    az = np.tile(np.linspace(0.0, 360.0, seg, endpoint=False), n)
    plon, plat, _ = Geod(ellps="WGS84").fwd(np.repeat(lon, seg), np.repeat(lat, seg), az, np.repeat(r, seg))
    polys = shapely.polygons(shapely.linearrings(np.column_stack([plon, plat]), indices=np.repeat(np.arange(n), seg)))
    return [Fence(id=f"c{i:06d}", name=f"c{i:06d}", tags=(), properties={"radius_m": float(r[i])}, geometry=g,
                  kind="circle", center=(float(lon[i]), float(lat[i])), radius_m=float(r[i]))
            for i, g in enumerate(polys)]


def outline(n_vertices: int, cx: float, cy: float, radius_m: float, seed: int, spiky: bool = False) -> Any:
    """A district-sized polygon of ``n_vertices``: a smooth wavy outline with 0.3 m of noise (a boundary
    traced at high resolution), or (``spiky``) a star whose every vertex lies at a random 60-100% of the
    radius, so that a horizontal line crosses hundreds of its edges (the worst case for a band table)."""
    import shapely

    from geofence import Fence

    rng = np.random.default_rng(seed)
    ang = (np.arange(n_vertices) + rng.uniform(0.0, 0.9, n_vertices)) * (2.0 * np.pi / n_vertices)
    if spiky:
        rad = radius_m * rng.uniform(0.6, 1.0, n_vertices)
    else:
        rad = radius_m * (1.0 + 0.08 * np.sin(3 * ang) + 0.04 * np.sin(11 * ang + 1.0)) \
            + rng.uniform(-0.3, 0.3, n_vertices)
    xy = np.column_stack([cx + rad * np.cos(ang) / _m_lon(np.array(cy)), cy + rad * np.sin(ang) / M_LAT])
    geom = shapely.Polygon(xy)
    if not geom.is_valid:
        raise RuntimeError("generated an invalid outline polygon")
    fid = f"{'star' if spiky else 'outline'}-{n_vertices}"
    return Fence(id=fid, name=fid, tags=(), properties={}, geometry=geom)


def city_pings(n: int, fences: list[Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half the pings within 100 m of a fence (uniform in a square around its centre), half anywhere."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = CITY
    lon, lat = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    near = rng.random(n) < 0.5
    k = int(near.sum())
    centres = np.array([f.center if f.kind == "circle" else f.geometry.centroid.coords[0]
                        for f in (fences[i] for i in rng.integers(0, len(fences), k))]).reshape(k, 2)
    lat[near] = centres[:, 1] + rng.uniform(-100, 100, k) / M_LAT
    lon[near] = centres[:, 0] + rng.uniform(-100, 100, k) / _m_lon(lat[near])
    return lon, lat


def box_pings(n: int, fence: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pings uniform over a fence's bounding box grown by 20%."""
    minx, miny, maxx, maxy = fence.geometry.bounds
    w, h = maxx - minx, maxy - miny
    rng = np.random.default_rng(seed)
    return rng.uniform(minx - 0.2 * w, maxx + 0.2 * w, n), rng.uniform(miny - 0.2 * h, maxy + 0.2 * h, n)


# ---------------------------------------------------------------------------- checks


@dataclass
class Check:
    ok: bool
    note: str


def check_pairs(ref: np.ndarray, got: np.ndarray, fences: list[Any], lon: np.ndarray, lat: np.ndarray) -> Check:
    """Equal pairs; for circle fences, differences only inside the stated band around the radius."""
    if got.shape == ref.shape and np.array_equal(got, ref):
        return Check(True, "equal")
    if np.unique(got).shape != got.shape:
        return Check(False, "MISMATCH: duplicate pairs")
    diff = np.setxor1d(ref, got, assume_unique=True)
    nf = len(fences)
    point, fence = diff // nf, diff % nf
    circle = np.array([f.kind == "circle" for f in fences])[fence]
    if (~circle).any():
        return Check(False, f"MISMATCH: {int((~circle).sum())} polygon pairs differ")
    from pyproj import Geod

    cx = np.array([fences[j].center[0] for j in fence])
    cy = np.array([fences[j].center[1] for j in fence])
    r = np.array([fences[j].radius_m for j in fence])
    _, _, d = Geod(ellps="WGS84").inv(cx, cy, lon[point], lat[point])
    outside = np.abs(d - r) > CIRCLE_BAND_REL * r + CIRCLE_BAND_ABS_M
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        return Check(False, f"MISMATCH: {int(outside.sum())} circle pairs differ away from the rim "
                            f"(e.g. {d[k]:.2f} m vs radius {r[k]:.2f} m)")
    return Check(True, f"equal outside the rim band ({diff.size} rim pairs differ)")


# ---------------------------------------------------------------------------- the run


@dataclass
class Row:
    case: str
    system: str
    pings: int
    seconds: float | None
    ratio: float | None = None  # peer seconds / FenceIndex seconds on the same pings
    pairs: int | None = None
    check: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Any]:
        rate = f"{self.pings / self.seconds:,.0f}" if self.seconds else ""
        return [self.case, self.system, f"{self.pings:,}", "" if self.seconds is None else f"{self.seconds:.3f}",
                rate, "" if self.ratio is None else f"{self.ratio:.1f}x", "" if self.pairs is None else f"{self.pairs:,}",
                self.check]


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks matching", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--quick", action="store_true",
                    help="200k pings (PostGIS and Redis: 20k); fits ~3 minutes on a loaded 2-core machine")
    ap.add_argument("--pings", type=int, default=None, help="pings (default 1,000,000)")
    ap.add_argument("--fences", default=None,
                    help="comma-separated fence counts, each run as polygons and as circles (default 1000,10000,100000)")
    ap.add_argument("--peer-pings", type=int, default=None,
                    help="pings for PostGIS and Redis (default: all pings for PostGIS, 200,000 for Redis)")
    ap.add_argument("--repeat", type=int, default=None, help="best of N runs for in-process systems (default 3, quick 2)")
    ap.add_argument("--no-geopandas", action="store_true")
    ap.add_argument("--no-postgis", action="store_true")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--no-setup", action="store_true", help="do not run benchmarks/setup_postgis.sh first")
    ap.add_argument("--postgis", default=os.environ.get("PROXIMITY_BENCH_DSN",
                                                        "host=127.0.0.1 port=5432 user=postgres dbname=proximity_bench"),
                    help="libpq DSN of the PostGIS database")
    ap.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--threads", type=int, default=1,
                    help="numba threads for FenceIndex (default 1: one core, like each peer; 0: all numba sees)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    n_pings = args.pings or (200_000 if args.quick else 1_000_000)
    sizes = [int(s) for s in (args.fences or "1000,10000,100000").split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or n_pings < 1:
        ap.error("--fences and --pings must be positive")
    postgis_pings = min(n_pings, args.peer_pings or (20_000 if args.quick else n_pings))
    redis_pings = min(n_pings, args.peer_pings or (20_000 if args.quick else 200_000))
    repeat = args.repeat or (2 if args.quick else 3)
    big = max(sizes)

    import numba

    from geofence import FenceIndex

    if args.threads < 0 or args.threads > numba.config.NUMBA_NUM_THREADS:
        ap.error(f"--threads must be 0..{numba.config.NUMBA_NUM_THREADS}")
    numba.set_num_threads(args.threads or numba.config.NUMBA_NUM_THREADS)
    print(f"matching benchmark on {describe_machine()}; FenceIndex on {numba.get_num_threads()} numba "
          f"thread(s); shapely, geopandas, PostGIS (one backend, no parallel workers) one core each")
    print(f"{n_pings:,} pings (PostGIS {postgis_pings:,}, Redis {redis_pings:,}); fences {sizes}; "
          f"best of {repeat} (in-process), seed {args.seed}", flush=True)
    t_run = time.perf_counter()

    # kernels from numba's cache (or compiled) before anything is timed
    warm = store_polygons(50, 1) + store_circles(50, 2)
    FenceIndex(warm).match(*city_pings(1000, warm, 3))

    peers: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    if args.no_geopandas:
        unavailable["geopandas sjoin"] = "skipped (--no-geopandas)"
    if args.no_postgis:
        unavailable["PostGIS"] = "skipped (--no-postgis)"
    else:
        try:
            peers["postgis"] = PostGIS(args.postgis, setup=not args.no_setup)
        except Unavailable as exc:
            unavailable["PostGIS"] = str(exc)
    if args.no_redis:
        unavailable["Redis GEOSEARCH"] = "skipped (--no-redis)"
    else:
        try:
            peers["redis"] = Redis(args.redis)
        except Unavailable as exc:
            unavailable["Redis GEOSEARCH"] = str(exc)

    rows: list[Row] = []
    builds: list[dict[str, Any]] = []
    targets: dict[str, Any] = {}
    big_polys: list[Any] | None = None
    big_index: Any = None
    try:
        for kind in ("polygons", "circles"):
            for n in sizes:
                case = f"{n:,} {kind}"
                fences = store_polygons(n, args.seed + n) if kind == "polygons" else store_circles(n, args.seed + n)
                lon, lat = city_pings(n_pings, fences, args.seed + 2 * n + 1)
                t = time.perf_counter()
                index = FenceIndex(fences)
                build_s = time.perf_counter() - t
                builds.append({"case": case, "build_s": build_s, "bytes_per_fence": index.nbytes / n})
                print(f"\n{case}: FenceIndex built in {build_s:.2f} s, {index.nbytes / n:,.0f} bytes/fence",
                      flush=True)
                rows += compare(case, fences, index, lon, lat, repeat, peers, unavailable, postgis_pings,
                                redis_pings)
                if kind == "polygons" and n == big:
                    big_polys, big_index = fences, index
                    targets["build_s"] = build_s
                    targets["build_fences"] = n
                    targets["bytes_per_fence"] = index.nbytes / n

        # a 10,000-vertex polygon against a 32-vertex one of the same shape, size and place, per ping
        cx, cy = (CITY[0] + CITY[2]) / 2, (CITY[1] + CITY[3]) / 2
        for spiky in (False, True):
            label = "spiky star" if spiky else "outline"
            big_one, small_one = (outline(n, cx, cy, 1000.0, 11, spiky) for n in (10_000, 32))
            lon, lat = box_pings(n_pings, big_one, 13)
            i32, i10k = FenceIndex([small_one]), FenceIndex([big_one])
            i32.compile()  # the kernels' path, as for a big index (one fence takes numpy's for small batches)
            i10k.compile()
            # the two runs interleaved, best of 5 each: a noisy neighbour hits both alike
            t32 = t10k = math.inf
            for _ in range(max(5, repeat)):
                t32 = min(t32, run_fenceindex(i32, lon, lat, 1).seconds)
                t10k = min(t10k, run_fenceindex(i10k, lon, lat, 1).seconds)
            key = "vertices_10k_vs_32_spiky" if spiky else "vertices_10k_vs_32"
            targets[key] = t10k / t32
            targets[key.replace("vs_32", "bytes")] = i10k.nbytes
            rows.append(Row(f"32-vertex {label}", "FenceIndex", n_pings, t32, None, None, "reference"))
            print(f"\n32-vertex {label}: FenceIndex {t32:.3f} s; 10,000-vertex {label}: FenceIndex {t10k:.3f} s "
                  f"({t10k / t32:.2f}x), index {i10k.nbytes / 1e6:.1f} MB", flush=True)
            case = f"10,000-vertex {label}"
            if spiky:  # FenceIndex only: the peers' figures are those of the outline
                rows.append(Row(case, "FenceIndex", n_pings, t10k, None, None, "reference"))
            else:
                rows += compare(case, [big_one], i10k, lon, lat, repeat, peers, unavailable, postgis_pings,
                                redis_pings)

        # dynamic updates in the largest polygon index, against rebuilding it
        assert big_polys is not None
        extra = store_polygons(100, args.seed + 99, prefix="new")
        gone = [f.id for f in big_polys[:: max(1, len(big_polys) // 100)][:100]]
        add_s = rem_s = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            big_index.add(extra)
            add_s = min(add_s, time.perf_counter() - t)
            t = time.perf_counter()
            big_index.remove([f.id for f in extra])
            rem_s = min(rem_s, time.perf_counter() - t)
        lon, lat = city_pings(min(n_pings, 200_000), big_polys, 17)
        big_index.add(extra)
        t = time.perf_counter()
        big_index.remove(gone)
        rem_s = min(rem_s, time.perf_counter() - t)
        live = [f for f in big_polys if f.id not in set(gone)] + extra
        t = time.perf_counter()
        fresh = FenceIndex(live)
        rebuild_s = time.perf_counter() - t
        a, b = big_index.match(lon, lat), fresh.match(lon, lat)
        same = [f.id for f in big_index.fences] == [f.id for f in live] and \
            np.array_equal(a.point, b.point) and np.array_equal(a.fence, b.fence)
        if not same:
            print("ERROR: the updated index does not answer as a fresh build", file=sys.stderr)
            return 1
        targets.update(add_100_s=add_s, remove_100_s=rem_s, rebuild_s=rebuild_s,
                       add_vs_rebuild=rebuild_s / add_s, remove_vs_rebuild=rebuild_s / rem_s)
    finally:
        for peer in peers.values():
            peer.close()

    def ratio_of(case: str, system: str) -> float | None:
        for r in rows:
            if r.case == case and r.system.startswith(system) and r.ratio is not None:
                return r.ratio
        return None

    mid = 10_000 if 10_000 in sizes else sorted(sizes)[len(sizes) // 2]
    targets["vs_shapely_mid"] = ratio_of(f"{mid:,} polygons", "shapely")
    targets["vs_shapely_mid_fences"] = mid
    targets["vs_shapely_big"] = ratio_of(f"{big:,} polygons", "shapely")
    targets["vs_shapely_big_fences"] = big

    headers = ["case", "system", "pings", "seconds", "pings/s", "FenceIndex faster", "pairs", "pairs check"]
    cells = [r.cells() for r in rows]
    print()
    print(table(headers, cells))
    if unavailable:
        print()
        for name, reason in unavailable.items():
            print(f"{name}: not available: {reason}")
    summary = [
        (f"vs shapely STRtree, {mid:,} polygons, {n_pings:,} pings", ">= 15x", _fmt_ratio(targets["vs_shapely_mid"])),
        (f"vs shapely STRtree, {big:,} polygons, {n_pings:,} pings", ">= 5x", _fmt_ratio(targets["vs_shapely_big"])),
        ("10,000-vertex / 32-vertex outline, time per ping", "<= 2x", f"{targets['vertices_10k_vs_32']:.2f}x"),
        ("10,000-vertex / 32-vertex spiky star (worst case)", "<= 2x",
         f"{targets['vertices_10k_vs_32_spiky']:.2f}x (index {targets['vertices_10k_bytes_spiky'] / 1e6:.0f} MB)"),
        (f"build {big:,} polygon fences", "< 10 s", f"{targets['build_s']:.2f} s"),
        ("index bytes per fence (arrays; Fence objects not counted)", "reported", f"{targets['bytes_per_fence']:,.0f}"),
        (f"add 100 fences to {big:,} vs rebuild", ">= 50x",
         f"{targets['add_vs_rebuild']:,.0f}x ({targets['add_100_s'] * 1e3:.1f} ms vs {rebuild_s:.2f} s)"),
        (f"remove 100 fences from {big:,} vs rebuild", ">= 50x",
         f"{targets['remove_vs_rebuild']:,.0f}x ({targets['remove_100_s'] * 1e3:.1f} ms vs {rebuild_s:.2f} s)"),
    ]
    print()
    print(table(["target", "wanted", "measured"], summary))
    print(f"\nmatching part done in {time.perf_counter() - t_run:.0f} s")
    path = write_results("matching", {
        "args": {"pings": n_pings, "fences": sizes, "postgis_pings": postgis_pings, "redis_pings": redis_pings,
                 "repeat": repeat, "seed": args.seed, "quick": args.quick,
                 "numba_threads": numba.get_num_threads()},
        "rows": [{"case": r.case, "system": r.system, "pings": r.pings, "seconds": r.seconds, "ratio": r.ratio,
                  "pairs": r.pairs, "check": r.check, **r.extra} for r in rows],
        "builds": builds,
        "targets": targets,
        "unavailable": unavailable,
        "table": table(headers, cells),
        "markdown": markdown_table(headers, cells),
        "targets_markdown": markdown_table(["target", "wanted", "measured"], summary),
    })
    print(f"results: {path}")
    return 0


def compare(case: str, fences: list[Any], index: Any, lon: np.ndarray, lat: np.ndarray, repeat: int,
            peers: dict[str, Any], unavailable: dict[str, str], postgis_pings: int, redis_pings: int) -> list[Row]:
    """FenceIndex and every peer on one fence set; each peer's pairs checked against FenceIndex's."""
    out: list[Row] = []
    ours = run_fenceindex(index, lon, lat, repeat)
    out.append(Row(case, "FenceIndex", lon.size, ours.seconds, None, ours.keys.size, "reference"))
    print(f"  FenceIndex: {ours.seconds:.3f} s, {ours.keys.size:,} pairs", flush=True)

    def add(system: str, runner: Callable[[np.ndarray, np.ndarray], Timing], n: int) -> None:
        x, y = lon[:n], lat[:n]
        ref = ours if n == lon.size else run_fenceindex(index, x, y, repeat)
        try:
            got = runner(x, y)
        except Unavailable as exc:
            unavailable[system] = str(exc)
            return
        except Exception as exc:  # a peer that breaks is reported, never allowed to stop the others
            first = (str(exc).strip().splitlines() or [""])[0]
            unavailable[f"{system} ({case})"] = f"failed: {type(exc).__name__}: {first}"
            print(f"  {system}: failed: {type(exc).__name__}: {first}", flush=True)
            return
        chk = check_pairs(ref.keys, got.keys, fences, x, y)
        row = Row(case, system, n, got.seconds, got.seconds / ref.seconds if chk.ok else None, got.keys.size,
                  chk.note + (f"; {got.note}" if got.note else ""))
        if n != lon.size:
            row.extra["fenceindex_seconds_same_pings"] = ref.seconds
        if got.load_s is not None:
            row.extra["load_s"] = got.load_s
        out.append(row)
        print(f"  {system}: {got.seconds:.3f} s on {n:,} pings, {_fmt_ratio(row.ratio)}, {row.check}", flush=True)

    tree = Shapely(fences)
    add(tree.name, lambda x, y: tree.run(x, y, repeat), lon.size)
    if "geopandas sjoin" not in unavailable:
        try:
            gp = GeoPandas(fences)
        except Unavailable as exc:
            unavailable["geopandas sjoin"] = str(exc)
        else:
            add(gp.name, lambda x, y: gp.run(x, y, max(1, repeat - 1)), lon.size)
    if "postgis" in peers:
        pg = peers["postgis"]
        add(pg.name, lambda x, y: pg.run(fences, x, y, 1), postgis_pings)
    if "redis" in peers and fences[0].kind == "circle":
        rd = peers["redis"]
        add(rd.name, lambda x, y: rd.run(fences, x, y, 1), redis_pings)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
