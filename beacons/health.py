"""Fleet health from what gateways hear: last seen, battery and temperature, and what needs a visit.

Eddystone telemetry (TLM) frames carry no beacon identity: a TLM frame belongs
to the identity frame (UID, iBeacon, AltBeacon) last heard from the same
Bluetooth address in the capture. A registered beacon is

- ``silent`` when it was never heard, or not for longer than ``silent_after_s``
  before ``now`` (default ``now``: the newest timestamp of the capture, so a
  report on an old capture is reproducible);
- ``low_battery`` when its newest TLM reports less than ``low_battery_mv``;
- ``ok`` otherwise.

Keys heard that are neither registered beacons nor known advertisers are listed
as ``unregistered`` (a beacon missing from the registry, or a neighbour's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from beacons.capture import CaptureRecord
from beacons.frames import EddystoneTLM
from beacons.registry import BeaconRegistry


@dataclass
class BeaconHealth:
    key: str
    fence_id: str | None
    zone: str | None
    last_seen: float | None = None
    last_rssi: float | None = None
    sightings: int = 0
    heard_by: set[str] = field(default_factory=set)
    battery_mv: int | None = None
    temperature_c: float | None = None
    tlm_ts: float | None = None
    adv_count: int | None = None
    uptime_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if not self.problems else ",".join(self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "fence_id": self.fence_id, "zone": self.zone, "status": self.status,
            "last_seen": self.last_seen, "last_rssi": self.last_rssi, "sightings": self.sightings,
            "heard_by": sorted(self.heard_by), "battery_mv": self.battery_mv,
            "temperature_c": self.temperature_c, "adv_count": self.adv_count, "uptime_s": self.uptime_s,
        }


@dataclass
class HealthReport:
    now: float | None
    silent_after_s: float
    low_battery_mv: int
    beacons: list[BeaconHealth]
    unregistered: list[BeaconHealth]

    @property
    def problems(self) -> list[BeaconHealth]:
        return [b for b in self.beacons if b.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "silent_after_s": self.silent_after_s, "low_battery_mv": self.low_battery_mv,
                "beacons": [b.to_dict() for b in self.beacons],
                "unregistered": [b.to_dict() for b in self.unregistered]}


#: A beacon not heard for longer than this (seconds) is ``silent`` (``proximity beacons health`` and the
#: console's fleet page).
SILENT_AFTER_S = 600.0
#: A beacon whose newest TLM reports less than this (millivolts) has a ``low_battery``.
LOW_BATTERY_MV = 2500


def beacon_problems(last_seen: float | None, battery_mv: int | None, now: float | None, *,
                    silent_after_s: float = SILENT_AFTER_S, low_battery_mv: int = LOW_BATTERY_MV) -> list[str]:
    """What is wrong with a beacon heard last at ``last_seen`` with this battery: ``silent``,
    ``low_battery`` (empty: ok). The one rule of the CLI report and of the live fleet page."""
    problems = []
    if last_seen is None or (now is not None and now - last_seen > silent_after_s):
        problems.append("silent")
    if battery_mv is not None and battery_mv < low_battery_mv:
        problems.append("low_battery")
    return problems


def fleet_health(registry: BeaconRegistry, records: Iterable[CaptureRecord], *, now: float | None = None,
                 silent_after_s: float = SILENT_AFTER_S, low_battery_mv: int = LOW_BATTERY_MV) -> HealthReport:
    """Per registered beacon: when it was last heard in ``records``, its TLM battery and temperature, and
    whether it needs attention (silent for ``silent_after_s``, battery under ``low_battery_mv``)."""
    records = sorted(records, key=lambda r: r.ts)
    seen: dict[str, BeaconHealth] = {}
    identity_of: dict[str, str] = {}
    pending_tlm: dict[str, tuple[float, EddystoneTLM]] = {}

    def entry(key: str) -> BeaconHealth:
        h = seen.get(key)
        if h is None:
            place = registry.beacon(key)
            h = seen[key] = BeaconHealth(key, None if place is None else place.fence_id,
                                         None if place is None else place.zone)
        return h

    def apply_tlm(h: BeaconHealth, ts: float, tlm: EddystoneTLM) -> None:
        if h.tlm_ts is None or ts >= h.tlm_ts:
            h.tlm_ts, h.battery_mv, h.temperature_c = ts, tlm.battery_mv, tlm.temperature_c
            h.adv_count, h.uptime_s = tlm.adv_count, tlm.uptime_s

    for rec in records:
        for frame in rec.frames():
            if isinstance(frame, EddystoneTLM):
                key = identity_of.get(rec.address)
                if key is None:
                    pending_tlm[rec.address] = (rec.ts, frame)  # the identity may come later
                else:
                    apply_tlm(entry(key), rec.ts, frame)
                continue
            key = frame.key
            if key is None:
                continue
            h = entry(key)
            h.sightings += 1
            if h.last_seen is None or rec.ts >= h.last_seen:
                h.last_seen, h.last_rssi = rec.ts, rec.rssi
            if rec.gateway_id:
                h.heard_by.add(rec.gateway_id)
            if rec.address:
                identity_of[rec.address] = key
                if rec.address in pending_tlm:
                    apply_tlm(h, *pending_tlm.pop(rec.address))
    if now is None and records:
        now = records[-1].ts
    report: list[BeaconHealth] = []
    for key, place in sorted(registry.beacons.items()):
        h = seen.get(key) or BeaconHealth(key, place.fence_id, place.zone)
        h.problems.extend(beacon_problems(h.last_seen, h.battery_mv, now, silent_after_s=silent_after_s,
                                          low_battery_mv=low_battery_mv))
        report.append(h)
    unregistered = [h for k, h in sorted(seen.items())
                    if registry.beacon(k) is None and registry.advertiser(k) is None]
    return HealthReport(now, silent_after_s, low_battery_mv, report, unregistered)


__all__ = ["LOW_BATTERY_MV", "SILENT_AFTER_S", "BeaconHealth", "HealthReport", "beacon_problems", "fleet_health"]
