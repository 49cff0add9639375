"""Presence events and offers: the types that cross between presence and campaigns.

This module is a leaf: it imports nothing from the project, so ``campaigns/``
can depend on it (and only on it) without pulling in the engine.

An :class:`Event` says that a device entered, dwelled in or left a *place*.
A place is a fence (a store) or a beacon zone inside one (``fence_id`` plus
``zone``). Times are UTC epoch seconds (float); conversion from ISO strings
happens at the edge, never here.

An :class:`Offer` is what campaign rules hand back for an event: one push for
one device, rendered and ready to deliver (``campaigns`` builds them; the engine
and the service carry them as this type).

A :class:`Device` is what the engine knows of the device when the event is
produced: attributes sent by the SDK, its time zone, and whether it opted out.
Campaign audiences and quiet hours read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

EventKind = Literal["enter", "dwell", "exit"]
Source = Literal["gps", "beacon", "fused"]
ProximityClass = Literal["immediate", "near", "far", "unknown"]

EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
SOURCES: tuple[Source, ...] = get_args(Source)
PROXIMITY_CLASSES: tuple[ProximityClass, ...] = get_args(ProximityClass)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def place_key(fence_id: str, zone: str | None = None) -> str:
    """The string naming a place: ``fence_id`` for a store, ``fence_id#zone`` for a beacon zone."""
    return fence_id if zone is None else f"{fence_id}#{zone}"


@dataclass(frozen=True, slots=True)
class Event:
    """One presence transition of one device at one place.

    ``confidence`` uses geofence's scale for GPS evidence (3 accuracy circle fully
    inside, 2 point inside, 1 within accuracy) and 3/2/1 for beacon proximity
    immediate/near/far; ``dwell_s`` is the time spent at the place so far (0 on
    enter). ``cause`` says what produced the event: ``"ping"``, ``"sighting"``,
    ``"debounce"`` (no inside evidence for the debounce time) or ``"forget"``.
    ``probability`` (0 to 1) is how likely the device really is inside the place at
    ``ts`` given all the evidence so far (``None`` when unknown, e.g. an event made by hand).
    """

    kind: EventKind
    device_id: str
    fence_id: str
    ts: float
    source: Source = "gps"
    zone: str | None = None
    confidence: int = 0
    dwell_s: float = 0.0
    cause: str = "ping"
    proximity: ProximityClass | None = None
    distance_m: float | None = None
    probability: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, not {self.kind!r}")
        if self.source not in SOURCES:
            raise ValueError(f"event source must be one of {SOURCES}, not {self.source!r}")
        if self.proximity is not None and self.proximity not in PROXIMITY_CLASSES:
            raise ValueError(f"proximity must be one of {PROXIMITY_CLASSES}, not {self.proximity!r}")

    @property
    def place(self) -> str:
        return place_key(self.fence_id, self.zone)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of ``events.jsonl`` and of the HTTP responses)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "device_id": self.device_id,
            "place": self.place,
            "fence_id": self.fence_id,
            "zone": self.zone,
            "ts": self.ts,
            "source": self.source,
            "confidence": self.confidence,
            "dwell_s": self.dwell_s,
            "cause": self.cause,
        }
        if self.proximity is not None:
            out["proximity"] = self.proximity
        if self.distance_m is not None:
            out["distance_m"] = self.distance_m
        if self.probability is not None:
            out["probability"] = self.probability
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(
            kind=d["kind"],
            device_id=str(d["device_id"]),
            fence_id=str(d["fence_id"]),
            ts=float(d["ts"]),
            source=d.get("source", "gps"),
            zone=d.get("zone"),
            confidence=int(d.get("confidence", 0)),
            dwell_s=float(d.get("dwell_s", 0.0)),
            cause=str(d.get("cause", "ping")),
            proximity=d.get("proximity"),
            distance_m=None if d.get("distance_m") is None else float(d["distance_m"]),
            probability=None if d.get("probability") is None else float(d["probability"]),
        )


@dataclass(frozen=True, slots=True)
class Device:
    """What is known of a device when its events are decided on.

    ``attrs`` are the SDK's device attributes (segments, app version, ...);
    ``timezone`` is an IANA name or ``None``; ``opted_out`` devices never get offers.
    """

    device_id: str
    attrs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    timezone: str | None = None
    opted_out: bool = False


@dataclass(frozen=True, slots=True)
class Offer:
    """One push offer for one device, rendered and ready to deliver.

    ``deliver_after`` is set when quiet hours hold the offer: it is the epoch
    time the device's quiet window ends.
    """

    offer_id: str
    campaign_id: str
    device_id: str
    fence_id: str
    ts: float
    title: str
    body: str | None = None
    deep_link: str | None = None
    data: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    zone: str | None = None
    trigger: str = "enter"
    priority: int = 0
    deliver_after: float | None = None
    variant: str | None = None
    """The variant of the campaign's experiment this offer renders (``None`` without variants)."""
    expires_at: float | None = None
    """Epoch time after which the offer is dropped instead of delivered (its campaign's ``expires_in``)."""
    delayed: bool = False
    """Sent ``delay`` after its event: cancelled when the device enters the same fence again first."""

    @property
    def place(self) -> str:
        return self.fence_id if self.zone is None else f"{self.fence_id}#{self.zone}"

    @property
    def held(self) -> bool:
        return self.deliver_after is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of ``offers.jsonl``, webhook bodies and HTTP responses)."""
        return {
            "offer_id": self.offer_id,
            "campaign_id": self.campaign_id,
            "device_id": self.device_id,
            "place": self.place,
            "fence_id": self.fence_id,
            "zone": self.zone,
            "ts": self.ts,
            "trigger": self.trigger,
            "priority": self.priority,
            "title": self.title,
            "body": self.body,
            "deep_link": self.deep_link,
            "data": dict(self.data),
            "deliver_after": self.deliver_after,
            **({"variant": self.variant} if self.variant is not None else {}),
            **({"expires_at": self.expires_at} if self.expires_at is not None else {}),
            **({"delayed": True} if self.delayed else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Offer:
        return cls(
            offer_id=str(d["offer_id"]),
            campaign_id=str(d["campaign_id"]),
            device_id=str(d["device_id"]),
            fence_id=str(d["fence_id"]),
            ts=float(d["ts"]),
            title=str(d["title"]),
            body=d.get("body"),
            deep_link=d.get("deep_link"),
            data=MappingProxyType(dict(d.get("data") or {})),
            zone=d.get("zone"),
            trigger=str(d.get("trigger", "enter")),
            priority=int(d.get("priority", 0)),
            deliver_after=None if d.get("deliver_after") is None else float(d["deliver_after"]),
            variant=None if d.get("variant") is None else str(d["variant"]),
            expires_at=None if d.get("expires_at") is None else float(d["expires_at"]),
            delayed=bool(d.get("delayed", False)),
        )


__all__ = [
    "EVENT_KINDS",
    "PROXIMITY_CLASSES",
    "SOURCES",
    "Device",
    "Event",
    "EventKind",
    "Offer",
    "ProximityClass",
    "Source",
    "place_key",
]
