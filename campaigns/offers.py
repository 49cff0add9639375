"""Offers: what a campaign issues to a device (:class:`proximity.events.Offer`, the type the engine
hands back), and its stable id."""

from __future__ import annotations

import hashlib

from proximity.events import Offer


def offer_id(campaign_id: str, device_id: str, place: str, kind: str, ts: float, dwell_s: float) -> str:
    """A deterministic id: the same event deciding the same campaign gives the same id, so a retried
    decision is recognised by the limiter and the outbox, and the receiver can dedup on it."""
    digest = hashlib.sha256(f"{campaign_id}|{device_id}|{place}|{kind}|{ts!r}|{dwell_s!r}".encode()).hexdigest()
    return f"of_{digest[:24]}"


def cancel_key(device_id: str, fence_id: str) -> str:
    """What cancels a delayed offer (``Offer.delayed``): its device entering its fence again."""
    return f"{device_id}|{fence_id}"


__all__ = ["Offer", "cancel_key", "offer_id"]
