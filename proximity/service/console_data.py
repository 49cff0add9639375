"""What the console shows that the service does not otherwise keep: the beacon fleet as heard live,
and the devices' latest positions (the campaign counters are in :mod:`proximity.service.console_hourly`).

Each is fed on the engine thread by a listener of :class:`proximity.service.host.EngineHost`
(accepted scan batches, accepted ping batches) and read by the console's routes on
the event loop, so each holds a lock. The fleet is per worker and in memory: with
several workers, each sees the gateways that post to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beacons.frames import EddystoneTLM, parse_advertisement
from beacons.health import LOW_BATTERY_MV, SILENT_AFTER_S, beacon_problems


@dataclass
class _Heard:
    last_seen: float | None = None
    last_rssi: float | None = None
    sightings: int = 0
    heard_by: set[str] = field(default_factory=set)
    battery_mv: int | None = None
    temperature_c: float | None = None
    tlm_ts: float | None = None


class LiveFleet:
    """Beacons and gateways as the service hears them, judged by ``proximity beacons health``'s rule.

    Sightings (from gateways' scan batches and from phones) update each key's
    last seen, RSSI and observers, grouped with numpy per batch. Eddystone TLM
    frames in raw payloads give battery and temperature; as in
    :func:`beacons.fleet_health`, a TLM frame belongs to the identity last heard
    from the same Bluetooth ``address`` (a raw entry without an address carries
    no usable telemetry). A gateway is ``up`` while its last batch (heartbeats
    too) is at most ``silent_after_s`` old.
    """

    def __init__(self, registry: Callable[[], Any], *, silent_after_s: float = SILENT_AFTER_S,
                 low_battery_mv: int = LOW_BATTERY_MV) -> None:
        self._registry = registry
        self.silent_after_s = silent_after_s
        self.low_battery_mv = low_battery_mv
        self._lock = threading.Lock()
        self._keys: dict[str, _Heard] = {}
        self._gateways: dict[str, float] = {}
        self._identity: dict[str, str] = {}

    def observe(self, keys: np.ndarray, observers: np.ndarray, rssi: np.ndarray, ts: np.ndarray) -> None:
        """Sighting columns (any observers); one Python step per distinct key, not per sighting."""
        if not len(ts):
            return
        names, inverse = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
        order = np.lexsort((ts, inverse))  # by key, then time: the last of each group is the newest
        last = np.r_[np.flatnonzero(np.diff(inverse[order])), len(order) - 1]
        counts = np.bincount(inverse, minlength=len(names))
        obs_names, obs_inv = np.unique(np.asarray(observers, dtype=str), return_inverse=True)
        pairs = np.unique(np.stack([inverse, obs_inv]), axis=1)
        with self._lock:
            for g, i in enumerate(order[last]):
                h = self._keys.setdefault(str(names[g]), _Heard())
                h.sightings += int(counts[g])
                if h.last_seen is None or ts[i] >= h.last_seen:
                    h.last_seen, h.last_rssi = float(ts[i]), float(rssi[i])
            for k, o in pairs.T:
                self._keys[str(names[k])].heard_by.add(str(obs_names[o]))

    def observe_scan(self, scan: Any, doc: Mapping[str, Any]) -> None:
        """An accepted ``POST /v1/scans`` batch (the engine host's scan listener)."""
        s = scan.sightings
        self.observe(s.key, s.observer, s.rssi, s.ts)
        now = float(s.ts.max()) if len(s.ts) else float(scan.sent_at)
        with self._lock:
            self._gateways[scan.gateway_id] = max(self._gateways.get(scan.gateway_id, now), now)
        entries = doc.get("sightings") or ()
        self._remember_identities(entries, s, scan)
        for e in entries:  # telemetry: only raw payloads carrying an Eddystone TLM frame are parsed again
            raw = e.get("raw") if isinstance(e, Mapping) else None
            if isinstance(raw, str) and e.get("address") and "aafe2" in raw.replace(" ", "").replace(":", "").lower():
                ts = e.get("ts")
                self._telemetry(str(e["address"]), raw, float(ts) if isinstance(ts, int | float) else now)

    def _remember_identities(self, entries: Any, s: Any, scan: Any) -> None:
        if not len(s.ts):
            return
        with self._lock:
            for row, key in zip(scan.entry.tolist(), s.key.tolist(), strict=True):
                e = entries[row]
                if isinstance(e, Mapping) and e.get("address"):
                    self._identity[str(e["address"])] = str(key)

    def _telemetry(self, address: str, raw: str, ts: float) -> None:
        try:
            frames = parse_advertisement(raw.replace(" ", "").replace(":", ""))
        except ValueError:
            return
        self._apply_tlm(address, frames, ts)

    def _apply_tlm(self, address: str, frames: Any, ts: float) -> None:
        """As :func:`beacons.fleet_health`: telemetry belongs to the identity last heard from ``address``."""
        with self._lock:
            key = self._identity.get(address)
            for f in frames:
                if isinstance(f, EddystoneTLM) and key is not None:
                    h = self._keys.setdefault(key, _Heard())
                    if h.tlm_ts is None or ts >= h.tlm_ts:
                        h.tlm_ts, h.battery_mv, h.temperature_c = ts, f.battery_mv, f.temperature_c

    def observe_record(self, rec: Any, *, ts: float | None = None) -> None:
        """One advertisement of a capture (``beacons.CaptureRecord``), heard at ``ts`` (default its own)."""
        when = rec.ts if ts is None else ts
        try:
            frames = rec.frames()
        except ValueError:
            return
        keys = [f.key for f in frames if f.key is not None]
        if keys:
            self.observe(np.array(keys, dtype=object), np.array([rec.gateway_id or rec.address] * len(keys), dtype=object),
                         np.full(len(keys), float(rec.rssi)), np.full(len(keys), float(when)))
            with self._lock:
                self._identity[rec.address] = keys[-1]
        self._apply_tlm(rec.address, frames, when)
        if rec.gateway_id:
            self.heartbeat(rec.gateway_id, when)

    def heartbeat(self, gateway_id: str, ts: float) -> None:
        with self._lock:
            self._gateways[gateway_id] = max(self._gateways.get(gateway_id, ts), ts)

    def report(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        registry = self._registry()
        beacons = getattr(registry, "beacons", {}) or {}
        gateways = getattr(registry, "gateways", {}) or {}
        with self._lock:
            rows = []
            for key, place in sorted(beacons.items()):
                h = self._keys.get(key, _Heard())
                problems = beacon_problems(h.last_seen, h.battery_mv, now, silent_after_s=self.silent_after_s,
                                           low_battery_mv=self.low_battery_mv)
                rows.append({"key": key, "fence_id": place.fence_id, "zone": place.zone, "name": place.name,
                             "position": place.position, **_heard(h), "status": ",".join(problems) or "ok"})
            unregistered = [{"key": k, **_heard(h), "status": "unregistered"} for k, h in sorted(self._keys.items())
                             if k not in beacons and (registry is None or registry.advertiser(k) is None)]
            gws = []
            for gid in sorted(set(gateways) | set(self._gateways)):
                last = self._gateways.get(gid)
                place = gateways.get(gid)
                up = last is not None and now - last <= self.silent_after_s
                gws.append({"gateway_id": gid, "fence_id": getattr(place, "fence_id", None),
                            "zone": getattr(place, "zone", None), "registered": place is not None,
                            "last_heard": last, "status": "up" if up else "down"})
        return {"now": now, "silent_after_s": self.silent_after_s, "low_battery_mv": self.low_battery_mv,
                "beacons": rows, "unregistered": unregistered[:500], "gateways": gws}


def _heard(h: _Heard) -> dict[str, Any]:
    return {"last_seen": h.last_seen, "last_rssi": h.last_rssi, "sightings": h.sightings,
            "heard_by": sorted(h.heard_by)[:20], "battery_mv": h.battery_mv, "temperature_c": h.temperature_c}


class DevicePositions:
    """The newest position of each device of the ping batches seen between two feed messages.

    ``observe`` (engine thread) keeps a batch's columns as they are (no loop per ping or per
    device) and does nothing while ``watching()`` says no console watches (asked at each batch,
    so a console that just connected sees the next ping); ``take`` (event loop) reduces what it
    kept to each device's newest ping (the later one of equal times), in the order devices were
    first seen, and starts afresh. At most ``max_devices`` positions go into one message: the
    first devices seen.
    """

    #: kept rows past which ``observe`` reduces them to one per device (bounds memory between two takes)
    COMPACT_ROWS = 200_000

    def __init__(self, watching: Callable[[], bool], max_devices: int = 20_000) -> None:
        self.max_devices = max_devices
        self.watching = watching
        self._lock = threading.Lock()
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._rows = 0

    def observe(self, batch: Any) -> None:
        if not len(batch) or not self.watching():
            return
        part = (np.asarray(batch.device_id, dtype=str), *(np.array(getattr(batch, c), np.float64)
                                                          for c in ("lon", "lat", "accuracy_m", "ts")))
        with self._lock:
            self._parts.append(part)
            self._rows += len(part[0])
            if self._rows > self.COMPACT_ROWS:
                self._parts = [self._newest(self._parts, self.max_devices)]
                self._rows = len(self._parts[0][0])

    def take(self) -> list[list[Any]]:
        with self._lock:
            parts, self._parts, self._rows = self._parts, [], 0
        if not parts:
            return []
        ids, lon, lat, acc, ts = self._newest(parts, self.max_devices)
        return [[d, round(x, 7), round(y, 7), round(a, 1), t]
                for d, x, y, a, t in zip(ids.tolist(), lon.tolist(), lat.tolist(), acc.tolist(), ts.tolist(),
                                         strict=True)]

    @staticmethod
    def _newest(parts: list[tuple[np.ndarray, ...]], limit: int) -> tuple[np.ndarray, ...]:
        """Each device's newest row of ``parts`` (ties of time: the later row), devices in the order they
        were first seen, at most ``limit`` of them."""
        cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
        ids, ts = cols[0], cols[4]
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        order = np.lexsort((np.arange(len(ids)), ts, inverse))
        last = order[np.r_[np.flatnonzero(np.diff(inverse[order])), len(order) - 1]]  # per device, by name
        pick = last[np.argsort(first, kind="stable")][:limit]
        return tuple(c[pick] for c in cols)


__all__ = ["DevicePositions", "LiveFleet"]
