"""The direct path (numpy + GEOS, nothing compiled) answers exactly what the index's kernels answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geofence.index as gi
from geofence import Fence, FenceIndex, circle_fence
from tests.geofence.catalogue import CATALOGUE, polygon_fence, probes


@contextmanager
def kernels_only() -> Iterator[None]:
    """Indexes made inside build their grid at once (as every index past the direct path's bounds)."""
    saved = gi.DIRECT_MAX_FENCES
    gi.DIRECT_MAX_FENCES = -1
    try:
        yield
    finally:
        gi.DIRECT_MAX_FENCES = saved


@contextmanager
def direct_bounds(pairs: int = 1 << 23) -> Iterator[None]:
    """The direct path's bounds on a batch raised: the comparisons here use batches of a few thousand
    pings against fences of up to 400 vertices, past the bounds a server would use."""
    saved = gi.DIRECT_MAX_PAIRS, gi.DIRECT_MAX_EDGE_PAIRS
    gi.DIRECT_MAX_PAIRS = gi.DIRECT_MAX_EDGE_PAIRS = pairs
    try:
        yield
    finally:
        gi.DIRECT_MAX_PAIRS, gi.DIRECT_MAX_EDGE_PAIRS = saved


def both(fences: list[Fence]) -> tuple[FenceIndex, FenceIndex]:
    direct = FenceIndex(fences)
    with kernels_only():
        compiled = FenceIndex(fences)
    return direct, compiled


def assert_same(direct: FenceIndex, compiled: FenceIndex, x: np.ndarray, y: np.ndarray,
                acc: np.ndarray | float | None) -> None:
    with direct_bounds():
        a = direct.match(x, y, acc)
    b = compiled.match(x, y, acc)
    assert not direct._built and compiled._built, "each index took its own path"
    for field in ("point", "fence", "confidence"):
        got, want = getattr(a, field), getattr(b, field)
        assert got.dtype == want.dtype, field
        if not np.array_equal(got, want):
            pa = set(zip(a.point.tolist(), a.fence.tolist(), a.confidence.tolist(), strict=True))
            pb = set(zip(b.point.tolist(), b.fence.tolist(), b.confidence.tolist(), strict=True))
            raise AssertionError(f"{field} differs: direct only {sorted(pa - pb)[:5]}, kernels only {sorted(pb - pa)[:5]}")


SMALL = [f for f in CATALOGUE if f.id != "star-10k"]
ACCURACY = st.sampled_from(["none", "zero", "scalar", "mixed"])


def _accuracy(kind: str, rng: np.random.Generator, n: int) -> np.ndarray | float | None:
    if kind == "none":
        return None
    if kind == "zero":
        return 0.0
    if kind == "scalar":
        return 25.0
    return rng.choice([0.0, 0.5, 5.0, 20.0, 65.0, 300.0, 3000.0], n)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.lists(st.integers(0, len(SMALL) - 1), min_size=1, max_size=8, unique=True),
       seed=st.integers(0, 2**32 - 1), accuracy=ACCURACY)
def test_catalogue_fences_direct_equals_kernels(pick: list[int], seed: int, accuracy: str) -> None:
    """Vertices, edge midpoints, points on edges, in holes and around the fence (antimeridian, holes,
    multipolygons, shared walls, circles near the poles and across +-180), with every kind of accuracy."""
    fences = [SMALL[k] for k in pick]
    rng = np.random.default_rng(seed)
    xs, ys = zip(*(probes(f, n_random=60, seed=seed % 1000) for f in fences), strict=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = rng.random(x.shape[0]) < 0.5
    x, y = x[keep], y[keep]
    direct, compiled = both(fences)
    assert_same(direct, compiled, x, y, _accuracy(accuracy, rng, x.shape[0]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 40), accuracy=ACCURACY,
       lon0=st.sampled_from([2.35, 179.99, -179.99, 0.0]), lat0=st.sampled_from([48.85, -33.0, 0.0, 85.0]))
def test_random_city_direct_equals_kernels(seed: int, count: int, accuracy: str, lon0: float, lat0: float) -> None:
    """Random boxes, triangles and circles (some overlapping, some sharing vertices) and pings on a
    lattice through their corners, plus a few non-finite pings."""
    rng = np.random.default_rng(seed)
    step = 1e-4
    fences: list[Fence] = []
    for k in range(count):
        cx = lon0 + step * rng.integers(-20, 20)
        cy = lat0 + step * rng.integers(-20, 20)
        w, h = step * rng.integers(1, 6), step * rng.integers(1, 6)
        shape = rng.integers(0, 3)
        if shape == 0:
            fences.append(polygon_fence(f"b{k}", shapely.box(cx, cy, cx + w, cy + h)))
        elif shape == 1:
            fences.append(polygon_fence(f"t{k}", shapely.Polygon([(cx, cy), (cx + w, cy), (cx, cy + h)])))
        else:
            fences.append(circle_fence(f"c{k}", float(cx), float(cy), float(rng.uniform(2.0, 80.0))))
    gx = lon0 + step * (rng.integers(-22, 26, 300) + rng.choice([0.0, 0.5, 0.25], 300))
    gy = lat0 + step * (rng.integers(-22, 26, 300) + rng.choice([0.0, 0.5, 0.25], 300))
    x = np.concatenate([gx, [np.nan, np.inf, lon0]])
    y = np.concatenate([gy, [lat0, lat0, np.nan]])
    x = np.where(x > 180.0, x - 360.0, np.where(x < -180.0, x + 360.0, x))
    direct, compiled = both(fences)
    assert_same(direct, compiled, x, y, _accuracy(accuracy, rng, x.shape[0]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 11)), min_size=1, max_size=12),
       seed=st.integers(0, 1000))
def test_add_remove_direct_equals_kernels(ops: list[tuple[bool, int]], seed: int) -> None:
    """After any sequence of adds and removes, the positions and answers of both paths agree."""
    rng = np.random.default_rng(seed)
    pool = [polygon_fence(f"r{k}", shapely.box(2.35 + 0.001 * k, 48.85, 2.3515 + 0.001 * k, 48.8507))
            for k in range(12)]
    direct, compiled = both(pool[:3])
    live = {f.id for f in pool[:3]}
    for add, k in ops:
        f = pool[k]
        if add and f.id not in live:
            direct.add([f])
            compiled.add([f])
            live.add(f.id)
        elif not add and f.id in live:
            direct.remove([f.id])
            compiled.remove([f.id])
            live.discard(f.id)
    assert [f.id for f in direct.fences] == [f.id for f in compiled.fences]
    x = rng.uniform(2.3495, 2.365, 400)
    y = rng.uniform(48.8498, 48.8509, 400)
    assert_same(direct, compiled, x, y, rng.choice([0.0, 10.0, 40.0], 400))


def test_a_big_batch_builds_the_grid_once_and_keeps_it() -> None:
    fences = [circle_fence("a", 2.35, 48.85, 50.0), polygon_fence("b", shapely.box(2.351, 48.85, 2.352, 48.851))]
    index = FenceIndex(fences)
    small = index.match([2.35, 2.3515], [48.85, 48.8505])
    assert not index._built and small.fence.tolist() == [0, 1]
    n = gi.DIRECT_MAX_PAIRS // len(fences) + 1
    big = index.match(np.full(n, 2.3515), np.full(n, 48.8505))
    assert index._built and len(big) == n and (big.fence == 1).all()
    again = index.match([2.35, 2.3515], [48.85, 48.8505])
    assert np.array_equal(again.fence, small.fence) and np.array_equal(again.point, small.point)


def test_many_fences_build_the_grid_at_once() -> None:
    fences = [circle_fence(f"c{k}", 2.35 + 0.001 * k, 48.85, 20.0) for k in range(gi.DIRECT_MAX_FENCES + 1)]
    assert FenceIndex(fences)._built
    assert not FenceIndex(fences[:-1])._built
