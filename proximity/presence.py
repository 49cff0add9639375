"""Presence: per device and place, when it enters, dwells in and leaves.

The rules (each has a scenario test in ``tests/proximity/test_presence.py``):

- **Enter needs confidence.** GPS evidence for a fence comes at three levels:
  ``ENTER`` (accuracy circle fully inside, or point inside with an accuracy at
  most the place's limit), ``KEEP`` (keeps a visit alive but never starts one:
  point inside with a coarser accuracy, or point outside but within an
  accuracy at most the limit, which is what boundary jitter looks like) and
  ``AMBIGUOUS`` (point outside, within a coarse accuracy: says nothing).
  Beacon evidence is ``ENTER`` for immediate/near and ``AMBIGUOUS`` for far/unknown.
- **Exit needs evidence.** A GPS ping that is not paired with a fence at all
  is outside it by more than its accuracy; the visit ends then unless a beacon
  said "inside" within the beacon debounce. Otherwise a visit ends when no
  inside evidence came for longer than the debounce time of each source (GPS
  60 s, beacon 30 s by default; evidence exactly at the limit still counts):
  the exit is dated when the last debounce ran out.
- **Options against single-fix mistakes** (off by default): with
  ``gps_exit_pings`` N > 1 only the N-th unpaired GPS ping in a row ends a visit
  (an inside ping resets the count); with ``gps_enter_confirm_s`` T > 0 a GPS
  enter is *tentative* (no event, no dwell, not in snapshots) until a second
  ``ENTER`` ping for the place at least T after the first, which emits the
  ``enter`` (its ``dwell_s`` counts from the first ping); a beacon ``ENTER``
  confirms at once; an unpaired ping or the debounce drops it without an event.
  With ``gps_one_store_at_a_time`` as well, it is not confirmed while the
  confirming ping also keeps a confirmed visit to a fence that does not overlap
  it (the store next door); a mall and its shops overlap, so they do not block.
- **Dwell** fires once per visit per threshold (the place's own dwell time plus
  the campaigns' extra ones), on the first inside evidence (``ENTER`` or
  ``KEEP``) for the place at or after it; the event's ``dwell_s`` is the threshold.
- **Order.** Evidence is applied per device in event-time order (ties broken by
  content, so arrival order never matters); evidence not newer than the device's
  newest evidence applied by an earlier batch is dropped and counted (``late``),
  so a resent batch changes nothing; within one batch, equal times all apply.
- **Places.** A fence is a place; a beacon zone is a place of its own
  (``fence_id#zone``); a beacon sighting is evidence for the zone, its store and the
  fences that cover the store (a mall, for its shop's beacons).

The transition itself is one function over arrays, :func:`apply_evidence`
(numba, in :mod:`proximity._kernels`), used by both state stores: the memory
store hands it its whole table, the Redis store the devices it loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

import proximity._kernels as K
import proximity._kernels_visit as VK
from proxbase.jit import compiled
from proximity.events import Event, EventKind, ProximityClass, Source
from proximity.transitions import Evidence, Transitions
from proximity.visit import DEFAULT_MODEL, VisitModel

KINDS: tuple[EventKind, ...] = ("enter", "dwell", "exit")
SOURCES: dict[int, Source] = {1: "gps", 2: "beacon", 3: "fused"}
CAUSES = ("ping", "sighting", "debounce", "forget")
PROXIMITY_NAMES: tuple[ProximityClass, ...] = ("unknown", "immediate", "near", "far")
#: Evidence levels (see the module docstring).
AMBIGUOUS, KEEP, ENTER = K.LEVEL_AMBIGUOUS, K.LEVEL_KEEP, K.LEVEL_ENTER
GPS, BEACON = K.SRC_GPS, K.SRC_BEACON
MAX_THRESHOLDS = 32


@dataclass(frozen=True)
class PresenceParams:
    """Time constants of the state machine (seconds)."""

    gps_debounce_s: float = 60.0
    beacon_debounce_s: float = 30.0
    ttl_s: float = 7 * 24 * 3600.0
    #: unpaired GPS pings in a row that end a visit (1: the first one does)
    gps_exit_pings: int = 1
    #: > 0: a GPS enter waits for a second ENTER-level ping for the place at least this long after the first
    gps_enter_confirm_s: float = 0.0
    #: with confirmation: not while the confirming ping also keeps a visit to a fence that does not overlap
    gps_one_store_at_a_time: bool = False
    #: > 0: a visit is tentative (no event) until its probability reaches this (see :mod:`proximity.visit`)
    enter_probability: float = 0.0
    #: > 0: a GPS fix farther from the device's last accepted fix than this speed allows is not applied
    max_speed_mps: float = 0.0
    #: the visit-probability filter
    model: VisitModel = DEFAULT_MODEL
    #: > 0: unpaired GPS fixes end a visit only once its probability is below this
    exit_probability: float = 0.0
    pm: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("gps_debounce_s", "beacon_debounce_s", "ttl_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {v!r}")
        if self.ttl_s < max(self.gps_debounce_s, self.beacon_debounce_s):
            raise ValueError("ttl_s must be at least the longest debounce time")
        if not (isinstance(self.gps_exit_pings, int) and 1 <= self.gps_exit_pings <= 255):
            raise ValueError(f"gps_exit_pings must be an integer from 1 to 255, not {self.gps_exit_pings!r}")
        c = self.gps_enter_confirm_s
        if not (isinstance(c, int | float) and math.isfinite(c) and c >= 0):
            raise ValueError(f"gps_enter_confirm_s must be a number of seconds >= 0, not {c!r}")
        e = self.enter_probability
        if not (isinstance(e, int | float) and 0 <= e < 1):
            raise ValueError(f"enter_probability must be a number in [0, 1), not {e!r}")
        v = self.max_speed_mps
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"max_speed_mps must be a number of m/s >= 0 (0: no check), not {v!r}")
        x = self.exit_probability
        if not (isinstance(x, int | float) and 0 <= x < 1):
            raise ValueError(f"exit_probability must be a number in [0, 1), not {x!r}")
        object.__setattr__(self, "pm", self.model.pm(float(e), float(v), float(x)))


class PlaceTable:
    """Place keys (``fence_id`` or ``fence_id#zone``) <-> small integer ids, and each place's dwell thresholds.

    Ids are handed out by the state store (:meth:`StateStore.place_ids`) so that
    processes sharing a Redis agree on them; this table caches them and keeps
    the per-place arrays the transition function reads.
    """

    def __init__(self, dwell_of: Callable[[str], Sequence[float]] | None = None) -> None:
        #: place key -> its distinct dwell thresholds (the engine sets this from fences, config and rules)
        self.dwell_of: Callable[[str], Sequence[float]] = dwell_of or (lambda key: [300.0])
        self.ids: dict[str, int] = {}
        self.keys: list[str | None] = []
        #: whether each id has a key (``keys[i] is not None``), as an array: a batch's ids are checked at once
        self.known = np.zeros(0, bool)
        self.thresholds = np.full((0, 1), np.inf)
        self.is_zone = np.zeros(0, np.uint8)
        #: fences whose interiors intersect, by place id (CSR: ``overlap_idx[overlap_ptr[p]:overlap_ptr[p + 1]]``)
        self.overlap_ptr = np.zeros(1, np.int64)
        self.overlap_idx = np.zeros(0, np.int32)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: Sequence[str], ids: Sequence[int], thresholds: Sequence[Sequence[float]]) -> None:
        top = max([len(self.keys) - 1, *ids]) + 1
        width = max([self.thresholds.shape[1], *(len(t) for t in thresholds)])
        if width > MAX_THRESHOLDS:
            raise ValueError(f"a place can have at most {MAX_THRESHOLDS} distinct dwell thresholds")
        if top > len(self.keys) or width > self.thresholds.shape[1]:
            thr = np.full((max(top, 2 * len(self.keys)), width), np.inf)
            thr[: self.thresholds.shape[0], : self.thresholds.shape[1]] = self.thresholds
            zone = np.zeros(thr.shape[0], np.uint8)
            zone[: len(self.is_zone)] = self.is_zone
            known = np.zeros(thr.shape[0], bool)
            known[: len(self.known)] = self.known
            self.thresholds, self.is_zone, self.known = thr, zone, known
            self.keys.extend([None] * (thr.shape[0] - len(self.keys)))
        for key, pid, ts in zip(keys, ids, thresholds, strict=True):
            self.ids[key] = pid
            self.keys[pid] = key
            self.known[pid] = True
            row = np.full(self.thresholds.shape[1], np.inf)
            row[: len(ts)] = sorted(set(ts))
            self.thresholds[pid] = row
            self.is_zone[pid] = "#" in key

    def add_keys(self, keys: Sequence[str], ids: Sequence[int]) -> None:
        """Add places with the thresholds ``dwell_of`` gives them."""
        self.add(keys, ids, [self.dwell_of(k) for k in keys])

    def refresh(self) -> None:
        """Recompute every known place's thresholds (after the fences or the rules changed)."""
        known = [(k, i) for k, i in self.ids.items()]
        self.thresholds[:] = np.inf
        self.add_keys([k for k, _ in known], [i for _, i in known])

    def set_overlaps(self, a: np.ndarray, b: np.ndarray) -> None:
        """The pairs of places (ids) ``a[i]``, ``b[i]`` whose interiors intersect (both directions are added)."""
        self.overlap_ptr, self.overlap_idx = csr(np.concatenate([a, b]), np.concatenate([b, a]))

    def split(self, pid: int) -> tuple[str, str | None]:
        key = self.keys[pid]
        if key is None:
            raise KeyError(f"unknown place id {pid}")
        fence, _, zone = key.partition("#")
        return fence, (zone or None)


class DeviceNames(Protocol):
    """Handles -> device ids: ``names[handles]`` is an object array of ids."""

    def __getitem__(self, handles: Any, /) -> Any: ...


@dataclass
class Resolved:
    """Device ids of a batch resolved to the store's integer handles.

    ``codes[i]`` is the handle of row ``i``; ``names[codes[i]]`` is its device id (``names`` is an
    object array, or anything indexed the same way by an array of handles).
    """

    codes: np.ndarray
    names: DeviceNames


class PresenceState:
    """The device table and the visit-record pool (see :mod:`proximity._kernels`), growable."""

    def __init__(self, devices: int = 0, records: int = 0) -> None:
        #: per device one 64-byte row (one cache line): the last fix (``d_fix``, columns ``VK.FIX_*``), then
        #: the newest applied evidence time (``d_last``, column ``K.DEV_LAST``), then padding
        self.d_dev = _fresh_dev(devices)
        self.d_head = np.full(devices, -1, np.int32)
        self.r_place = np.zeros(0, np.int32)
        self.r_dev = np.zeros(0, np.int32)
        self.r_enter = np.zeros(0)
        self.r_gps = np.zeros(0)
        self.r_bcn = np.zeros(0)
        self.r_mask = np.zeros(0, np.uint32)
        self.r_src = np.zeros(0, np.uint8)
        self.r_conf = np.zeros(0, np.int8)
        self.r_miss = np.zeros(0, np.uint8)
        self.r_tent = np.zeros(0, np.uint8)
        self.r_lo = np.zeros(0)
        self.r_next = np.zeros(0, np.int32)
        self.meta = np.array([-1, 0], np.int64)  # free-list head, free count
        self.grow_records(records)

    @property
    def d_last(self) -> np.ndarray:
        """Newest applied evidence time per device (a view into ``d_dev``)."""
        return self.d_dev[:, K.DEV_LAST]

    @property
    def d_fix(self) -> np.ndarray:
        """Last accepted GPS fix per device: time, lon, lat, log-accuracy baseline (a view into ``d_dev``)."""
        return self.d_dev[:, : K.DEV_LAST]

    @property
    def n_devices(self) -> int:
        return len(self.d_dev)

    def grow_devices(self, n: int) -> None:
        if n <= len(self.d_dev):
            return
        old = len(self.d_dev)
        self.d_dev = np.concatenate([self.d_dev, _fresh_dev(n - old)])
        self.d_head = np.concatenate([self.d_head, np.full(n - old, -1, np.int32)])

    def grow_records(self, free_needed: int) -> None:
        """Make at least ``free_needed`` records free (capacity at least doubles when it grows)."""
        if self.meta[1] >= free_needed:
            return
        old = len(self.r_place)
        new = max(old * 2, old + int(free_needed - self.meta[1]), 64)
        for name, fill in (("r_place", 0), ("r_dev", -1), ("r_enter", 0.0), ("r_gps", 0.0), ("r_bcn", 0.0),
                           ("r_mask", 0), ("r_src", 0), ("r_conf", 0), ("r_miss", 0), ("r_tent", 0), ("r_lo", 0.0), ("r_next", -1)):
            a = getattr(self, name)
            b = np.full(new, fill, dtype=a.dtype)
            b[:old] = a
            setattr(self, name, b)
        # chain the new records in front of the free list
        fresh = np.arange(old, new, dtype=np.int32)
        self.r_next[fresh[:-1]] = fresh[1:]
        self.r_next[new - 1] = self.meta[0]
        self.meta[0] = old
        self.meta[1] += new - old

    def records_of(self, d: int) -> list[int]:
        out = []
        r = int(self.d_head[d])
        while r >= 0:
            out.append(r)
            r = int(self.r_next[r])
        return out

    def reset_devices(self, devs: np.ndarray) -> None:
        """Forget devices whose records were already freed (after ``advance`` with expiry)."""
        self.d_dev[devs] = _fresh_dev(1)
        self.d_head[devs] = -1

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in vars(self) if isinstance(getattr(self, n), np.ndarray))


def csr(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``src[i] -> dst[i]`` (place ids) as CSR: ``dst`` of place ``p`` at ``idx[ptr[p]:ptr[p + 1]]``."""
    src = np.asarray(src, np.int64)
    order = np.argsort(src, kind="stable")
    size = int(src.max()) + 2 if len(src) else 1
    ptr = np.zeros(size, np.int64)
    np.cumsum(np.bincount(src, minlength=size - 1), out=ptr[1:])
    return ptr, np.asarray(dst, np.int32)[order]


def _fresh_dev(n: int) -> np.ndarray:
    """``d_dev`` rows of devices with nothing applied yet: times -inf, position and baseline unknown."""
    out = np.full((n, K.DEV_WIDTH), np.nan)
    out[:, VK.FIX_TS] = -np.inf
    out[:, K.DEV_LAST] = -np.inf
    return out


#: the arguments of the transition kernel's use a call does not make, typed as the other use passes them
_NO_DEVS = np.zeros(0, np.int64)
_NO_EXPIRED = np.zeros(0, np.bool_)


def _evidence_columns(ev: Evidence, cut: np.ndarray) -> tuple[np.ndarray, ...]:
    """The evidence as the kernel reads it, each column in one dtype whoever built it (a column of another
    dtype or layout would compile the whole transition kernel once more)."""
    assert ev.lon is not None and ev.lat is not None and ev.acc is not None and ev.spd is not None
    assert ev.llr is not None
    c = np.ascontiguousarray
    return (c(ev.dev, np.int64), c(ev.ts, np.float64), c(cut, np.float64), c(ev.src, np.int8), c(ev.obs, np.int64),
            c(ev.place, np.int32), c(ev.level, np.int8), c(ev.conf, np.int8),
            c(ev.lon, np.float64), c(ev.lat, np.float64), c(ev.acc, np.float64), c(ev.spd, np.float64),
            c(ev.llr, np.float64))


_NO_EVIDENCE = _evidence_columns(
    Evidence(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int8), np.zeros(1, np.int64), np.zeros(0, np.int32),
             np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros(0, np.int64)), np.zeros(0))


def _transition(state: PresenceState, columns: tuple[np.ndarray, ...], places: PlaceTable, params: PresenceParams,
                out: Transitions, n_out: np.ndarray, start: int = 0, *, advance: bool = False,
                devs: np.ndarray = _NO_DEVS, now: float = 0.0, forget: bool = False,
                expired: np.ndarray = _NO_EXPIRED) -> int:
    """One call of the transition kernel (``K.transition``) with every argument typed as every other call's."""
    dev, ts, cut, src, obs, place, level, conf, lon, lat, acc, spd, llr = columns
    return int(K.transition(
        start, dev, ts, cut, src, obs, place, level, conf,
        state.d_head,
        state.r_place, state.r_dev, state.r_enter, state.r_gps, state.r_bcn, state.r_mask, state.r_src,
        state.r_conf, state.r_miss, state.r_tent, state.r_next, state.meta,
        places.thresholds, places.is_zone, places.overlap_ptr, places.overlap_idx, float(params.gps_debounce_s),
        float(params.beacon_debounce_s), int(params.gps_exit_pings), float(params.gps_enter_confirm_s),
        bool(params.gps_one_store_at_a_time),
        *out._buffers(), n_out, out.status,
        lon, lat, acc, spd, llr, state.d_dev, state.r_lo, params.pm,
        advance, devs, float(now), float(params.ttl_s), bool(forget), expired,
    ))


def apply_evidence(state: PresenceState, ev: Evidence, places: PlaceTable, params: PresenceParams) -> Transitions:
    """The transition function: apply sorted evidence to ``state`` (in place) and return the events.

    Pure in the sense that matters: no I/O, and the same state and evidence always
    give the same new state and events, whichever store holds the state.
    """
    n = len(ev)
    out = Transitions.empty(max(64, n // 16), n)
    n_out = np.zeros(1, np.int64)
    start = 0
    thr = places.thresholds
    columns = _evidence_columns(ev, state.d_last[ev.dev])  # newest applied time per device before this batch
    while True:
        start = _transition(state, columns, places, params, out, n_out, start)
        if start >= n:
            return out.trimmed(int(n_out[0]))
        # out of records or event room for evidence `start`: grow both, go on from there
        d = ev.dev[start]
        need = int(ev.obs[start + 1] - ev.obs[start])
        state.grow_records(max(need, len(state.r_place) // 2 + 1))
        nrec = len(state.records_of(int(d)))
        room = 2 * nrec + need + (nrec + need) * (thr.shape[1] + 1)
        out = out.grown(2 * len(out) + room)


def advance_state(
    state: PresenceState, devs: np.ndarray, now: float, params: PresenceParams, *, forget: bool = False,
    places: PlaceTable | None = None,
) -> tuple[Transitions, np.ndarray]:
    """Time passes to ``now`` for the devices ``devs``: exits whose debounce ran out; expired devices.

    Returns the events and a boolean array: which of ``devs`` expired (idle for
    the TTL with no visit left, or all of them with ``forget``).
    """
    devs = np.ascontiguousarray(devs, dtype=np.int64)
    if places is None:  # no place table: no competition between places (probabilities of lone places)
        places = PlaceTable()
        places.is_zone = np.zeros(int(state.r_place.max(initial=0)) + 1, np.uint8)
    cap = 16 + sum(len(state.records_of(int(d))) for d in devs) if len(devs) < 64 else 16 + len(state.r_place)
    out = Transitions.empty(cap)
    n_out = np.zeros(1, np.int64)
    expired = np.zeros(len(devs), np.bool_)
    _transition(state, _NO_EVIDENCE, places, params, out, n_out, advance=True, devs=devs, now=now, forget=forget,
                expired=expired)
    return out.trimmed(int(n_out[0])), expired


def next_due(state: PresenceState, devs: np.ndarray, params: PresenceParams) -> np.ndarray:
    """For each device, the earliest ``now`` at which :func:`advance_state` would change it."""
    devs = np.ascontiguousarray(devs, dtype=np.int64)
    out = np.empty(len(devs))
    K.next_due(devs, float(params.ttl_s), state.d_dev, state.d_head, state.r_gps, state.r_bcn, state.r_next,
               float(params.gps_debounce_s), float(params.beacon_debounce_s), out)
    return out


#: a batch of at most this much evidence is ordered by :func:`order_ties_small` (numpy) while the kernel has
#: no machine code, so a small first run does not compile ``order_ties``; larger ones, and every one once
#: the kernel is compiled (:func:`compile_sort`), use the kernel (no full sort when ties are rare)
SMALL_SORT = 1 << 14


def order_ties_small(order: np.ndarray, dev: np.ndarray, ts: np.ndarray, k1: np.ndarray, k2: np.ndarray,
                     k3: np.ndarray) -> np.ndarray:
    """What ``K.order_ties`` makes of ``order`` (sorted by ``dev``), in numpy: sorted by (dev, ts, k1, k2, k3,
    index), whatever ``order``'s order of equal ``dev``. ``ts`` must hold no NaN (the kernel's tuple
    comparison and numpy's differ there); the keys are NaN-free already."""
    o = np.asarray(order)
    return o[np.lexsort((o, k3[o], k2[o], k1[o], ts[o], dev[o]))]


def compile_sort() -> None:
    """Compile the ``order_ties`` kernel (or load it from the kernel cache): :func:`sort_evidence` orders
    every batch with it after, small ones too (a server calls it before it says it is ready)."""
    z = np.zeros(1)
    K.order_ties(np.zeros(1, np.int64), np.zeros(1, np.int64), z, z, z, z)


def sort_evidence(dev: np.ndarray, ts: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by (device, time, keys...) and a mask of exact duplicates (same device, time and keys).

    Returns ``(order, duplicate)`` where ``duplicate[i]`` says that ``order[i]``
    repeats the evidence just before it. Remaining ties go by input position, so of rows equal in every
    key (e.g. two sightings of one beacon at one instant with different distances) the first in the
    input is kept, on every store.
    """
    k = [np.where(np.isnan(x), -1.0, x) for x in (np.asarray(y, dtype=np.float64) for y in keys)]  # (not nan_to_num: 4x its cost on a small batch)
    while len(k) < 3:
        k.append(np.zeros(len(dev)))
    order = np.argsort(dev)  # equal devices are ordered by content and input position just below
    if len(order) <= SMALL_SORT and not compiled(K.order_ties) and not np.isnan(ts).any():
        order = order_ties_small(order, dev, ts, k[0], k[1], k[2])
    else:
        K.order_ties(order, dev, ts, k[0], k[1], k[2])
    dup = np.zeros(len(order), bool)
    if len(order) > 1:
        sd = dev[order]
        cand = np.flatnonzero(sd[1:] == sd[:-1])  # same device as the previous one: rare in steady state
        if len(cand):
            a, b = order[cand], order[cand + 1]
            same = ts[a] == ts[b]
            for x in k:
                same &= x[a] == x[b]
            dup[cand[same] + 1] = True
    return order, dup


def record_probability(state: PresenceState, d: int, r: int, places: PlaceTable, params: PresenceParams) -> float:
    """The calibrated visit probability of record ``r`` of device ``d`` as of its last evidence."""
    return float(VK.probability_of(d, r, state.r_lo[r], state.d_head, state.r_place, state.r_lo, state.r_next,
                                  places.is_zone, places.overlap_ptr, places.overlap_idx, params.pm))


def visit_snapshot(state: PresenceState, d: int, places: PlaceTable,
                   params: PresenceParams | None = None) -> dict[str, Any]:
    """A JSON-ready view of one device's state (for ``device_state`` and debugging).

    Tentative visits (no ``enter`` yet) are listed under ``candidates``.
    """
    visits = []
    candidates = []
    prm = params or PresenceParams()
    for r in state.records_of(d):
        prob = round(record_probability(state, d, r, places, prm), 4)
        if state.r_tent[r]:  # not a visit until its confirming ping (or probability)
            candidates.append({"place": places.keys[int(state.r_place[r])], "since_ts": float(state.r_enter[r]),
                               "probability": prob})
            continue
        pid = int(state.r_place[r])
        fence, zone = places.split(pid)
        thr = places.thresholds[pid]
        mask = int(state.r_mask[r])
        visits.append({
            "place": places.keys[pid],
            "fence_id": fence,
            "zone": zone,
            "entered_ts": float(state.r_enter[r]),
            "gps_last_inside_ts": _finite(state.r_gps[r]),
            "beacon_last_inside_ts": _finite(state.r_bcn[r]),
            "dwell_fired_s": [float(thr[j]) for j in range(len(thr)) if mask >> j & 1],
            "source": SOURCES[int(state.r_src[r])],
            "confidence": int(state.r_conf[r]),
            "probability": prob,
        })
    visits.sort(key=lambda v: str(v["place"]))
    candidates.sort(key=lambda v: str(v["place"]))
    return {"last_ts": _finite(state.d_last[d]), "visits": visits, "candidates": candidates}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def to_events(
    tr: Transitions,
    device_ids: DeviceNames,
    places: PlaceTable,
    *,
    proximity: np.ndarray | None = None,
    distance: np.ndarray | None = None,
) -> list[Event]:
    """Event objects from transition arrays (``device_ids[tr.dev]`` names the devices).

    Sorted by device id, then the evidence that caused them (time order), then time;
    one evidence's exits come before its enters before its dwells (a device walking from
    one fence into the next leaves, then enters), then by place: the same order whichever
    store holds the state. ``proximity`` and
    ``distance`` (indexed by evidence) fill in beacon details of beacon-caused events.
    """
    n = len(tr)
    if n == 0:
        return []
    ids = device_ids[tr.dev]
    out: list[Event] = []
    for i in range(n):
        fence, zone = places.split(int(tr.place[i]))
        prox: ProximityClass | None = None
        dist: float | None = None
        e = int(tr.ev[i])
        if e >= 0 and proximity is not None and tr.cause[i] == K.CAUSE_SIGHTING:
            prox = PROXIMITY_NAMES[int(proximity[e])]
            if distance is not None and math.isfinite(distance[e]):
                dist = float(distance[e])
        out.append(Event(
            kind=KINDS[int(tr.kind[i])],
            device_id=str(ids[i]),
            fence_id=fence,
            ts=float(tr.ts[i]),
            source=SOURCES[int(tr.src[i])],
            zone=zone,
            confidence=int(tr.conf[i]),
            dwell_s=float(tr.dwell[i]),
            cause=CAUSES[int(tr.cause[i])],
            proximity=prox,
            distance_m=dist,
            probability=round(float(tr.prob[i]), 4),
        ))
    rank = {"exit": 0, "enter": 1, "dwell": 2}
    ev = tr.ev.tolist()
    order = sorted(range(n), key=lambda i: (out[i].device_id, ev[i] if ev[i] >= 0 else math.inf, out[i].ts,
                                            rank[out[i].kind], out[i].place, out[i].dwell_s))
    return [out[i] for i in order]


def thresholds_for(key: str, own: float, extra: Mapping[str, Sequence[float]]) -> list[float]:
    """The distinct dwell thresholds of a place: its own plus the rules' for it, its fence and ``"*"``."""
    fence = key.partition("#")[0]
    out = {float(own)}
    for k in {key, fence, "*"}:
        for x in extra.get(k, ()):
            x = float(x)
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"dwell threshold for {k!r} must be a positive number of seconds, not {x!r}")
            out.add(x)
    return sorted(out)


__all__ = [
    "AMBIGUOUS",
    "BEACON",
    "CAUSES",
    "ENTER",
    "GPS",
    "KEEP",
    "KINDS",
    "PROXIMITY_NAMES",
    "SOURCES",
    "Evidence",
    "PlaceTable",
    "PresenceParams",
    "PresenceState",
    "Resolved",
    "Transitions",
    "advance_state",
    "apply_evidence",
    "csr",
    "next_due",
    "record_probability",
    "sort_evidence",
    "thresholds_for",
    "to_events",
    "visit_snapshot",
]
