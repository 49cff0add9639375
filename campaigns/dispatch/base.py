"""The dispatcher interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from campaigns.offers import Offer


@runtime_checkable
class Dispatcher(Protocol):
    """Delivers one offer: returns the number of attempts it took, or raises
    :class:`campaigns.errors.DeliveryError` when it gives up (``retryable``
    says whether another try later could succeed)."""

    name: str

    async def deliver(self, offer: Offer) -> int: ...

    async def aclose(self) -> None: ...


@dataclass
class DeliveryReport:
    """What one pass of a :class:`~campaigns.dispatch.DeliveryWorker` did."""

    claimed: int = 0
    delivered: int = 0
    already_delivered: int = 0
    dead: int = 0
    attempts: int = 0
    duplicate_acks: int = 0
    errors: int = 0
    ack_failures: int = 0
    lost_leases: int = 0

    def add(self, other: DeliveryReport) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


class Fanout:
    """Several dispatchers as one: an offer is delivered when every target has it.

    A target that already took the offer is not sent it again when another
    target's failure makes the whole delivery retry (the targets' own
    idempotency keys cover a crash in between).
    """

    name = "fanout"

    def __init__(self, targets: Sequence[Dispatcher]) -> None:
        self.targets = list(targets)
        self._done: dict[str, set[int]] = {}

    async def deliver(self, offer: Offer) -> int:
        done = self._done.setdefault(offer.offer_id, set())
        attempts = 0
        for i, target in enumerate(self.targets):
            if i in done:
                continue
            attempts += await target.deliver(offer)
            done.add(i)
        self._done.pop(offer.offer_id, None)
        return attempts

    async def aclose(self) -> None:
        for target in self.targets:
            await target.aclose()
