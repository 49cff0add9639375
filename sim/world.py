"""The synthetic city: a street grid, stores, malls whose shops share walls, homes, offices, beacons.

Everything is laid out in a local metric frame (x east, y north, metres from
the city origin); :class:`LocalFrame` converts to lon/lat once, at the edge
(GeoJSON fences, pings). Stores are axis-aligned rectangles fronting the
horizontal streets; their entrance is the middle of the street-side wall.
A mall fills one block: a north-south corridor with shops on both sides that
share their walls, entrances at both ends of the corridor.

Street cross-section (from the centre line): traffic lanes at
``lane_offset_m``, kerb parking at ``parking_offset_m``, the sidewalk a
pedestrian walks on at ``sidewalk_offset_m``, then the facades at
``street_m / 2``. A walk-by passes a store front at 1-2 m, a drive-by at
6-8 m, a car parked at the kerb sits 4-5 m from the front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import SimError
from sim.scenario import Scenario

BEACON_UUID = "5a1d0c4e-7b2f-4c1e-9a3d-51f0c0ffee00"

CATEGORIES = {
    "small": ("coffee", "bakery", "pharmacy", "kiosk"),
    "medium": ("fashion", "electronics", "books", "sports"),
    "large": ("grocery", "diy"),
    "mall": ("mall",),
    "shop": ("fashion", "shoes", "beauty", "toys", "food"),
}


class LocalFrame:
    """Metres east/north of an origin <-> lon/lat (WGS84), accurate to ~0.1 % over a few km."""

    def __init__(self, lon0: float, lat0: float) -> None:
        phi = math.radians(lat0)
        self.lon0 = lon0
        self.lat0 = lat0
        # metres per degree on the WGS84 ellipsoid at this latitude (series to 3rd order)
        self.m_per_deg_lat = 111132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
        self.m_per_deg_lon = 111412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi) + 0.118 * math.cos(5 * phi)

    def to_lonlat(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return self.lon0 + x / self.m_per_deg_lon, self.lat0 + y / self.m_per_deg_lat

    def to_xy(self, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        return (lon - self.lon0) * self.m_per_deg_lon, (lat - self.lat0) * self.m_per_deg_lat


@dataclass(frozen=True)
class Beacon:
    key: str
    store: int  # index into World.stores
    zone: str  # "entrance" | "checkout"
    x: float
    y: float
    tx_power_1m: float  # the calibrated (registered) 1 m power
    true_power_1m: float  # what it really radiates (calibration error)


@dataclass
class World:
    """Stores (columnar rectangles), homes, offices and beacons of one city."""

    scenario: Scenario
    frame: LocalFrame
    period_m: float  # block + street: street centre lines at multiples of it
    ids: list[str]
    names: list[str]
    size_class: np.ndarray  # object: small | medium | large | mall | shop
    category: list[str]
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    entrance_x: np.ndarray
    entrance_y: np.ndarray
    front_row: np.ndarray  # int: the horizontal street the entrance faces (malls: the nearer end's)
    front_side: np.ndarray  # int: +1 the street is north of the entrance, -1 south (shops: 0)
    mall: np.ndarray  # int: for shops, the index of their mall; -1 otherwise
    homes: np.ndarray  # (n, 2) x, y
    offices: np.ndarray  # (n, 2)
    beacons: list[Beacon] = field(default_factory=list)
    mall_shops: dict[int, list[int]] = field(default_factory=dict)
    mall_exits: dict[int, list[tuple[float, float, int, int]]] = field(default_factory=dict)

    @property
    def n_stores(self) -> int:
        return len(self.ids)

    def index_of(self, fence_id: str) -> int:
        return self.ids.index(fence_id)

    def stores_of(self, *classes: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.size_class, list(classes)))

    def contains(self, i: int, x: Any, y: Any, margin: float = 0.0) -> np.ndarray:
        x = np.asarray(x)
        y = np.asarray(y)
        return ((x >= self.x0[i] - margin) & (x <= self.x1[i] + margin)
                & (y >= self.y0[i] - margin) & (y <= self.y1[i] + margin))

    def to_geojson(self) -> dict[str, Any]:
        """The stores as an RFC 7946 FeatureCollection (what the engine loads)."""
        features = []
        tz = self.scenario.city.timezone
        extra = self.scenario.stores.properties
        with_beacons = {b.store for b in self.beacons} if self.scenario.ble.enabled else set()
        for i, fid in enumerate(self.ids):
            xs = [self.x0[i], self.x1[i], self.x1[i], self.x0[i], self.x0[i]]
            ys = [self.y0[i], self.y0[i], self.y1[i], self.y1[i], self.y0[i]]
            lon, lat = self.frame.to_lonlat(xs, ys)
            ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
            features.append({
                "type": "Feature",
                "id": fid,
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "name": self.names[i],
                    "tags": [str(self.size_class[i]), self.category[i]],
                    "timezone": tz,
                    "dwell_s": self.scenario.stores.dwell_s,
                    "size_class": str(self.size_class[i]),
                    **dict(extra.get(str(self.size_class[i]), {})),
                    **(dict(self.scenario.stores.beacon_store_properties) if i in with_beacons else {}),
                },
            })
        return {"type": "FeatureCollection", "features": features}

    def beacon_registry(self) -> dict[str, Any]:
        """The beacon registry as a plain mapping (see :func:`registry_yaml`)."""
        return {
            "beacons": [
                {
                    "key": b.key,
                    "fence_id": self.ids[b.store],
                    "zone": b.zone,
                    "power_1m": b.tx_power_1m,
                    "position": [float(v) for v in self.frame.to_lonlat(b.x, b.y)],
                }
                for b in self.beacons
            ]
        }


def build_world(scenario: Scenario) -> World:
    """Lay out the city of a scenario; the same scenario and seed always give the same city."""
    rng = np.random.default_rng([scenario.seed, 1])
    city = scenario.city
    cfg = scenario.stores
    period = city.block_m + city.street_m
    half_street = city.street_m / 2.0
    nbx, nby = city.blocks_x, city.blocks_y
    blocks = [(i, j) for j in range(nby) for i in range(nbx)]
    # malls take central blocks first
    centre = ((nbx - 1) / 2.0, (nby - 1) / 2.0)
    by_centrality = sorted(blocks, key=lambda b: ((b[0] - centre[0]) ** 2 + (b[1] - centre[1]) ** 2, b))
    if cfg.malls + 2 > len(blocks):
        raise SimError(f"city of {len(blocks)} blocks is too small for {cfg.malls} malls plus homes and offices",
                       field="stores.malls")
    mall_blocks = by_centrality[: cfg.malls]
    rest = [b for b in blocks if b not in mall_blocks]
    order = rng.permutation(len(rest))
    rest = [rest[k] for k in order]

    # store sizes (width along the street, depth into the block)
    max_depth = city.block_m / 2.0 - 4.0
    specs: list[tuple[str, float, float]] = []
    for cls, count, (lo, hi) in (("large", cfg.large, cfg.large_size_m), ("medium", cfg.medium, cfg.medium_size_m),
                                 ("small", cfg.small, cfg.small_size_m)):
        for _ in range(count):
            w = float(rng.uniform(lo, hi))
            d = float(min(rng.uniform(lo, hi) * (0.7 if cls == "large" else 1.0), max_depth))
            if w > city.block_m - 8.0:
                raise SimError(f"a {cls} store of {w:.0f} m does not fit a {city.block_m:.0f} m block",
                               field=f"stores.{cls}_size_m")
            specs.append((cls, w, d))
    # commercial blocks: enough frontage for every store with gaps, the rest homes/offices
    need = sum(w + 8.0 for _, w, _ in specs) * 1.25
    per_block = 2.0 * (city.block_m - 8.0)
    n_comm = max(1, math.ceil(need / per_block)) if specs else 0
    if n_comm + 2 > len(rest):
        raise SimError(
            f"city too small: {len(specs)} street stores need {n_comm} commercial blocks, plus homes and offices, "
            f"but only {len(rest)} blocks are free; raise city.blocks_x/blocks_y",
            field="city.blocks_x",
        )
    comm_blocks = rest[:n_comm]
    living = rest[n_comm:]
    n_office = max(1, len(living) // 3)
    office_blocks = living[:n_office]
    home_blocks = living[n_office:]

    ids: list[str] = []
    names: list[str] = []
    classes: list[str] = []
    cats: list[str] = []
    rects: list[tuple[float, float, float, float]] = []
    ent: list[tuple[float, float]] = []
    front_row: list[int] = []
    front_side: list[int] = []
    mall_of: list[int] = []

    facades = [(b, side) for b in comm_blocks for side in (-1, 1)]  # -1: south facade, +1: north facade
    order = rng.permutation(len(facades))
    facades = [facades[k] for k in order]
    cursor = {f: float(rng.uniform(4.0, 14.0)) for f in facades}
    counters = {"small": 0, "medium": 0, "large": 0}
    for cls, w, d in specs:
        placed = False
        for f in facades:
            (bi, bj), side = f
            gap = 0.0 if rng.random() < 0.35 else float(rng.uniform(3.0, 14.0))
            start = cursor[f] + gap
            if start + w > city.block_m - 4.0:
                continue
            bx0 = bi * period + half_street
            by0 = bj * period + half_street
            x0, x1 = bx0 + start, bx0 + start + w
            if side < 0:  # south facade: entrance faces street row bj
                y0, y1 = by0, by0 + d
                ey, row = y0, bj
            else:
                y1 = by0 + city.block_m
                y0 = y1 - d
                ey, row = y1, bj + 1
            cursor[f] = start + w
            counters[cls] += 1
            ids.append(f"store-{len(ids) + 1:03d}")
            cat = CATEGORIES[cls][int(rng.integers(len(CATEGORIES[cls])))]
            names.append(f"{cat.title()} {cls} {counters[cls]}")
            classes.append(cls)
            cats.append(cat)
            rects.append((x0, y0, x1, y1))
            ent.append(((x0 + x1) / 2.0, ey))
            front_row.append(row)
            front_side.append(side)  # the street is south (-1) of a south facade's entrance
            mall_of.append(-1)
            placed = True
            break
        if not placed:
            raise SimError(f"could not place every store ({cls} of {w:.0f} m); make the city larger",
                           field="city.blocks_x")

    mall_shops: dict[int, list[int]] = {}
    mall_exits: dict[int, list[tuple[float, float, int, int]]] = {}
    for m, (bi, bj) in enumerate(mall_blocks, start=1):
        bx0 = bi * period + half_street
        by0 = bj * period + half_street
        depth = min(cfg.shop_depth_m, (city.block_m - cfg.corridor_m) / 2.0)
        width = 2 * depth + cfg.corridor_m
        mx0 = bx0 + (city.block_m - width) / 2.0
        mx1 = mx0 + width
        my0, my1 = by0, by0 + city.block_m
        mall_idx = len(ids)
        ids.append(f"mall-{m}")
        names.append(f"Mall {m}")
        classes.append("mall")
        cats.append("mall")
        rects.append((mx0, my0, mx1, my1))
        ent.append(((mx0 + mx1) / 2.0, my0))
        front_row.append(bj)
        front_side.append(-1)
        mall_of.append(-1)
        cx = (mx0 + mx1) / 2.0
        mall_exits[mall_idx] = [(cx, my0, bj, -1), (cx, my1, bj + 1, 1)]
        shops: list[int] = []
        per_side = [cfg.shops_per_mall // 2, cfg.shops_per_mall - cfg.shops_per_mall // 2]
        for s, (sx0, sx1) in enumerate(((mx0, mx0 + depth), (mx1 - depth, mx1))):
            n = per_side[s]
            widths = rng.uniform(*cfg.shop_width_m, size=n)
            widths *= (city.block_m - 2 * 6.0) / widths.sum() if widths.sum() > city.block_m - 12.0 else 1.0
            y = my0 + (city.block_m - widths.sum()) / 2.0
            for k in range(n):
                wy = float(widths[k])
                idx = len(ids)
                cat = CATEGORIES["shop"][int(rng.integers(len(CATEGORIES["shop"])))]
                ids.append(f"mall-{m}-shop-{len(shops) + 1:02d}")
                names.append(f"{cat.title()} shop {len(shops) + 1} (mall {m})")
                classes.append("shop")
                cats.append(cat)
                rects.append((sx0, y, sx1, y + wy))  # neighbours share the wall at y + wy
                ent.append((sx1 if s == 0 else sx0, y + wy / 2.0))  # on the corridor side
                front_row.append(-1)
                front_side.append(0)
                mall_of.append(mall_idx)
                shops.append(idx)
                y += wy
        mall_shops[mall_idx] = shops

    def points_in(blocks_: list[tuple[int, int]], n: int, margin: float = 12.0) -> np.ndarray:
        k = rng.integers(len(blocks_), size=n)
        b = np.asarray(blocks_, dtype=np.float64)[k]
        x = b[:, 0] * period + half_street + rng.uniform(margin, city.block_m - margin, size=n)
        y = b[:, 1] * period + half_street + rng.uniform(margin, city.block_m - margin, size=n)
        return np.column_stack([x, y])

    homes = points_in(home_blocks or office_blocks, 4000)
    offices = points_in(office_blocks, 400)
    arr = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    entrance = np.asarray(ent, dtype=np.float64).reshape(-1, 2)
    world = World(
        scenario=scenario,
        frame=LocalFrame(city.origin_lon, city.origin_lat),
        period_m=period,
        ids=ids,
        names=names,
        size_class=np.asarray(classes, dtype=object),
        category=cats,
        x0=arr[:, 0], y0=arr[:, 1], x1=arr[:, 2], y1=arr[:, 3],
        entrance_x=entrance[:, 0], entrance_y=entrance[:, 1],
        front_row=np.asarray(front_row, dtype=np.int64),
        front_side=np.asarray(front_side, dtype=np.int64),
        mall=np.asarray(mall_of, dtype=np.int64),
        homes=homes,
        offices=offices,
        mall_shops=mall_shops,
        mall_exits=mall_exits,
    )
    world.beacons = _place_beacons(world, rng)
    return world


def _place_beacons(world: World, rng: np.random.Generator) -> list[Beacon]:
    which = world.scenario.stores.beacons
    ble = world.scenario.ble
    if which == "none":
        return []
    classes = {"small": ("small",), "small+shops": ("small", "shop"), "all": ("small", "medium", "large", "shop")}[which]
    out: list[Beacon] = []
    for i in world.stores_of(*classes):
        i = int(i)
        w = world.x1[i] - world.x0[i]
        d = world.y1[i] - world.y0[i]
        ex, ey = world.entrance_x[i], world.entrance_y[i]
        inward = 1.0 if abs(ey - world.y0[i]) < 1e-6 else -1.0
        if world.size_class[i] == "shop":
            # shops open on the corridor (a vertical wall): inward is along x
            inward_x = 1.0 if abs(ex - world.x0[i]) < 1e-6 else -1.0
            entrance_xy = (ex + inward_x * ble.entrance_inset_m, ey)
            checkout_xy = (ex + inward_x * ble.checkout_depth * w, world.y0[i] + float(rng.uniform(0.3, 0.7)) * d)
        else:
            entrance_xy = (ex, ey + inward * ble.entrance_inset_m)
            checkout_xy = (world.x0[i] + float(rng.uniform(0.25, 0.75)) * w, ey + inward * ble.checkout_depth * d)
        major = i + 1
        for minor, zone, (bx, by) in ((1, "entrance", entrance_xy), (2, "checkout", checkout_xy)):
            err = float(rng.normal(0.0, ble.calibration_error_db))
            out.append(Beacon(
                key=f"ibeacon:{BEACON_UUID}/{major}/{minor}",
                store=i, zone=zone, x=float(bx), y=float(by),
                tx_power_1m=ble.tx_power_1m, true_power_1m=ble.tx_power_1m + err,
            ))
    return out
