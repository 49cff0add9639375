"""The engine: one batch in -> fence matches / beacon zones -> presence -> campaign rules -> offers out.

>>> engine = Engine(index)                       # memory store, no beacons, no rules
>>> r = engine.process_pings(PingBatch.from_rows(rows))
>>> r.events                                     # [Event(kind="enter", ...), ...] device then time order
>>> engine.advance(now).events                   # debounce exits due by `now`

Everything per ping is array code: the batch's device ids become store handles,
pings are sorted by (device, time) and de-duplicated, matched against the
:class:`geofence.FenceIndex` in one call, turned into evidence levels per fence
(see :mod:`proximity.presence`), and applied by the store through the one
transition function. Only the events (about 1% of pings in steady state) become
Python objects, and only devices with events are looked up for the rules.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import shapely

import proximity._kernels as K
import proximity.parts as _parts
from geofence.fences import equivalent_radius_m
from proximity.batch import PingBatch
from proximity.errors import ValidationError
from proximity.events import Device, Event, Offer, place_key
from proximity.journal import Journal
from proximity.presence import (
    AMBIGUOUS,
    BEACON,
    ENTER,
    GPS,
    KEEP,
    Evidence,
    PlaceTable,
    PresenceParams,
    csr,
    sort_evidence,
    thresholds_for,
    to_events,
)
from proximity.store import MemoryStore, StateStore
from proximity.tracked import Built, Tracked, ZoneRows
from proximity.visit import DEFAULT_MODEL, VisitModel

#: Named rule sets. ``streaming`` (the default) is what the simulation measures best for
#: phones that report every 10-60 s: a visit starts when its probability reaches
#: ``enter_probability``, three fixes in a row outside end it, debounces cover lost fixes.
#: ``crossing`` is for SDKs that send one ping per OS region crossing: one fix enters,
#: one fix exits (the engine's behaviour before profiles existed).
PROFILES: dict[str, dict[str, Any]] = {
    "streaming": {
        "gps_debounce_s": 180.0,
        "beacon_debounce_s": 120.0,
        "beacon_keep_proximity": 3,
        "gps_exit_pings": 3,
        "gps_enter_confirm_s": 0.0,
        "gps_one_store_at_a_time": False,
        "enter_probability": 0.9230,
        "exit_probability": 0.0458,
    },
    "crossing": {
        "gps_debounce_s": 60.0,
        "beacon_debounce_s": 30.0,
        "beacon_keep_proximity": 0,
        "gps_exit_pings": 1,
        "gps_enter_confirm_s": 0.0,
        "gps_one_store_at_a_time": False,
        "enter_probability": 0.0,
        "exit_probability": 0.0,
    },
}
DEFAULT_PROFILE = "streaming"


class Rules(Protocol):
    """What the engine asks of campaigns (``campaigns`` implements it; the engine never imports it)."""

    def dwell_thresholds(self) -> Mapping[str, Sequence[float]]:
        """Fence id (or place key ``fence#zone``, or ``"*"``) -> extra dwell times in seconds."""

    def decide(self, events: Sequence[Event], devices: Mapping[str, Device], now: float) -> Sequence[Offer]:
        """Offers for these events (``devices`` holds every device that has an event)."""


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings (seconds, metres). Fence properties ``dwell_s`` and ``max_accuracy_m`` override per fence.

    - ``max_accuracy_m``: a ping whose point is inside a fence enters it when its
      accuracy is at most this (an accuracy circle fully inside always enters);
    - ``accuracy_factor``: and at most this many times the fence's equivalent
      radius (``sqrt(area / pi)``), so a coarse ping never enters a small fence
      (``None`` turns this off); a fence's own ``max_accuracy_m`` replaces both;
    - ``beacon_enter_proximity``: a sighting enters a store/zone at this class or
      closer (1 immediate, 2 near, 3 far);
    - ``beacon_keep_proximity``: a sighting farther than that but at this class or
      closer keeps a visit alive without starting one (0: never);
    - ``gps_exit_pings``: unpaired GPS pings in a row that end a visit (default 1);
    - ``gps_enter_confirm_s``: > 0 makes a GPS enter wait for a second inside ping
      (ENTER level) at least this long after the first (default 0: enter at once);
      see :mod:`proximity.presence`;
    - ``gps_one_store_at_a_time``: with ``gps_enter_confirm_s``, a GPS enter is not
      confirmed while the same ping keeps a visit to a fence that does not overlap
      it (default off). A fence property ``gps_enter: false`` makes GPS
      keep visits to that fence but never start one (its beacons do);
    - ``max_future_skew_s``: evidence further than this ahead of the clock is
      rejected with a reason (``None``: never);
    - ``clock``: wall-clock seconds (for the skew check);
    - ``enter_probability``: > 0 makes every visit tentative until its probability
      (see :mod:`proximity.visit`) reaches this; campaigns can ask for more
      (``min_probability``);
    - ``exit_probability``: > 0 makes unpaired GPS fixes end a visit only once its
      probability is below this (no inside evidence for the debounce still ends it);
    - ``max_speed_mps``: a GPS fix farther from the device's last accepted fix than
      this speed allows (a spoofed or broken fix) is not applied and is counted as
      ``implausible`` (0: no check);
    - ``model``: the visit-probability filter (:class:`proximity.visit.VisitModel`);
    - ``profile``: the named rule set (:data:`PROFILES`) that gives every setting
      left unset (``None``) its value: ``streaming`` (default) or ``crossing``.
    """

    gps_debounce_s: float = None  # type: ignore[assignment]  # (None: the profile's; same below)
    beacon_debounce_s: float = None  # type: ignore[assignment]
    dwell_s: float = 300.0
    zone_dwell_s: float = 60.0
    max_accuracy_m: float = 50.0
    accuracy_factor: float | None = 2.0
    beacon_enter_proximity: int = 2
    beacon_keep_proximity: int = None  # type: ignore[assignment]
    gps_exit_pings: int = None  # type: ignore[assignment]
    gps_enter_confirm_s: float = None  # type: ignore[assignment]
    gps_one_store_at_a_time: bool = None  # type: ignore[assignment]
    ttl_s: float = 7 * 24 * 3600.0
    max_future_skew_s: float | None = 300.0
    clock: Callable[[], float] = field(default=time.time, compare=False)
    enter_probability: float = None  # type: ignore[assignment]
    exit_probability: float = None  # type: ignore[assignment]
    max_speed_mps: float = 300.0
    model: VisitModel = DEFAULT_MODEL
    profile: str = DEFAULT_PROFILE

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {self.profile!r}")
        for name, value in PROFILES[self.profile].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if not isinstance(self.model, VisitModel):
            raise ValueError("model must be a proximity.visit.VisitModel")
        for name in ("dwell_s", "zone_dwell_s", "max_accuracy_m"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, not {v!r}")
        if self.accuracy_factor is not None and not self.accuracy_factor > 0:
            raise ValueError(f"accuracy_factor must be positive or None, not {self.accuracy_factor!r}")
        if self.beacon_enter_proximity not in (1, 2, 3):
            raise ValueError("beacon_enter_proximity must be 1 (immediate), 2 (near) or 3 (far)")
        if self.beacon_keep_proximity not in (0, 1, 2, 3):
            raise ValueError("beacon_keep_proximity must be 0 (off), 1 (immediate), 2 (near) or 3 (far)")
        if self.max_future_skew_s is not None and not self.max_future_skew_s >= 0:
            raise ValueError("max_future_skew_s must be >= 0 or None")
        self.params  # noqa: B018  (validates the debounce and TTL values)

    @property
    def params(self) -> PresenceParams:
        return PresenceParams(self.gps_debounce_s, self.beacon_debounce_s, self.ttl_s, self.gps_exit_pings,
                              self.gps_enter_confirm_s, bool(self.gps_one_store_at_a_time),
                              float(self.enter_probability), float(self.max_speed_mps), self.model,
                              float(self.exit_probability))


@dataclass
class BatchResult:
    """What one call produced: ``events`` (device then time order), ``offers`` (from the rules),
    ``stats`` (counts: input, applied, ``late``, ``duplicates``, ``rejected``, events by kind) and
    ``rejected`` (a :class:`ValidationError` per input row refused, e.g. a future timestamp or an
    accuracy that is not a real fix, naming the row the input gave it: ``PingBatch.row``,
    ``Sightings.row``) and ``dropped`` (the same, for valid rows that were not applied: ``duplicate``,
    ``late`` (not newer than the device's newest applied evidence: out of order or replayed) or
    ``implausible`` (a fix too far from the device's last one for the time between them))."""

    events: list[Event] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    rejected: list[ValidationError] = field(default_factory=list)
    dropped: list[ValidationError] = field(default_factory=list)


_DROP_REASONS = {1: "late: not newer than the device's newest applied evidence (out of order or replayed)",
                 2: "implausible: too far from the device's last accepted fix for the time between them"}


def _dropped(rows: np.ndarray, dup_rows: np.ndarray, status: np.ndarray, ev_rows: np.ndarray) -> list[ValidationError]:
    """Per input row not applied, the reason (``rows``: the input row of each batch row)."""
    out = [ValidationError("duplicate: the same evidence twice in the batch", field="ts", row=int(r))
           for r in rows[dup_rows].tolist()]
    bad = np.flatnonzero(status != 0)
    out += [ValidationError(_DROP_REASONS[int(s)], field="ts" if s == 1 else "lon,lat", row=int(r))
            for r, s in zip(ev_rows[bad].tolist(), status[bad].tolist(), strict=True)]
    out.sort(key=lambda e: e.row or 0)
    return out


class Engine:
    """Presence over a fence index (and optionally beacons), with state in a store, feeding campaign rules."""

    def __init__(
        self,
        index: Any,
        *,
        store: StateStore | None = None,
        tracker: Any = None,
        rules: Rules | None = None,
        config: EngineConfig | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.params = self.config.params
        self.store: StateStore = store if store is not None else MemoryStore()
        self.tracker = tracker
        self.rules = rules
        self.places = PlaceTable(self._dwell_of)
        self.counters: Counter[str] = Counter()
        self._extra: Mapping[str, Sequence[float]] = {}
        self._fence_dwell: dict[str, float] = {}
        self.index: Any = None
        self._ids_seen: Any = None
        self._fence_place = np.zeros(0, np.int32)
        self._fence_limit = np.zeros(0)
        self._fence_gps_enter = np.zeros(0, bool)
        self._fence_radius = np.zeros(0)
        self._outer = csr(np.zeros(0, np.int64), np.zeros(0, np.int64))  # place id -> the fences covering it
        if rules is not None:
            self._extra = dict(rules.dwell_thresholds())
        if index is not None:
            self.set_index(index)

    # -- configuration ----------------------------------------------------------------------

    def set_index(self, index: Any) -> None:
        """Use this fence index (also after ``index.add``/``remove``). Visits are keyed by fence id, so they carry over."""
        fences = list(index.fences)
        ids = [f.id for f in fences]
        self._fence_dwell = {f.id: float(f.properties["dwell_s"]) for f in fences
                             if f.properties.get("dwell_s") is not None}
        pids = self._place_ids(ids)
        self._fence_place = np.asarray(pids, np.int32)
        self._fence_limit = np.array([self._accuracy_limit(f) for f in fences], np.float64)
        self._fence_gps_enter = np.array([f.properties.get("gps_enter", True) is not False for f in fences], bool)
        self._fence_radius = np.array([equivalent_radius_m(f) for f in fences], np.float64)
        if len(fences):  # overlapping fences do not compete for a device's probability (nor block one-store)
            geoms = np.array([f.geometry for f in fences], dtype=object)
            i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects") if len(geoms) else (np.zeros(0, int),) * 2
            keep = (i < j) & ~shapely.touches(geoms[i], geoms[j])
            a, b = self._fence_place[i[keep]], self._fence_place[j[keep]]
            self.places.set_overlaps(a, b)
            # a fence that covers another (a mall, its shops): a sighting of the inner one's beacon is evidence
            # for the outer one too (see _zone_evidence)
            ab, ba = shapely.covers(geoms[i[keep]], geoms[j[keep]]), shapely.covers(geoms[j[keep]], geoms[i[keep]])
            self._outer = csr(np.concatenate([b[ab], a[ba]]), np.concatenate([a[ab], b[ba]]))
        self.index = index
        self._ids_seen = index.fence_ids
        self.places.refresh()

    def set_rules(self, rules: Rules | None) -> None:
        """Use these campaign rules (their dwell thresholds apply to visits from now on)."""
        self.rules = rules
        self._extra = dict(rules.dwell_thresholds()) if rules is not None else {}
        self.places.refresh()

    def _dwell_of(self, key: str) -> list[float]:
        own = self.config.zone_dwell_s if "#" in key else self._fence_dwell.get(key, self.config.dwell_s)
        return thresholds_for(key, own, self._extra)

    def _accuracy_limit(self, fence: Any) -> float:
        own = fence.properties.get("max_accuracy_m")
        if own is not None:
            return float(own)
        limit = self.config.max_accuracy_m
        if self.config.accuracy_factor is not None:
            limit = min(limit, self.config.accuracy_factor * equivalent_radius_m(fence))
        return limit

    def _place_ids(self, keys: Sequence[str]) -> list[int]:
        known = self.places.ids
        missing = [k for k in dict.fromkeys(keys) if k not in known]
        if missing:
            self.places.add_keys(missing, self.store.place_ids(missing))
        return [known[k] for k in keys]

    def _check_index(self) -> None:
        if self.index is None:
            raise ValueError("this engine has no fence index: pass one to Engine(index) to process pings")
        if self.index.fence_ids is not self._ids_seen:
            self.set_index(self.index)

    # -- input ------------------------------------------------------------------------------

    def _future(self, ts: np.ndarray, rows: np.ndarray, kind: str) -> tuple[np.ndarray, list[ValidationError]]:
        """Which evidence is not too far ahead of the clock, and an error per input row that is (the one
        place that decides it, for pings and sightings alike)."""
        skew = self.config.max_future_skew_s
        if skew is None or not len(ts):
            return np.ones(len(ts), bool), []
        limit = self.config.clock() + skew
        bad = ts > limit
        rejected = [ValidationError(f"{kind} time {ts[i]:.3f} is more than {skew:g} s ahead of the server clock",
                                    field="ts", row=int(rows[i]))
                    for i in np.flatnonzero(bad)]
        return ~bad, rejected

    def process_pings(self, batch: PingBatch, *, journal: Journal | None = None) -> BatchResult:
        """Apply a batch of location pings; return the events, offers and counts. With a ``journal`` (a
        batch id's), a retry answers what the first try committed (see :mod:`proximity.journal`)."""
        return self.process_ping_parts([batch], [journal])[0]

    def process_ping_parts(self, parts: Sequence[PingBatch],
                           journals: Sequence[Journal | None] | None = None) -> list[BatchResult]:
        """Several batches in one pass (one sort, one fence match, one store call per journal), each answered
        exactly as :meth:`process_pings` answers it alone, the parts run in order: its events, its offers (the
        rules run per part, in order), its counts, its rejected and dropped rows numbered as in its own batch,
        its own ``journals[i]``. Parts may not share a device (``ValueError``): send a device's later batch
        in a later call (see :mod:`proximity.parts`)."""
        if not parts:
            raise ValueError("process_ping_parts: at least one part")
        batch, base = (parts[0], np.zeros(1, np.int64)) if len(parts) == 1 else _parts.stack(parts)
        return self.process_stacked_pings(batch, base, journals)

    def process_stacked_pings(self, batch: PingBatch, base: np.ndarray,
                              journals: Sequence[Journal | None] | None = None, *,
                              dropped: bool = True) -> list[BatchResult]:
        """:meth:`process_ping_parts` for parts already in one batch: part ``i`` is the rows ``base[i]`` to
        ``base[i + 1] - 1`` of ``batch.row`` (e.g. several requests' JSON rows parsed in one go).
        ``dropped=False``: each result's ``dropped`` stays empty (its counts are in ``stats``), for a caller
        that answers with the counts only: the rows are an object each, and a retried batch drops them all."""
        self._check_index()
        base = np.asarray(base, np.int64)
        k = len(base)
        journals = list(journals) if journals is not None else [None] * k
        if len(journals) != k or not k:
            raise ValueError("process_stacked_pings: one journal (or None) per part, and at least one part")
        ok, rejected = self._future(batch.ts, batch.row, "ping")
        acc_in = batch.accuracy_m
        unreal = ~(acc_in > 0.0) & ok  # 0, negative or NaN: not a fix anyone measured
        if unreal.any():
            ok &= ~unreal
            rejected += [ValidationError(f"accuracy_m {float(acc_in[i])!r} is not a real fix (must be > 0)",
                                         field="accuracy_m", row=int(batch.row[i])) for i in np.flatnonzero(unreal)]
            rejected.sort(key=lambda e: e.row if e.row is not None else -1)
        rows = np.flatnonzero(ok)
        b = batch if len(rows) == len(batch) else batch.take(rows)
        res = self.store.resolve(b.device_id)
        if k > 1:
            _parts.check_disjoint(res.codes, _parts.part_of(b.row, base))
        order_all, dup = sort_evidence(res.codes, b.ts, b.lon, b.lat, b.accuracy_m)
        order = order_all[~dup]
        lon, lat, acc, ts, spd = b.lon[order], b.lat[order], b.accuracy_m[order], b.ts[order], b.speed[order]
        m = self.index.match(lon, lat, accuracy_m=acc)
        point, fence, conf = np.asarray(m.point), np.asarray(m.fence), np.asarray(m.confidence, np.int8)
        # accuracy within the fence's limit: point inside enters, within-accuracy keeps a visit (no flapping);
        # coarser: point inside only keeps a visit, within-accuracy says nothing
        fine = acc[point] <= self._fence_limit[fence]
        level = np.where(conf >= 3, ENTER, np.where(conf == 2, np.where(fine, ENTER, KEEP),
                                                    np.where(fine, KEEP, AMBIGUOUS))).astype(np.int8)
        np.minimum(level, np.where(self._fence_gps_enter[fence], ENTER, KEEP), out=level)  # fences beacons enter
        obs = np.zeros(len(order) + 1, np.int64)
        np.cumsum(np.bincount(point, minlength=len(order)), out=obs[1:])
        llr = self.config.model.gps_obs_llr(conf, acc[point], self._fence_radius[fence], spd[point])
        ev = Evidence(res.codes[order], ts, np.full(len(order), GPS, np.int8), obs,
                      self._fence_place[fence], level, conf, b.row[order], lon, lat, acc, spd, llr)
        part_all = _parts.part_of(batch.row, base)
        part_b = part_all if len(rows) == len(batch) else part_all[rows]
        part_ev = part_b[order]  # (ev.row is b.row[order])
        if len({id(j) for j in journals}) == 1:
            tr = self._apply(res, ev, journals[0])
            prox, dist = journals[0].details(len(ev)) if journals[0] is not None else (None, None)
        else:
            tr, prox, dist = _parts.apply_by_journal(self._apply, self.store.resolve, res, ev, part_ev, journals)
        applied = tr.status == 0
        if b.attrs.any() or b.timezone.any():  # (object arrays: any() is "some row has a value")
            rows_in_order = order[applied]
            self.store.update_info(b.device_id[rows_in_order], b.attrs[rows_in_order], b.timezone[rows_in_order])
        events = to_events(tr, res.names, self.places, proximity=prox, distance=dist)
        # per part: pings in, applied / late / implausible (one count by status), duplicates, matched, unreal
        n_in, n_unreal = _parts.counts(part_all, k), _parts.counts(part_all, k, unreal)
        by_status = np.bincount(part_ev * 3 + tr.status, minlength=3 * k).reshape(k, 3).T.tolist()
        n_applied, n_late, n_impl = (by_status[s] for s in (K.STATUS_APPLIED, K.STATUS_LATE, K.STATUS_IMPLAUSIBLE))
        n_dup, n_match = _parts.counts(part_b[order_all], k, dup), _parts.counts(part_ev[point], k)
        rejected_of = _parts.split_errors(rejected, base)
        events_of, owner = _parts.split_events(events, k, ev.dev, part_ev, tr.dev, res.names)
        any_dropped = dropped and sum(n_late) + sum(n_dup) + sum(n_impl) > 0
        dropped_of = _parts.split_errors(_dropped(b.row, order_all[dup], tr.status, ev.row) if any_dropped else [],
                                         base)
        newest = np.full(k, -np.inf)
        np.maximum.at(newest, part_ev, ts)
        offers_of = self._decide_parts(events_of, owner, newest) if k > 1 and events and self.rules is not None else None
        out = []
        counts = {"pings": n_in, "applied": n_applied, "late": n_late, "duplicates": n_dup,  # each a count a part
                  "rejected": [len(r) for r in rejected_of], "matches": n_match, "implausible": n_impl,
                  "bad_accuracy": n_unreal}
        for i in range(k):
            stats = {name: of_part[i] for name, of_part in counts.items()}
            now = float(newest[i]) if newest[i] > -np.inf else self.config.clock()
            result = self._finish(events_of[i], stats, rejected_of[i], now, count=k == 1,
                                  offers=None if offers_of is None else offers_of[i])
            if stats["late"] or stats["duplicates"] or stats["implausible"]:
                result.dropped = dropped_of[i]
            out.append(result)
        if k > 1:  # the parts' counts added up once (a Counter.update a part was a few % of a small request)
            self.counters.update({name: sum(of_part) for name, of_part in counts.items()}, events=len(events))
            self.counters.update(e.kind for e in events)
            if offers_of is not None:
                self.counters["offers"] += sum(map(len, offers_of))
        return out

    def process_sightings(self, sightings: Any, *, journal: Journal | None = None) -> BatchResult:
        """Apply beacon sightings (``beacons.Sightings``) through the tracker (``beacons.ProximityTracker``).

        Sightings too far in the future are refused row by row (``sightings.row``) before they reach
        the tracker's RSSI filters; the rest are ranged and applied. The filters' state is kept per
        device in the store, loaded and saved with the device's presence state (see
        :mod:`proximity.tracked`): a device's scans may land on any engine sharing the store."""
        if self.tracker is None:
            raise ValueError("this engine has no beacon tracker: pass tracker=ProximityTracker(registry)")
        n_in = len(sightings)
        ok, rejected = self._future(np.asarray(sightings.ts, np.float64), np.asarray(sightings.row), "sighting")
        if rejected:
            sightings = sightings.take(np.flatnonzero(ok))
        tracker = self.tracker
        r = tracker.resolve(sightings)
        res = self.store.resolve(r.device_id)

        def build(state: Any) -> Built:
            rssi, new_state = tracker.filter.step(res.codes, r.pair, r.ts, r.rssi, state)
            built = self._zone_evidence(tracker.range(r, rssi), res)
            built.state = new_state
            return built

        tr, built = self.store.apply_tracked(res, Tracked(build, len(r)), self.places, self.params, journal=journal)
        result = self._zone_result(tr, res, built, len(r), n_in, [], journal)
        result.rejected[:0] = rejected
        result.stats["rejected"] += len(rejected)
        self.counters["rejected"] += len(rejected)
        return result

    def _apply(self, res: Any, ev: Evidence, journal: Journal | None) -> Any:
        if journal is None:
            return self.store.apply(res, ev, self.places, self.params)
        return self.store.apply(res, ev, self.places, self.params, journal=journal)

    def process_zone_sightings(self, z: Any, *, n_input: int | None = None,
                               journal: Journal | None = None) -> BatchResult:
        """Apply resolved sightings (columns ``device_id, fence_id, zone, distance_m, proximity, ts, row``)."""
        ts_all = np.asarray(z.ts, np.float64)
        ok, rejected = self._future(ts_all, np.asarray(z.row), "sighting")
        keep = np.flatnonzero(ok)
        rows = ZoneRows(np.asarray(z.device_id, dtype=object)[keep], np.asarray(z.fence_id, dtype=object)[keep],
                        np.asarray(z.zone, dtype=object)[keep], np.asarray(z.proximity, np.int8)[keep],
                        np.asarray(z.distance_m, np.float64)[keep], ts_all[keep], np.asarray(z.row, np.int64)[keep])
        res = self.store.resolve(rows.device_id)
        built = self._zone_evidence(rows, res)
        if journal is not None:
            journal.proximity, journal.distance = built.prox, built.dist
        tr = self._apply(res, built.ev, journal)
        n = len(ts_all) if n_input is None else n_input
        return self._zone_result(tr, res, built, len(ts_all), n, rejected, journal)

    def _zone_evidence(self, z: Any, res: Any) -> Built:
        """The evidence of zone sightings ``z`` whose devices ``res`` resolved (rows in the order of ``z``)."""
        fence_ids = np.asarray(z.fence_id, dtype=object)
        zones = np.asarray(z.zone, dtype=object)
        prox = np.asarray(z.proximity, np.int8)
        dist = np.asarray(z.distance_m, np.float64)
        ts = np.asarray(z.ts, np.float64)
        in_rows = np.asarray(z.row, np.int64)
        store_pid = np.asarray(self._place_ids(fence_ids.tolist()), np.int64).reshape(-1)
        has_zone = np.fromiter((bool(x) for x in zones), bool, len(zones))
        zone_keys = [place_key(f, zz) for f, zz in zip(fence_ids[has_zone], zones[has_zone], strict=True)]
        zone_pid = np.full(len(zones), -1, np.int64)
        zone_pid[has_zone] = self._place_ids(zone_keys)
        # ties at one instant break on the place *names* (ids depend on arrival order)
        pids = np.unique(np.concatenate([store_pid, zone_pid[zone_pid >= 0]]))
        name_rank = np.argsort(np.argsort(np.array([self.places.keys[p] for p in pids.tolist()], dtype=str)))

        def rank(pid: np.ndarray) -> np.ndarray:
            out = np.full(len(pid), -1.0)
            ok = pid >= 0
            out[ok] = name_rank[np.searchsorted(pids, pid[ok])]
            return out

        order, dup = sort_evidence(res.codes, ts, rank(store_pid), rank(zone_pid), prox)
        order = order[~dup]
        n = len(order)
        p = prox[order]
        known = p >= 1
        level = np.where(known & (p <= self.config.beacon_enter_proximity), ENTER,
                         np.where(known & (p <= self.config.beacon_keep_proximity), KEEP, AMBIGUOUS)).astype(np.int8)
        conf = np.where(p == 0, 0, 4 - p).astype(np.int8)
        # each sighting names its store, its zone, and the fences around its store (a shop's mall), in that order
        sp, zp = store_pid[order], zone_pid[order]
        ptr, idx = self._outer
        has = (sp >= 0) & (sp < len(ptr) - 1)
        start = np.where(has, ptr[np.where(has, sp, 0)], 0)
        cnt = np.where(has, ptr[np.minimum(sp + 1, len(ptr) - 1)] - start, 0)
        ev_of = np.concatenate([np.flatnonzero(sp >= 0), np.flatnonzero(zp >= 0), np.repeat(np.arange(n), cnt)])
        first = np.repeat(np.cumsum(cnt) - cnt, cnt)
        outer = idx[np.repeat(start, cnt) + np.arange(len(first)) - first]
        srt = np.argsort(ev_of, kind="stable")
        ev_of = ev_of[srt]
        place = np.concatenate([sp[sp >= 0], zp[zp >= 0], outer])[srt]
        obs = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(ev_of, minlength=n), out=obs[1:])
        ev = Evidence(res.codes[order], ts[order], np.full(n, BEACON, np.int8), obs,
                      place.astype(np.int32), level[ev_of], conf[ev_of], in_rows[order],
                      llr=self.config.model.beacon_obs_llr(p)[ev_of])
        return Built(ev, order, p, dist[order], int(dup.sum()))

    def _zone_result(self, tr: Any, res: Any, built: Built, n_zone: int, n_input: int,
                     rejected: list[ValidationError], journal: Journal | None) -> BatchResult:
        n = len(built.ev)
        details = journal.details(n) if journal is not None else (built.prox, built.dist)
        events = to_events(tr, res.names, self.places, proximity=details[0], distance=details[1])
        stats = {"sightings": n_input, "zone_sightings": n_zone, "applied": int((tr.status == 0).sum()),
                 "late": tr.late, "duplicates": built.dup, "rejected": len(rejected)}
        now = float(built.ev.ts.max()) if n else self.config.clock()
        return self._finish(events, stats, rejected, now)

    def advance(self, now: float, limit: int | None = None) -> BatchResult:
        """Time passes to ``now`` (event time): exits whose debounce ran out, devices idle past the TTL forgotten.
        With ``limit``: at most that many due devices (``store.due_left``: call again for the others)."""
        tr, names = self.store.advance(float(now), self.places, self.params, limit)
        events = to_events(tr, names, self.places)
        return self._finish(events, {}, [], float(now))

    # -- devices ----------------------------------------------------------------------------

    def forget(self, device_id: str) -> BatchResult:
        """Erase everything known of a device (privacy). Its open visits end with ``cause="forget"``; no offers."""
        tr, names = self.store.forget(device_id, self.places, self.params)
        events = to_events(tr, names, self.places)
        self.counters["forgotten"] += 1
        return self._finish(events, {"forgotten": 1}, [], 0.0, decide=False)

    def set_opt_out(self, device_id: str, flag: bool = True) -> None:
        """Mark a device as opted out of offers (presence is still tracked; rules see ``Device.opted_out``)."""
        self.store.set_opt_out(device_id, bool(flag))

    def device_state(self, device_id: str) -> dict[str, Any]:
        """What the engine holds for a device: its open visits, last evidence time, attrs, time zone, opt-out."""
        snap = self.store.snapshot(device_id, self.places, self.params) or {"last_ts": None, "visits": []}
        dev = self.store.devices([device_id])[device_id]
        return {"device_id": device_id, **snap, "attrs": dict(dev.attrs), "timezone": dev.timezone,
                "opted_out": dev.opted_out}

    # -- output -----------------------------------------------------------------------------

    def _decide_parts(self, events_of: list[list[Event]], owner: Mapping[str, int],
                      newest: np.ndarray) -> list[list[Offer]]:
        """The offers of each part's events (``owner``: the part of each device with events), decided in one
        call of the rules over the parts' events in part order (their devices read in one call too), as the
        parts decided one after the other would get them: the parts share no device, a decision writes no
        device info, and the rules take events in order (so a cap or budget the parts compete for goes to the
        earlier part). ``now``: the newest of the parts'."""
        assert self.rules is not None
        events = [e for part in events_of for e in part]
        devices = self.store.devices(list(dict.fromkeys(e.device_id for e in events)))
        finite = newest[np.isfinite(newest)]
        offers = self.rules.decide(events, devices, float(finite.max()) if len(finite) else self.config.clock())
        return _parts.split_by_device(offers, owner, len(events_of))

    def _finish(self, events: list[Event], stats: dict[str, int], rejected: list[ValidationError], now: float,
                *, decide: bool = True, offers: list[Offer] | None = None, count: bool = True) -> BatchResult:
        """Count ``events`` and decide their offers (``offers``: those the caller decided already); ``count``:
        add the stats and offers to :attr:`counters` (``False``: the caller adds a call's parts up at once)."""
        for e in events:
            stats[e.kind] = stats.get(e.kind, 0) + 1
        stats["events"] = len(events)
        if count:
            self.counters.update(stats)
        if offers is None and decide and events and self.rules is not None:
            devices = self.store.devices(list(dict.fromkeys(e.device_id for e in events)))
            offers = list(self.rules.decide(events, devices, now))
        if offers is not None and count:
            self.counters["offers"] += len(offers)
        return BatchResult(events, offers or [], stats, rejected)


__all__ = ["BatchResult", "Engine", "EngineConfig", "Rules"]
