"""From sightings to zone sightings: who is near which zone of which store, how far.

:class:`ProximityTracker` resolves both shapes of sighting through the registry:

- **phone saw a beacon** — the observer is not a registered gateway: the observer
  is the device, the key must be a registered beacon; the place is the beacon's
  ``(fence_id, zone)``; power at 1 m is the beacon's calibrated ``power_1m``,
  else the frame's advertised power.
- **gateway heard an advertiser** — the observer is a registered gateway: the
  key must match an advertiser rule, which names the device; the place is the
  gateway's ``(fence_id, zone)`` (zone ``None`` for a store-level gateway);
  power at 1 m is the rule's ``power_1m``, else the advertised power.
  A gateway hearing a *fixed beacon* of the registry is fleet-health data, not
  presence: such sightings are dropped and counted as ``gateway_heard_beacon``.

Unresolved sightings are dropped and counted in :attr:`ProximityTracker.stats`
(``unknown_beacon``, ``unknown_advertiser``, ``gateway_heard_beacon``).

Resolution works per *unique* observer and key of a batch (cached), never per
sighting; the RSSI filter keeps its state per device and (observer, key) pair across
batches (see :mod:`beacons.ranging`). A pair is named by a 64-bit hash of its observer
and key (the same in every process), a device by its id.

:meth:`ProximityTracker.update` keeps the filter state in the tracker (one process).
A service whose scans of one device may land on any worker splits it in two:
:meth:`~ProximityTracker.resolve` (stateless: who, where, which pair), then the
filter's ``step`` on the devices' state from the shared store, then
:meth:`~ProximityTracker.range` (see ``proximity.engine``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from beacons.ranging import (
    PROXIMITY_NAMES,
    DistanceModel,
    ProximityThresholds,
    RssiFilter,
    make_filter,
    make_model,
)
from beacons.registry import BeaconRegistry
from beacons.sightings import Sightings

_DEFAULT_THRESHOLDS = ProximityThresholds()


def _objects(n: int) -> np.ndarray:
    return np.empty(n, dtype=object)


@dataclass(frozen=True, eq=False)
class ZoneSightings:
    """One row per resolved input sighting; ``row`` is its input row (``Sightings.row``)."""

    device_id: np.ndarray
    fence_id: np.ndarray
    zone: np.ndarray
    distance_m: np.ndarray
    proximity: np.ndarray
    ts: np.ndarray
    row: np.ndarray
    rssi: np.ndarray
    key: np.ndarray
    observer: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    @property
    def proximity_name(self) -> np.ndarray:
        names: np.ndarray = np.asarray(PROXIMITY_NAMES, dtype=object)[self.proximity]
        return names

    def to_rows(self) -> list[dict[str, Any]]:
        names = self.proximity_name
        return [
            {"device_id": d, "fence_id": f, "zone": z, "distance_m": None if np.isnan(m) else float(m),
             "proximity": p, "ts": float(t), "row": int(r), "rssi": float(s), "key": k, "observer": o}
            for d, f, z, m, p, t, r, s, k, o in zip(
                self.device_id, self.fence_id, self.zone, self.distance_m, names, self.ts, self.row,
                self.rssi, self.key, self.observer, strict=True)
        ]


@dataclass(frozen=True, eq=False)
class Resolved:
    """Resolved sightings before ranging: one row per resolved input sighting, ``pair`` the 64-bit code
    of its (observer, key) pair, ``power`` its power at 1 m (NaN: unknown), ``rssi`` as measured."""

    device_id: np.ndarray
    fence_id: np.ndarray
    zone: np.ndarray
    power: np.ndarray
    pair: np.ndarray
    ts: np.ndarray
    rssi: np.ndarray
    row: np.ndarray
    key: np.ndarray
    observer: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def _hashes(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each string (the same in every process), per unique value."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(str(v).encode("utf-8", "surrogatepass"), digest_size=8)
                                       .digest(), "little") for v in values), np.uint64, len(values))


def pair_codes(observer_hash: np.ndarray, key_hash: np.ndarray) -> np.ndarray:
    """The int64 code of each (observer, key) pair, from the two strings' hashes (:func:`_hashes`)."""
    mixed = observer_hash * np.uint64(0x9E3779B97F4A7C15) + (key_hash ^ np.uint64(0xD6E8FEB86659FD93))
    return mixed.view(np.int64)


@dataclass(frozen=True, slots=True)
class _KeyInfo:
    beacon_fence: str | None
    beacon_zone: str | None
    beacon_power: float
    device: str | None
    advertiser_power: float


class ProximityTracker:
    """Stateful ranging over batches of sightings (see the module docstring)."""

    def __init__(
        self,
        registry: BeaconRegistry,
        *,
        filter: str | RssiFilter = "trimmed",
        model: str | DistanceModel = "log_distance",
        thresholds: ProximityThresholds | tuple[float, float] = _DEFAULT_THRESHOLDS,
        window_s: float = 20.0,
        trim: float = 0.1,
        arma_coefficient: float = 0.1,
        path_loss_exponent: float = 2.0,
    ) -> None:
        self.registry = registry
        self.filter = make_filter(filter, window_s=window_s, trim=trim, coefficient=arma_coefficient)
        self.model = make_model(model, exponent=path_loss_exponent)
        self.thresholds = (thresholds if isinstance(thresholds, ProximityThresholds)
                           else ProximityThresholds(*thresholds))
        self.stats: Counter[str] = Counter()
        self._key_info: dict[str, _KeyInfo] = {}
        self._devices: dict[str, int] = {}  # device id -> its code in the filter state of ``update``

    def _info(self, key: str) -> _KeyInfo:
        info = self._key_info.get(key)
        if info is None:
            place = self.registry.beacon(key)
            adv = self.registry.advertiser(key)
            info = _KeyInfo(
                beacon_fence=None if place is None else place.fence_id,
                beacon_zone=None if place is None else place.zone,
                beacon_power=np.nan if place is None or place.power_1m is None else place.power_1m,
                device=None if adv is None else adv[0],
                advertiser_power=np.nan if adv is None or adv[1] is None else adv[1],
            )
            if place is not None or adv is not None:  # the registry's keys only: a gateway hears the adverts of
                self._key_info[key] = info  # every passer-by, and those would pile up for as long as it runs
        return info

    def forget(self, device_id: str) -> int:
        """Erase what the tracker keeps of a device (privacy): filter state where the device is the
        observer (its phone) or the advertiser (its app's advert, a tag). Returns the pairs erased."""
        code = self._devices.pop(device_id, None)
        for k in [k for k, info in self._key_info.items() if info.device == device_id]:
            self._key_info.pop(k, None)
        if code is None:
            return 0
        state = self.filter.state
        mine = state.dev == code
        self.filter.state = state.take(~mine)
        return len(np.unique(state.pair[mine]))

    def update(self, sightings: Sightings) -> ZoneSightings:
        """Resolve, filter (state kept in this tracker) and range a batch of sightings."""
        r = self.resolve(sightings)
        if not len(r):
            return self._empty()
        uniq, inv = np.unique(r.device_id, return_inverse=True)
        codes = np.fromiter((self._devices.setdefault(d, len(self._devices)) for d in uniq), np.int64, len(uniq))
        state = self.filter.state
        rssi, self.filter.state = self.filter.step(codes[inv], r.pair, r.ts, r.rssi, state)
        return self.range(r, rssi)

    def resolve(self, sightings: Sightings) -> Resolved:
        """Who saw what where (no filter state): the registry's answer per unique observer and key."""
        n = len(sightings)
        self.stats["sightings"] += n
        if n == 0:
            return self._resolved_empty()
        uobs, obs_inv = np.unique(sightings.observer, return_inverse=True)
        ukey, key_inv = np.unique(sightings.key, return_inverse=True)
        # per unique observer: gateway place or none
        gateways = [self.registry.gateway(o) for o in uobs]
        is_gw_u = np.array([g is not None for g in gateways], dtype=bool)
        gw_fence_u = _objects(len(uobs))
        gw_fence_u[:] = [None if g is None else g.fence_id for g in gateways]
        gw_zone_u = _objects(len(uobs))
        gw_zone_u[:] = [None if g is None else g.zone for g in gateways]
        # per unique key: beacon place and advertiser device
        infos = [self._info(k) for k in ukey]
        b_fence_u = _objects(len(ukey))
        b_fence_u[:] = [i.beacon_fence for i in infos]
        b_zone_u = _objects(len(ukey))
        b_zone_u[:] = [i.beacon_zone for i in infos]
        b_power_u = np.array([i.beacon_power for i in infos], dtype=np.float64)
        dev_u = _objects(len(ukey))
        dev_u[:] = [i.device for i in infos]
        a_power_u = np.array([i.advertiser_power for i in infos], dtype=np.float64)
        is_beacon_u = np.array([i.beacon_fence is not None for i in infos], dtype=bool)
        is_adv_u = np.array([i.device is not None for i in infos], dtype=bool)

        is_gw = is_gw_u[obs_inv]
        is_beacon = is_beacon_u[key_inv]
        is_adv = is_adv_u[key_inv]
        phone_ok = ~is_gw & is_beacon
        gw_ok = is_gw & is_adv
        self.stats["unknown_beacon"] += int(np.count_nonzero(~is_gw & ~is_beacon))
        self.stats["gateway_heard_beacon"] += int(np.count_nonzero(is_gw & ~is_adv & is_beacon))
        self.stats["unknown_advertiser"] += int(np.count_nonzero(is_gw & ~is_adv & ~is_beacon))
        ok = phone_ok | gw_ok
        rows = np.flatnonzero(ok)
        self.stats["resolved"] += len(rows)
        if len(rows) == 0:
            return self._resolved_empty()
        o_i, k_i, gw = obs_inv[rows], key_inv[rows], is_gw[rows]
        device = np.where(gw, dev_u[k_i], uobs[o_i])
        fence = np.where(gw, gw_fence_u[o_i], b_fence_u[k_i])
        zone = np.where(gw, gw_zone_u[o_i], b_zone_u[k_i])
        power = np.where(gw, a_power_u[k_i], b_power_u[k_i])
        power = np.where(np.isnan(power), sightings.tx_power[rows], power)
        pair = pair_codes(_hashes(uobs)[o_i], _hashes(ukey)[k_i])
        return Resolved(device.astype(object), fence.astype(object), zone.astype(object),
                        np.asarray(power, np.float64), pair, np.asarray(sightings.ts[rows], np.float64),
                        np.asarray(sightings.rssi[rows], np.float64),
                        np.asarray(sightings.row)[rows].astype(np.int64), sightings.key[rows],
                        sightings.observer[rows])

    def range(self, r: Resolved, rssi: np.ndarray) -> ZoneSightings:
        """Zone sightings from resolved rows and their filtered RSSI."""
        if not len(r):
            return self._empty()
        distance = self.model.distance(rssi, r.power)
        return ZoneSightings(device_id=r.device_id, fence_id=r.fence_id, zone=r.zone, distance_m=distance,
                             proximity=self.thresholds.classify(distance), ts=r.ts, row=r.row, rssi=rssi,
                             key=r.key, observer=r.observer)

    def _resolved_empty(self) -> Resolved:
        f = np.empty(0, dtype=np.float64)
        i = np.empty(0, dtype=np.int64)
        return Resolved(_objects(0), _objects(0), _objects(0), f, i, f, f, i, _objects(0), _objects(0))

    def _empty(self) -> ZoneSightings:
        f = np.empty(0, dtype=np.float64)
        return ZoneSightings(_objects(0), _objects(0), _objects(0), f, np.empty(0, dtype=np.int8), f,
                             np.empty(0, dtype=np.int64), f, _objects(0), _objects(0))


__all__ = ["ProximityTracker", "Resolved", "ZoneSightings", "pair_codes"]
