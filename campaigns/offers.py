"""Offers: what a campaign issues to a device, and its stable id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def offer_id(campaign_id: str, device_id: str, place: str, kind: str, ts: float, dwell_s: float) -> str:
    """A deterministic id: the same event deciding the same campaign gives the same id, so a retried
    decision is recognised by the limiter and the outbox, and the receiver can dedup on it."""
    digest = hashlib.sha256(f"{campaign_id}|{device_id}|{place}|{kind}|{ts!r}|{dwell_s!r}".encode()).hexdigest()
    return f"of_{digest[:24]}"


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


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
    data: Mapping[str, Any] = field(default_factory=_empty)
    zone: str | None = None
    trigger: str = "enter"
    priority: int = 0
    deliver_after: float | None = None
    variant: str | None = None
    """The variant of the campaign's experiment this offer renders (``None`` without variants)."""

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
        )
