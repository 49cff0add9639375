"""The synthetic city, the mobility and the sensors: determinism per seed and physical sanity."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from sim.mobility import ACT_DRIVE, ACT_INDOOR, ACT_PARKED, ACT_WALK, passes, simulate_population
from sim.scenario import Scenario
from sim.sensors import R68, ble_sightings, gps_pings
from sim.world import build_world

SMALL = dataclasses.replace(Scenario(), devices=120, hours=14.0)


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return build_world(SMALL)


@pytest.fixture(scope="module")
def pop(world):  # type: ignore[no-untyped-def]
    return simulate_population(world)


def _arrays(obj: object) -> dict[str, np.ndarray]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}  # type: ignore[attr-defined]


def assert_same(a: object, b: object) -> None:
    for (ka, va), (_kb, vb) in zip(_arrays(a).items(), _arrays(b).items(), strict=True):
        assert np.array_equal(np.asarray(va), np.asarray(vb)), ka


def test_same_seed_same_everything(world, pop) -> None:  # type: ignore[no-untyped-def]
    w2 = build_world(SMALL)
    assert w2.to_geojson() == world.to_geojson()
    assert w2.beacon_registry() == world.beacon_registry()
    p2 = simulate_population(w2)
    assert_same(pop.segments, p2.segments)
    assert_same(pop.visits, p2.visits)
    assert_same(gps_pings(world, pop), gps_pings(w2, p2))
    assert_same(ble_sightings(world, pop), ble_sightings(w2, p2))


def test_another_seed_gives_another_city_and_day(world, pop) -> None:  # type: ignore[no-untyped-def]
    other = dataclasses.replace(SMALL, seed=SMALL.seed + 1)
    w2 = build_world(other)
    assert w2.to_geojson() != world.to_geojson()
    p2 = simulate_population(w2)
    assert len(p2.segments) != len(pop.segments) or not np.array_equal(p2.segments.t1, pop.segments.t1)


def test_a_device_day_does_not_depend_on_the_device_count(world) -> None:  # type: ignore[no-untyped-def]
    few = simulate_population(world, dataclasses.replace(SMALL, devices=30))
    many = simulate_population(world, dataclasses.replace(SMALL, devices=60))
    m = many.segments.device < 30
    assert np.array_equal(few.segments.t0, many.segments.t0[m])
    assert np.array_equal(few.segments.x1, many.segments.x1[m])
    assert list(few.roles) == list(many.roles[:30])


def test_stores_do_not_overlap_and_mall_shops_share_walls(world) -> None:  # type: ignore[no-untyped-def]
    n = world.n_stores
    shared = 0
    for i, j in itertools.combinations(range(n), 2):
        if world.mall[i] == j or world.mall[j] == i:
            continue  # a shop is inside its mall
        ox = min(world.x1[i], world.x1[j]) - max(world.x0[i], world.x0[j])
        oy = min(world.y1[i], world.y1[j]) - max(world.y0[i], world.y0[j])
        assert not (ox > 1e-6 and oy > 1e-6), (world.ids[i], world.ids[j])
        if world.mall[i] >= 0 and world.mall[i] == world.mall[j] and ox > 1.0 and abs(oy) < 1e-6:
            shared += 1
    assert shared >= SMALL.stores.shops_per_mall - 2
    sizes = np.minimum(world.x1 - world.x0, world.y1 - world.y0)
    small = world.stores_of("small")
    assert len(small) == SMALL.stores.small and np.all((sizes[small] >= 15.9) & (sizes[small] <= 24.1))


def test_fences_load_in_the_geofence_package(world) -> None:  # type: ignore[no-untyped-def]
    geofence = pytest.importorskip("geofence")
    fences = geofence.load_geojson(world.to_geojson())
    assert [f.id for f in fences] == world.ids
    index = geofence.FenceIndex(fences)
    # every store's centre matches that store (and shops their mall too)
    cx = (world.x0 + world.x1) / 2
    cy = (world.y0 + world.y1) / 2
    lon, lat = world.frame.to_lonlat(cx, cy)
    m = index.match(lon, lat)
    pairs = {(int(p), str(index.fence_ids[f])) for p, f in zip(m.point, m.fence, strict=True)}
    for i, fid in enumerate(world.ids):
        assert (i, fid) in pairs


def test_tracks_are_continuous_in_space_and_time(pop) -> None:  # type: ignore[no-untyped-def]
    s = pop.segments
    same = s.device[1:] == s.device[:-1]
    assert np.allclose(s.t1[:-1][same], s.t0[1:][same])
    assert np.allclose(s.x1[:-1][same], s.x0[1:][same]) and np.allclose(s.y1[:-1][same], s.y0[1:][same])
    assert np.all(s.t1 >= s.t0)
    speed = s.speed()
    assert speed[s.act == ACT_WALK].max() < 2.0
    assert speed[s.act == ACT_DRIVE].max() < 15.0
    assert np.all(speed[s.act == ACT_PARKED] == 0)


def test_ground_truth_visits_are_inside_their_store(world, pop) -> None:  # type: ignore[no-untyped-def]
    v = pop.visits
    assert len(v) > 50
    rng = np.random.default_rng(0)
    t = v.start + rng.uniform(0.05, 0.95, len(v)) * (v.end - v.start)
    idx = pop.segments.locate(v.device, t)
    x, y = pop.segments.position(idx, t)
    inside = np.asarray([world.contains(int(k), xx, yy, margin=0.01) for k, xx, yy in zip(v.store, x, y, strict=True)])
    assert inside.all()
    # a shop visit lies within a visit of its mall
    shops = np.flatnonzero(world.mall[v.store] >= 0)
    for k in shops[:50]:
        mall = world.mall[v.store[k]]
        around = (v.device == v.device[k]) & (v.store == mall) & (v.start <= v.start[k]) & (v.end >= v.end[k])
        assert around.any()


def test_walkers_and_drivers_stay_out_of_stores(world, pop) -> None:  # type: ignore[no-untyped-def]
    s = pop.segments
    street = np.isin(s.act, (ACT_WALK, ACT_DRIVE, ACT_PARKED))
    mid_x = (s.x0 + s.x1)[street] / 2
    mid_y = (s.y0 + s.y1)[street] / 2
    for i in range(world.n_stores):
        assert not np.any(world.contains(i, mid_x, mid_y, margin=-0.5)), world.ids[i]


def test_passes_are_near_the_store_and_not_visits(world, pop) -> None:  # type: ignore[no-untyped-def]
    ep = passes(world, pop, 25.0)
    assert set(np.unique(ep.kind)) == {"walk", "drive"}
    assert np.all(ep.end >= ep.start)
    t = ep.start  # where the pass begins, the device is at the radius (merged passes may leave it in between)
    idx = pop.segments.locate(ep.device, t)
    x, y = pop.segments.position(idx, t)
    dx = np.maximum.reduce([world.x0[ep.store] - x, x - world.x1[ep.store], np.zeros(len(x))])
    dy = np.maximum.reduce([world.y0[ep.store] - y, y - world.y1[ep.store], np.zeros(len(y))])
    assert np.all(np.maximum(dx, dy) <= 25.0 + 1e-3)
    assert np.all(pop.segments.place[idx] != ep.store)


def test_gps_error_matches_the_configured_sigma_and_is_worse_indoors(world, pop) -> None:  # type: ignore[no-untyped-def]
    p = gps_pings(world, pop)
    assert np.all(np.diff(p.ts) >= 0)
    seg = pop.segments
    outdoor = (seg.place[p.segment] < 0) & np.isin(seg.act[p.segment], (ACT_WALK, ACT_DRIVE, ACT_PARKED))
    indoor = seg.act[p.segment] == ACT_INDOOR
    scaled = p.error_m / pop.gps_quality[p.device]
    r68_out = np.quantile(scaled[outdoor], 0.68)
    r68_in = np.quantile(scaled[indoor], 0.68)
    assert r68_out == pytest.approx(SMALL.gps.sigma_m, rel=0.1)
    assert r68_in == pytest.approx(SMALL.gps.sigma_m * SMALL.gps.indoor_factor, rel=0.1)
    # the reported accuracy tracks the true error radius, imperfectly
    assert np.median(p.accuracy_m[outdoor] / (R68 * SMALL.gps.sigma_m / R68 * pop.gps_quality[p.device[outdoor]])) \
        == pytest.approx(1.0, rel=0.1)
    # ping intervals by mode: a walker's fixes come about every interval_s
    walk = seg.act[p.segment] == ACT_WALK
    d = p.device[walk]
    order = np.lexsort((p.ts[walk], d))
    gaps = np.diff(p.ts[walk][order])[np.diff(d[order]) == 0]
    assert np.median(gaps) == pytest.approx(SMALL.gps.interval_s, rel=0.1)
    # the error is correlated in time (Gauss-Markov), not white
    assert p.lon.dtype == np.float64 and np.isfinite(p.lat).all()


def test_ble_rssi_follows_the_log_distance_model(world, pop) -> None:  # type: ignore[no-untyped-def]
    s = ble_sightings(world, pop)
    assert len(s) > 1000
    assert np.all(s.rssi >= SMALL.ble.sensitivity_dbm)
    assert np.all(s.distance_m <= SMALL.ble.range_m)
    # same-store sightings at moderate range (where the sensitivity cut does not bias): slope = -10 n
    seg_idx = pop.segments.locate(s.device, s.ts - SMALL.start_ts)
    store = np.asarray([b.store for b in world.beacons])[s.beacon]
    same = (pop.segments.place[seg_idx] == store) & (s.distance_m > 1.0) & (s.distance_m < 12.0)
    slope, _ = np.polyfit(np.log10(s.distance_m[same]), s.rssi[same], 1)
    assert slope == pytest.approx(-10 * SMALL.ble.path_loss_exponent, rel=0.15)


def test_gps_only_variant_has_no_sightings(world, pop) -> None:  # type: ignore[no-untyped-def]
    sc = dataclasses.replace(SMALL, ble=dataclasses.replace(SMALL.ble, enabled=False))
    assert len(ble_sightings(world, pop, sc)) == 0


@pytest.mark.parametrize(("inset", "depth"), [(1.5, 0.7), (3.0, 0.5)])
def test_beacons_sit_where_the_scenario_puts_them(inset: float, depth: float) -> None:
    sc = SMALL.with_overrides({"ble.entrance_inset_m": inset, "ble.checkout_depth": depth})
    w = build_world(sc)
    assert w.beacons
    for b in w.beacons:
        i = b.store
        inside = bool(w.contains(i, b.x, b.y))
        assert inside, b.key
        shop = w.size_class[i] == "shop"  # shops open on the corridor: their depth runs along x
        along = abs(b.x - w.entrance_x[i]) if shop else abs(b.y - w.entrance_y[i])
        size = (w.x1[i] - w.x0[i]) if shop else (w.y1[i] - w.y0[i])
        want = inset if b.zone == "entrance" else depth * size
        assert along == pytest.approx(want, abs=1e-6), (b.key, b.zone)
