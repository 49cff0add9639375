"""Daily mobility: every device's true track, and the ground truth of its visits.

A device has a role (``commuter_walk``, ``commuter_drive``, ``shopper``,
``courier``), a home and, for commuters, an office. Its day is a sequence of
straight *segments* (piecewise-linear in time and space), each with an
activity: still at home/work, walking on a sidewalk, driving in a lane (with
red-light stops before intersections), parked at the kerb, or indoors in a
store. Walkers follow the sidewalks and cross at corners; drivers keep to the
right-hand lane and park at the kerb; so walk-bys and drive-bys of store
fronts happen the way they do in a real street, and couriers wait in their
car parked just outside stores.

Ground truth is written while the track is built: a :class:`Visits` row for
every store (and mall, and mall shop) entered, from the moment the device
crosses the door to the moment it leaves; a *parked* episode for every car
wait outside a store; walk-bys and drive-bys are found afterwards from the
segments' geometry (:func:`passes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim._kernels import run_starts, segments_near_boxes
from sim.scenario import ROLES, Scenario
from sim.world import World

ACT_STILL = 0  # at home or at work
ACT_WALK = 1
ACT_DRIVE = 2
ACT_STOPPED = 3  # a car waiting at a red light
ACT_PARKED = 4  # a car at the kerb, the device inside it
ACT_INDOOR = 5  # in a store, a mall's corridor or a mall shop
ACTIVITIES = ("still", "walk", "drive", "stopped", "parked", "indoor")

_SEG_COLUMNS = ("device", "t0", "t1", "x0", "y0", "x1", "y1", "act", "place", "outer", "target")


@dataclass
class Segments:
    """Columnar track pieces of every device, sorted by device then time (times are seconds from the start)."""

    device: np.ndarray  # int64
    t0: np.ndarray
    t1: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    act: np.ndarray  # int8 activity code
    place: np.ndarray  # int64: the innermost store the device is in, -1 outside
    outer: np.ndarray  # int64: the mall around that shop, -1 otherwise
    target: np.ndarray  # int64: the store this piece is the approach to / wait for, -1 otherwise

    def __len__(self) -> int:
        return len(self.t0)

    def speed(self) -> np.ndarray:
        dt = np.maximum(self.t1 - self.t0, 1e-9)
        return np.hypot(self.x1 - self.x0, self.y1 - self.y0) / dt

    def locate(self, device: np.ndarray, t: np.ndarray) -> np.ndarray:
        """For each (device, time): the index of the segment covering it (the last one starting at or before)."""
        key = self.device.astype(np.float64) * 1e7 + self.t0
        q = np.asarray(device, dtype=np.float64) * 1e7 + np.asarray(t, dtype=np.float64)
        idx = np.searchsorted(key, q, side="right") - 1
        return np.clip(idx, 0, len(self) - 1)

    def position(self, idx: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dt = np.maximum(self.t1[idx] - self.t0[idx], 1e-9)
        u = np.clip((t - self.t0[idx]) / dt, 0.0, 1.0)
        return self.x0[idx] + u * (self.x1[idx] - self.x0[idx]), self.y0[idx] + u * (self.y1[idx] - self.y0[idx])


@dataclass
class Visits:
    """Ground truth: device ``device`` was inside store ``store`` from ``start`` to ``end`` (seconds from the start)."""

    device: np.ndarray
    store: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class Episodes:
    """Non-visits near a store: ``kind`` is ``walk``, ``drive`` or ``parked``."""

    device: np.ndarray
    store: np.ndarray
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray  # object

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class Population:
    """Every device's role, quality factor, track and ground truth."""

    device_ids: list[str]
    roles: np.ndarray  # object
    gps_quality: np.ndarray  # multiplies the scenario's GPS sigma
    segments: Segments
    visits: Visits
    parked: Episodes


class _Track:
    """Builds one device's segments and visits in time order."""

    def __init__(self, world: World, rng: np.random.Generator, dev: int, end: float) -> None:
        self.w = world
        self.rng = rng
        self.dev = dev
        self.end = end
        self.rows: list[tuple[float, ...]] = []
        self.visits: list[tuple[int, int, float, float]] = []
        self.parked: list[tuple[int, int, float, float]] = []
        self.t = 0.0
        self.x = 0.0
        self.y = 0.0
        self.row = 0  # the horizontal street the device is on (or next to)
        self.side = 1  # +1 north of its centre line, -1 south
        c = world.scenario.city
        self.P = world.period_m
        self.sw = c.sidewalk_offset_m
        self.lane = c.lane_offset_m
        self.park = (c.lane_offset_m + c.sidewalk_offset_m) / 2.0 + 0.5
        m = world.scenario.mobility
        self.walk_speed = float(rng.uniform(*m.walk_speed_mps))

    @property
    def done(self) -> bool:
        return self.t >= self.end

    # -- primitives
    def go(self, x: float, y: float, speed: float, act: int, place: int = -1, outer: int = -1, target: int = -1) -> None:
        d = math.hypot(x - self.x, y - self.y)
        if d < 1e-6:
            return
        dt = d / speed
        self.rows.append((self.dev, self.t, self.t + dt, self.x, self.y, x, y, act, place, outer, target))
        self.t += dt
        self.x, self.y = x, y

    def stay(self, dt: float, act: int, place: int = -1, outer: int = -1, target: int = -1) -> None:
        if dt <= 0:
            return
        self.rows.append((self.dev, self.t, self.t + dt, self.x, self.y, self.x, self.y, act, place, outer, target))
        self.t += dt

    def stay_until(self, t: float, act: int) -> None:
        self.stay(min(t, self.end) - self.t, act)

    def sidewalk_y(self, row: int, side: int) -> float:
        return row * self.P + side * self.sw

    def column(self, xa: float, xb: float) -> float:
        nbx = self.w.scenario.city.blocks_x
        lo, hi = sorted((xa, xb))
        cols = [c for c in range(nbx + 1) if lo <= c * self.P <= hi]
        if not cols:
            cols = [min(max(round((xa + xb) / 2 / self.P), 0), nbx)]
        return cols[int(self.rng.integers(len(cols)))] * self.P

    # -- buildings (homes and offices are not fences)
    def leave_building(self) -> None:
        bj = math.floor(self.y / self.P)
        to_south = (self.y - bj * self.P) < ((bj + 1) * self.P - self.y)
        self.row, self.side = (bj, 1) if to_south else (bj + 1, -1)
        self.go(self.x, self.sidewalk_y(self.row, self.side), self.walk_speed, ACT_WALK)

    def enter_building(self, x: float, y: float) -> None:
        self.go(x, self.sidewalk_y(self.row, self.side), self.walk_speed, ACT_WALK)
        self.go(x, y, self.walk_speed, ACT_WALK)

    def place_at(self, x: float, y: float) -> None:
        self.x, self.y = x, y

    # -- walking and driving along the grid
    def walk_to(self, x: float, row: int, side: int, target: int = -1) -> None:
        ya, yb = self.sidewalk_y(self.row, self.side), self.sidewalk_y(row, side)
        v = self.walk_speed
        if row == self.row:
            self.go(x, ya, v, ACT_WALK, target=target)
            self.go(x, yb, v, ACT_WALK, target=target)  # crosses the street when on the other side
        else:
            cx = self.column(self.x, x)
            xc = cx + (-self.sw if self.x < cx else self.sw)
            self.go(xc, ya, v, ACT_WALK)
            self.go(xc, yb, v, ACT_WALK)
            self.go(x, yb, v, ACT_WALK, target=target)
        self.row, self.side = row, side

    def _lane_leg(self, x_to: float, y_lane: float, speed: float, direction: int) -> None:
        """Drive along a horizontal lane to ``x_to``, stopping at some red lights before intersections."""
        m = self.w.scenario.mobility
        lo, hi = sorted((self.x, x_to))
        cols = [c * self.P for c in range(self.w.scenario.city.blocks_x + 1) if lo + 15 < c * self.P < hi - 15]
        if direction < 0:
            cols.reverse()
        for cx in cols:
            if self.rng.random() < m.red_light_prob:
                self.go(cx - direction * 12.0, y_lane, speed, ACT_DRIVE)
                self.stay(float(self.rng.uniform(*m.red_light_s)), ACT_STOPPED)
        self.go(x_to, y_lane, speed, ACT_DRIVE)

    def drive_to(self, x: float, row: int, side: int) -> None:
        """From the kerb where the car is parked to the kerb of (row, side) at x."""
        m = self.w.scenario.mobility
        speed = float(self.rng.uniform(*m.drive_speed_mps))
        if row == self.row:
            d = 1 if x >= self.x else -1
            y_lane = self.row * self.P - d * self.lane
            self.go(self.x + d * 8.0, y_lane, speed / 2, ACT_DRIVE)
            self._lane_leg(x - d * 8.0, y_lane, speed, d)
        else:
            cx = self.column(self.x, x)
            d = 1 if cx >= self.x else -1
            y_lane = self.row * self.P - d * self.lane
            dv = 1 if row > self.row else -1
            x_lane = cx + dv * self.lane
            self.go(self.x + d * 8.0, y_lane, speed / 2, ACT_DRIVE)
            self._lane_leg(x_lane - d * 12.0, y_lane, speed, d)
            if self.rng.random() < m.red_light_prob:
                self.stay(float(self.rng.uniform(*m.red_light_s)), ACT_STOPPED)
            self.go(x_lane, y_lane, speed / 2, ACT_DRIVE)
            d2 = 1 if x >= x_lane else -1
            y_lane_b = row * self.P - d2 * self.lane
            self.go(x_lane, y_lane_b, speed, ACT_DRIVE)
            self.go(x_lane + d2 * 8.0, y_lane_b, speed / 2, ACT_DRIVE)
            self._lane_leg(x - d2 * 8.0, y_lane_b, speed, d2)
        self.go(x, row * self.P + side * self.park, speed / 3, ACT_DRIVE)
        self.row, self.side = row, side

    def to_car(self) -> None:
        self.go(self.x, self.row * self.P + self.side * self.park, self.walk_speed, ACT_WALK)

    def from_car(self) -> None:
        self.go(self.x, self.sidewalk_y(self.row, self.side), self.walk_speed, ACT_WALK)

    # -- stores
    def _interior_point(self, i: int) -> tuple[float, float]:
        w = self.w
        mx = min(2.0, (w.x1[i] - w.x0[i]) / 4)
        my = min(2.0, (w.y1[i] - w.y0[i]) / 4)
        return (float(self.rng.uniform(w.x0[i] + mx, w.x1[i] - mx)), float(self.rng.uniform(w.y0[i] + my, w.y1[i] - my)))

    def _wander(self, i: int, duration: float, outer: int) -> None:
        """Move between a few points inside store ``i`` with pauses, for about ``duration`` seconds."""
        k = int(self.rng.integers(1, 4))
        pts = [self._interior_point(i) for _ in range(k)]
        walk = sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip([(self.x, self.y), *pts], pts, strict=False))
        pauses = self.rng.dirichlet(np.ones(k)) * max(duration - walk / 0.8 - 10.0, 5.0)
        for (px, py), pause in zip(pts, pauses, strict=True):
            self.go(px, py, 0.8, ACT_INDOOR, place=i, outer=outer)
            self.stay(float(pause), ACT_INDOOR, place=i, outer=outer)

    def visit_street_store(self, i: int, duration: float) -> None:
        """From the sidewalk in front of store ``i``: in, a few minutes inside, out."""
        w = self.w
        ex, ey = float(w.entrance_x[i]), float(w.entrance_y[i])
        self.go(ex, ey, self.walk_speed, ACT_WALK, target=i)
        t_in = self.t
        self._wander(i, duration, -1)
        self.go(ex, ey, 0.8, ACT_INDOOR, place=i)
        self.visits.append((self.dev, i, t_in, self.t))
        self.go(ex, self.sidewalk_y(self.row, self.side), self.walk_speed, ACT_WALK, target=i)

    def visit_mall(self, m: int, duration: float, exit_: tuple[float, float, int, int]) -> None:
        """Through one of the mall's doors, along the corridor into one to three shops, out by a door."""
        w = self.w
        ex, ey, _row, _side = exit_
        self.go(ex, ey, self.walk_speed, ACT_WALK, target=m)
        t_in = self.t
        shops = w.mall_shops[m]
        n = min(int(self.rng.integers(1, 4)), len(shops))
        chosen = self.rng.choice(shops, size=n, replace=False)
        cx = float((w.x0[m] + w.x1[m]) / 2)
        per_shop = self.rng.dirichlet(np.ones(n)) * duration * 0.8
        for s, dur in zip(chosen, per_shop, strict=True):
            s = int(s)
            sx, sy = float(w.entrance_x[s]), float(w.entrance_y[s])
            self.go(cx, sy, self.walk_speed * 0.8, ACT_INDOOR, place=m, target=s)
            self.go(sx, sy, 0.8, ACT_INDOOR, place=m, target=s)
            s_in = self.t
            self._wander(s, max(float(dur), 120.0), m)
            self.go(sx, sy, 0.8, ACT_INDOOR, place=s, outer=m)
            self.visits.append((self.dev, s, s_in, self.t))
            self.go(cx, sy, 0.8, ACT_INDOOR, place=m, target=s)
        # leave by a door (maybe the other one)
        doors = w.mall_exits[m]
        door = doors[int(self.rng.integers(len(doors)))]
        self.go(cx, door[1], self.walk_speed * 0.8, ACT_INDOOR, place=m)
        self.visits.append((self.dev, m, t_in, self.t))
        self.row, self.side = door[2], -door[3]
        self.go(cx, self.sidewalk_y(self.row, self.side), self.walk_speed, ACT_WALK, target=m)

    def front_of(self, i: int) -> tuple[float, int, int, tuple[float, float, int, int] | None]:
        """Where to go on the street for store ``i``: (x, row, sidewalk side, mall door or None)."""
        w = self.w
        if w.size_class[i] == "shop":
            i = int(w.mall[i])
        if w.size_class[i] == "mall":
            doors = w.mall_exits[i]
            door = min(doors, key=lambda d: (abs(d[2] - self.row), d[1]))
            return door[0], door[2], -door[3], door
        return float(w.entrance_x[i]), int(w.front_row[i]), -int(w.front_side[i]), None

    def visit(self, i: int, by_car: bool) -> None:
        w = self.w
        cls = str(w.size_class[i])
        m = w.scenario.mobility
        lo, hi = {"small": m.visit_min_small, "medium": m.visit_min_medium, "large": m.visit_min_large,
                  "mall": m.visit_min_mall, "shop": m.visit_min_mall}[cls]
        duration = float(self.rng.uniform(lo, hi)) * 60.0
        if cls == "shop":
            i = int(w.mall[i])
        x, row, side, door = self.front_of(i)
        if by_car:
            self.drive_to(x + float(self.rng.uniform(-6, 6)), row, side)
            self.stay(float(self.rng.uniform(15, 60)), ACT_PARKED, target=i)
            self.from_car()
            self.walk_to(x, row, side, target=i)
        else:
            self.walk_to(x, row, side, target=i)
        if door is not None:
            self.visit_mall(i, duration, door)
        else:
            self.visit_street_store(i, duration)
        if by_car:
            self.to_car()

    def park_outside(self, i: int) -> None:
        """A car waits at the kerb in front of store ``i`` (the device stays inside the car)."""
        x, row, side, _door = self.front_of(i)
        w = self.w
        width = float(w.x1[i] - w.x0[i]) if w.size_class[i] not in ("mall", "shop") else 10.0
        self.drive_to(x + float(self.rng.uniform(-width / 2, width / 2)), row, side)
        t0 = self.t
        m = self.w.scenario.mobility
        self.stay(float(self.rng.uniform(*m.parked_min)) * 60.0, ACT_PARKED)
        near = i if w.size_class[i] != "shop" else int(w.mall[i])
        self.parked.append((self.dev, near, t0, self.t))


def _choose_store(world: World, rng: np.random.Generator, classes: tuple[str, ...]) -> int:
    idx = world.stores_of(*classes)
    if len(idx) == 0:
        idx = np.arange(world.n_stores)
    return int(idx[int(rng.integers(len(idx)))])


def _day(tr: _Track, role: str, world: World, rng: np.random.Generator) -> None:
    h = 3600.0
    m = world.scenario.mobility
    home = world.homes[int(rng.integers(len(world.homes)))]
    tr.place_at(float(home[0]), float(home[1]))
    stores_any = ("small", "medium", "large", "mall", "shop")
    if role in ("commuter_walk", "commuter_drive"):
        car = role == "commuter_drive"
        office = world.offices[int(rng.integers(len(world.offices)))]
        tr.stay_until(float(rng.uniform(1.0, 3.0)) * h, ACT_STILL)
        if tr.done:
            return
        tr.leave_building()
        if car:
            tr.to_car()
        if rng.random() < 0.4:  # a coffee on the way
            tr.visit(_choose_store(world, rng, ("small",)), by_car=car)
        ox, oy = float(office[0]), float(office[1])
        _go_to_building(tr, ox, oy, car)
        tr.stay_until(float(rng.uniform(6.0, 7.0)) * h, ACT_STILL)
        if tr.done:
            return
        if rng.random() < 0.6:  # lunch errand, on foot
            tr.leave_building()
            tr.visit(_choose_store(world, rng, ("small", "medium", "mall")), by_car=False)
            tr.walk_to(ox, *_row_side_of(tr, ox, oy))
            tr.go(ox, oy, tr.walk_speed, ACT_WALK)
        tr.stay_until(float(rng.uniform(10.5, 12.5)) * h, ACT_STILL)
        if tr.done:
            return
        tr.leave_building()
        if car:
            tr.to_car()
        for _ in range(int(rng.integers(0, 3))):
            tr.visit(_choose_store(world, rng, stores_any), by_car=car)
            if tr.done:
                return
        _go_to_building(tr, float(home[0]), float(home[1]), car)
        tr.stay_until(tr.end, ACT_STILL)
    elif role == "shopper":
        car = rng.random() < 0.3
        n = int(rng.integers(m.visits_per_day[0], m.visits_per_day[1] + 1))
        tr.stay_until(float(rng.uniform(2.0, 5.0)) * h, ACT_STILL)
        for k in range(n):
            if tr.done:
                return
            tr.leave_building()
            if car:
                tr.to_car()
            for _ in range(int(rng.integers(1, 3))):
                tr.visit(_choose_store(world, rng, stores_any), by_car=car)
                if tr.done:
                    return
            _go_to_building(tr, float(home[0]), float(home[1]), car)
            if k < n - 1:
                tr.stay(float(rng.uniform(0.5, 2.5)) * h, ACT_STILL)
        tr.stay_until(tr.end, ACT_STILL)
    else:  # courier
        tr.stay_until(float(rng.uniform(1.0, 3.0)) * h, ACT_STILL)
        if tr.done:
            return
        tr.leave_building()
        tr.to_car()
        for _ in range(int(rng.integers(m.courier_stops[0], m.courier_stops[1] + 1))):
            if tr.done:
                return
            store = _choose_store(world, rng, ("small", "medium", "large", "mall"))
            if rng.random() < 0.2:
                tr.visit(store, by_car=True)
            else:
                tr.park_outside(store)
        _go_to_building(tr, float(home[0]), float(home[1]), True)
        tr.stay_until(tr.end, ACT_STILL)


def _row_side_of(tr: _Track, x: float, y: float) -> tuple[int, int]:
    bj = math.floor(y / tr.P)
    return (bj, 1) if (y - bj * tr.P) < ((bj + 1) * tr.P - y) else (bj + 1, -1)


def _go_to_building(tr: _Track, x: float, y: float, car: bool) -> None:
    row, side = _row_side_of(tr, x, y)
    if car:
        tr.drive_to(x, row, side)
        tr.from_car()
    else:
        tr.walk_to(x, row, side)
    tr.enter_building(x, y)


def simulate_population(world: World, scenario: Scenario | None = None) -> Population:
    """Every device's day. Device ``k``'s day depends only on the seed and ``k`` (not on the device count)."""
    sc = scenario or world.scenario
    end = sc.hours * 3600.0
    roles_cfg = sc.mobility.roles
    names = [r for r in ROLES if roles_cfg.get(r, 0.0) > 0]
    shares = np.asarray([roles_cfg[r] for r in names], dtype=np.float64)
    shares /= shares.sum()
    cum = np.cumsum(shares)
    rows: list[tuple[float, ...]] = []
    visits: list[tuple[int, int, float, float]] = []
    parked: list[tuple[int, int, float, float]] = []
    roles: list[str] = []
    quality = np.empty(sc.devices)
    for k in range(sc.devices):
        rng = np.random.default_rng([sc.seed, 2, k])
        role = names[min(int(np.searchsorted(cum, rng.random(), side="right")), len(names) - 1)]
        roles.append(role)
        quality[k] = float(np.exp(rng.normal(0.0, sc.gps.device_spread)))
        tr = _Track(world, rng, k, end)
        _day(tr, role, world, rng)
        rows.extend(tr.rows)
        visits.extend(v for v in tr.visits if v[2] < end)
        parked.extend(p for p in tr.parked if p[2] < end)
    seg = _segments(rows, end)
    vis = _merge_visits(np.asarray(visits, dtype=np.float64).reshape(-1, 4), gap_s=120.0)
    par = np.asarray(parked, dtype=np.float64).reshape(-1, 4)
    return Population(
        device_ids=[f"dev-{k + 1:05d}" for k in range(sc.devices)],
        roles=np.asarray(roles, dtype=object),
        gps_quality=quality,
        segments=seg,
        visits=Visits(vis[:, 0].astype(np.int64), vis[:, 1].astype(np.int64), vis[:, 2], np.minimum(vis[:, 3], end)),
        parked=Episodes(par[:, 0].astype(np.int64), par[:, 1].astype(np.int64), par[:, 2], np.minimum(par[:, 3], end),
                        np.full(len(par), "parked", dtype=object)),
    )


def _merge_visits(vis: np.ndarray, gap_s: float) -> np.ndarray:
    """One visit, not two, when a device steps out of a store and back in within ``gap_s``."""
    if len(vis) < 2:
        return vis
    vis = vis[np.lexsort((vis[:, 2], vis[:, 1], vis[:, 0]))]
    same = (vis[1:, 0] == vis[:-1, 0]) & (vis[1:, 1] == vis[:-1, 1])
    new = run_starts(same, vis[:, 2], vis[:, 3], gap_s)
    first = np.flatnonzero(new)
    out = vis[first].copy()
    out[:, 3] = np.maximum.reduceat(vis[:, 3], first)
    return out[np.lexsort((out[:, 2], out[:, 0]))]


def _segments(rows: list[tuple[float, ...]], end: float) -> Segments:
    a = np.asarray(rows, dtype=np.float64).reshape(-1, len(_SEG_COLUMNS))
    a = a[a[:, 1] < end]
    cols: dict[str, Any] = {name: a[:, j] for j, name in enumerate(_SEG_COLUMNS)}
    # clip the last piece of each day at the end of the run (position interpolated)
    t0, t1 = cols["t0"], cols["t1"]
    cut = t1 > end
    if cut.any():
        u = (end - t0[cut]) / np.maximum(t1[cut] - t0[cut], 1e-9)
        cols["x1"][cut] = cols["x0"][cut] + u * (cols["x1"][cut] - cols["x0"][cut])
        cols["y1"][cut] = cols["y0"][cut] + u * (cols["y1"][cut] - cols["y0"][cut])
        t1[cut] = end
    return Segments(
        device=cols["device"].astype(np.int64), t0=t0, t1=t1,
        x0=cols["x0"], y0=cols["y0"], x1=cols["x1"], y1=cols["y1"],
        act=cols["act"].astype(np.int8), place=cols["place"].astype(np.int64),
        outer=cols["outer"].astype(np.int64), target=cols["target"].astype(np.int64),
    )


def passes(world: World, pop: Population, radius_m: float) -> Episodes:
    """Walk-bys and drive-bys: a device outside a store, passing within ``radius_m`` of it, not going in.

    A pass is a maximal run of a device's walking (or driving, or red-light
    waiting) segments that come within the radius of the store's walls, with
    no visit of that store (or of its mall) by that device around it.
    Walking in a mall's corridor past a shop is a walk-by of that shop.
    """
    seg = pop.segments
    moving = np.isin(seg.act, (ACT_WALK, ACT_DRIVE, ACT_STOPPED)) | ((seg.act == ACT_INDOOR) & (seg.outer < 0)
                                                                      & (seg.place >= 0)
                                                                      & np.isin(seg.place, list(world.mall_shops)))
    sidx = np.flatnonzero(moving)
    si, store, u0, u1 = segments_near_boxes(
        seg.x0[sidx], seg.y0[sidx], seg.x1[sidx], seg.y1[sidx],
        world.x0, world.y0, world.x1, world.y1, float(radius_m),
    )
    s = sidx[si]
    # not the store it is in (a mall, for its corridor), nor the one it is heading to, nor its mall
    keep = (seg.place[s] != store) & (seg.target[s] != store)
    tgt = seg.target[s]
    keep &= ~((tgt >= 0) & (world.mall[np.maximum(tgt, 0)] == store))
    keep &= ~((tgt >= 0) & (world.mall[store] == tgt))
    s, store, u0, u1 = s[keep], store[keep], u0[keep], u1[keep]
    dt = seg.t1[s] - seg.t0[s]
    start = seg.t0[s] + u0 * dt
    end = seg.t0[s] + u1 * dt
    kind = np.where(np.isin(seg.act[s], (ACT_DRIVE, ACT_STOPPED)), 1, 0)
    dev = seg.device[s]
    # merge consecutive pieces of one pass: same device, store and kind, gap under 30 s
    order = np.lexsort((start, kind, store, dev))
    dev, store, kind, start, end = dev[order], store[order], kind[order], start[order], end[order]
    if len(start):
        same = (dev[1:] == dev[:-1]) & (store[1:] == store[:-1]) & (kind[1:] == kind[:-1])
        new = run_starts(same, start, end, 30.0)
        first = np.flatnonzero(new)
        g_end = np.maximum.reduceat(end, first)
        dev, store, kind, start, end = dev[first], store[first], kind[first], start[first], g_end
    # drop passes that overlap the device's own visit of that store (arriving, leaving)
    vis = pop.visits
    if len(vis) and len(start):
        key_v = vis.device * 100_000 + vis.store
        key_p = dev * 100_000 + store
        order_v = np.lexsort((vis.start, key_v))
        kv, vs, ve = key_v[order_v], vis.start[order_v], vis.end[order_v]
        q = np.searchsorted(kv.astype(np.float64) * 1e7 + vs, key_p.astype(np.float64) * 1e7 + end + 120.0) - 1
        ok = q >= 0
        qi = np.maximum(q, 0)
        overlap = ok & (kv[qi] == key_p) & (ve[qi] + 120.0 >= start)
        dev, store, kind, start, end = dev[~overlap], store[~overlap], kind[~overlap], start[~overlap], end[~overlap]
    return Episodes(dev, store, start, end, np.where(kind == 1, "drive", "walk").astype(object))

