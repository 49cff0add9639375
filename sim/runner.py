"""Run the real engine on a simulated day, in simulated time.

:func:`simulate` builds everything the engine does not see (the city, the
tracks, the sensor readings, the ground truth). :func:`run_engine` feeds the
pings and sightings to the engine in slices of ``run.step_s`` simulated
seconds and calls ``advance`` at the end of every slice, so debounce exits
fire on the simulated clock. Three ways to reach the engine:

- ``memory``: ``proximity.engine.Engine`` in this process, memory state store;
- ``redis``: the same with ``proximity.store.RedisStore`` and the campaigns'
  ``RedisLimiter`` (keys under a prefix of their own, deleted afterwards);
- ``http``: real ``proximity serve`` workers (see :mod:`sim.http`).

The engine applies a device's evidence in time order and drops what is older
than the newest it applied, so within a slice the pings and the sightings are
sent in *rounds*: round k holds each device's k-th run of same-source
evidence, and no device ever has its own evidence sent out of order.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from proximity.progress import Progress
from sim.errors import SimError
from sim.metrics import Truth
from sim.mobility import Population, passes, simulate_population
from sim.scenario import Scenario
from sim.sensors import Pings, Sightings, ble_sightings, gps_pings
from sim.world import World, build_world

VIAS = ("memory", "redis", "http")


@dataclass
class Simulation:
    """One simulated day: the world, what really happened, and what the phones reported."""

    scenario: Scenario
    world: World
    population: Population
    pings: Pings
    sightings: Sightings
    truth: Truth
    generate_s: float

    @property
    def device_ids(self) -> np.ndarray:
        return np.asarray(self.population.device_ids, dtype=object)

    def registry_yaml(self) -> str:
        """The beacon registry of the city, as the beacons package reads it."""
        lines = ["version: 1", "beacons:"]
        for b in self.world.beacon_registry()["beacons"]:
            lon, lat = b["position"]
            lines += [
                f"  - key: \"{b['key']}\"",
                f"    fence_id: {b['fence_id']}",
                f"    zone: {b['zone']}",
                f"    position: [{lon:.7f}, {lat:.7f}]",
                f"    power_1m: {b['power_1m']:g}",
            ]
        if not self.world.beacons:
            lines[-1] = "beacons: []"
        return "\n".join(lines) + "\n"


def simulate(scenario: Scenario) -> Simulation:
    t = time.perf_counter()
    world = build_world(scenario)
    pop = simulate_population(world, scenario)
    pings = gps_pings(world, pop, scenario)
    sightings = ble_sightings(world, pop, scenario)
    truth = Truth(
        visits=pop.visits,
        walk_drive=passes(world, pop, scenario.metrics.pass_radius_m),
        parked=pop.parked,
        segments=pop.segments,
        size_class=world.size_class,
        mall_of=world.mall,
        device_sigma_m=scenario.gps.sigma_m * pop.gps_quality,
        end_s=scenario.hours * 3600.0,
        dwell_s=scenario.stores.dwell_s,
    )
    return Simulation(scenario, world, pop, pings, sightings, truth, time.perf_counter() - t)


@dataclass
class EngineRun:
    """What the engine produced, and how fast."""

    via: str
    events: list[Any]
    offers: list[dict[str, Any]]
    stats: Counter[str] = field(default_factory=Counter)
    engine_s: float = 0.0  # wall time spent inside the engine (or waiting for the workers)
    campaigns: Any = None  # the campaigns.CampaignSet that ran, if any
    notes: list[str] = field(default_factory=list)

    @property
    def pings_per_s(self) -> float:
        return self.stats["pings"] / self.engine_s if self.engine_s > 0 else 0.0


def rounds(dev_p: np.ndarray, ts_p: np.ndarray, dev_s: np.ndarray, ts_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round numbers for pings and sightings such that sending round 0 (pings, then sightings), round 1, ...
    never sends a device's evidence before its own older evidence (see the module docstring)."""
    n_p = len(ts_p)
    dev = np.concatenate([dev_p, dev_s])
    ts = np.concatenate([ts_p, ts_s])
    src = np.concatenate([np.zeros(n_p, np.int8), np.ones(len(ts_s), np.int8)])
    if len(ts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((src, ts, dev))
    d, s = dev[order], src[order]
    new_dev = np.ones(len(d), dtype=bool)
    new_dev[1:] = d[1:] != d[:-1]
    change = new_dev.copy()
    change[1:] |= s[1:] != s[:-1]
    run = np.cumsum(change) - 1
    dev_first_run = np.maximum.accumulate(np.where(new_dev, run, 0))
    r = np.empty(len(ts), np.int64)
    r[order] = run - dev_first_run
    return r[:n_p], r[n_p:]


class Feeder:
    """Where a slice of evidence goes. Implementations: in-process engine, HTTP workers."""

    def pings(self, device_id: np.ndarray, pings: Pings) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError

    def sightings(self, observer: np.ndarray, keys: np.ndarray, s: Sightings) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError

    def advance(self, now: float) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the feeder holds (connections, processes, Redis keys)."""


class EngineFeeder(Feeder):
    """The engine in this process (memory or Redis state)."""

    def __init__(self, sim: Simulation, *, store: Any = None, limiter: Any = None,
                 clock: Callable[[], float] | None = None) -> None:
        import beacons
        import geofence
        from proximity.batch import PingBatch
        from proximity.engine import Engine, EngineConfig

        sc = sim.scenario
        self._PingBatch = PingBatch
        self._Sightings = beacons.Sightings
        fences = geofence.load_geojson(sim.world.to_geojson())
        index = geofence.FenceIndex(fences)
        tracker = None
        if sim.world.beacons:
            registry = beacons.load_registry(sim.registry_yaml())
            try:
                tracker = beacons.ProximityTracker(registry, **dict(sc.tracker))
            except (TypeError, ValueError) as exc:
                raise SimError(f"tracker: {exc}", source=sc.source, field="tracker") from None
        self.campaigns = None
        rules = None
        path = sc.campaigns_path()
        if path is not None:
            import campaigns

            self.campaigns = campaigns.load_campaigns(path, fences)
            rules = campaigns.CampaignRules(self.campaigns, fences, limiter=limiter)
        try:
            config = EngineConfig(**{**dict(sc.engine), **({"clock": clock} if clock else {})})
        except TypeError as exc:
            raise SimError(f"engine: {exc}", source=sc.source, field="engine") from None
        self.engine = Engine(index, store=store, tracker=tracker, rules=rules, config=config)
        self.stats: Counter[str] = Counter()

    def _take(self, r: Any) -> tuple[list[Any], list[Any]]:
        self.stats.update({k: v for k, v in r.stats.items() if isinstance(v, int)})
        return list(r.events), [o.to_dict() if hasattr(o, "to_dict") else dict(o) for o in r.offers]

    def pings(self, device_id: np.ndarray, p: Pings) -> tuple[list[Any], list[Any]]:
        batch = self._PingBatch.from_arrays(device_id, p.lon, p.lat, p.accuracy_m, p.ts, speed=p.speed,
                                            source="<sim>")
        return self._take(self.engine.process_pings(batch))

    def sightings(self, observer: np.ndarray, keys: np.ndarray, s: Sightings) -> tuple[list[Any], list[Any]]:
        batch = self._Sightings.from_columns(observer, keys, s.rssi, s.tx_power, s.ts)
        return self._take(self.engine.process_sightings(batch))

    def advance(self, now: float) -> tuple[list[Any], list[Any]]:
        return self._take(self.engine.advance(now))


def run_engine(sim: Simulation, feeder: Feeder, *, progress: TextIO | None = None, label: str = "sim") -> EngineRun:
    """Feed the whole day through ``feeder`` slice by slice; collect events and offers."""
    sc = sim.scenario
    step = sc.run.step_s
    t0, t_end = sc.start_ts, sc.end_ts
    ids = sim.device_ids
    keys = np.asarray([b.key for b in sim.world.beacons], dtype=object)
    p, s = sim.pings, sim.sightings
    # slice boundaries (both streams are sorted by time)
    edges = t0 + step * np.arange(int(np.ceil((t_end - t0) / step)) + 1)
    p_cut = np.searchsorted(p.ts, edges, side="left")
    s_cut = np.searchsorted(s.ts, edges, side="left")
    events: list[Any] = []
    offers: list[dict[str, Any]] = []
    bar = Progress(label, len(edges) - 1, progress) if progress is not None else None
    busy = 0.0
    for k in range(len(edges) - 1):
        ps = p.take(slice(p_cut[k], p_cut[k + 1]))
        ss = s.take(slice(s_cut[k], s_cut[k + 1]))
        rp, rs = rounds(ps.device, ps.ts, ss.device, ss.ts)
        n_rounds = int(max(rp.max(initial=-1), rs.max(initial=-1))) + 1
        for r in range(n_rounds):
            mp = np.flatnonzero(rp == r)
            if len(mp):
                sub = ps.take(mp)
                t = time.perf_counter()
                ev, of = feeder.pings(ids[sub.device], sub)
                busy += time.perf_counter() - t
                events += ev
                offers += of
            ms = np.flatnonzero(rs == r)
            if len(ms):
                sub_s = ss.take(ms)
                t = time.perf_counter()
                ev, of = feeder.sightings(ids[sub_s.device], keys[sub_s.beacon], sub_s)
                busy += time.perf_counter() - t
                events += ev
                offers += of
        t = time.perf_counter()
        ev, of = feeder.advance(float(edges[k + 1]))
        busy += time.perf_counter() - t
        events += ev
        offers += of
        if bar is not None:
            bar.update(k + 1, f"{p_cut[k + 1]:,} pings, {len(events):,} events, {len(offers):,} offers")
    if bar is not None:
        bar.close(f"{len(p):,} pings, {len(events):,} events, {len(offers):,} offers")
    stats: Counter[str] = Counter(getattr(feeder, "stats", {}))
    stats["pings"] = max(stats.get("pings", 0), len(p))
    stats["sightings"] = max(stats.get("sightings", 0), len(s))
    return EngineRun(via="", events=events, offers=offers, stats=stats, engine_s=busy,
                     campaigns=getattr(feeder, "campaigns", None), notes=list(getattr(feeder, "notes", [])))


def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def default_progress() -> TextIO | None:
    """stderr: a bar on a terminal, a line every few seconds anywhere else (``| tee log``)."""
    return sys.stderr
