"""A batch's result, rendered once: the same event and offer dicts make the HTTP response
(``devices``: per device, its events and offers; ``stats``) and the live feed's messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proximity.engine import BatchResult
from proximity.events import Event, Offer


@dataclass(frozen=True)
class Rendered:
    """The JSON-ready form of a :class:`proximity.engine.BatchResult` (each event and offer rendered once)."""

    result: BatchResult
    events: list[dict[str, Any]]
    offers: list[dict[str, Any]]

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.result.stats)

    def devices(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """``{device_id: {"events": [...], "offers": [...]}}``, devices in order of their first event."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for e, d in zip(self.result.events, self.events, strict=True):
            out.setdefault(e.device_id, {"events": [], "offers": []})["events"].append(d)
        for o, d in zip(self.result.offers, self.offers, strict=True):
            out.setdefault(o.device_id, {"events": [], "offers": []})["offers"].append(d)
        return out

    def feed(self) -> list[dict[str, Any]]:
        """The live feed's messages: one per event (offers reach the feed from the outbox, see
        :func:`offer_message`)."""
        return [{"type": "event", **d} for d in self.events]


def render(result: BatchResult) -> Rendered:
    return Rendered(result, [e.to_dict() for e in result.events], [o.to_dict() for o in result.offers])


def event_message(event: Event) -> dict[str, Any]:
    return {"type": "event", **event.to_dict()}


def offer_message(offer: Offer | Mapping[str, Any]) -> dict[str, Any]:
    """The live feed's message for an offer taken out of the outbox."""
    return {"type": "offer", **(offer.to_dict() if isinstance(offer, Offer) else dict(offer))}


__all__ = ["Rendered", "event_message", "offer_message", "render"]
