"""The outbox: offers that passed their caps, kept until a dispatcher has delivered them.

An offer is written here before anyone tries to deliver it. Delivery workers
``claim`` entries (each claim belongs to one consumer), deliver them and
``ack``; an entry claimed by a worker that died (not acked within
``claim_idle_s``) is claimed again by another worker, so every offer is
delivered at least once while the outbox survives. ``ack`` is the at-most-once
guard: it returns ``True`` only for the first ack of an offer id (the
dispatcher's own accounting), and offers already acked are skipped when a
stale entry turns up again. Offers held by quiet hours wait until their
``deliver_after`` time. Entries that fail too often go to dead letters.

:class:`MemoryOutbox` is the embedded default; :class:`campaigns.redis_outbox.RedisOutbox`
keeps the same behaviour on a Redis stream with a consumer group.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from campaigns.offers import Offer


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One claimed offer: ``entry_id`` names the claim, ``deliveries`` counts how often it was claimed."""

    entry_id: str
    offer: Offer
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    offer: Offer
    reason: str
    attempts: int


@runtime_checkable
class Outbox(Protocol):
    def put(self, offer: Offer) -> bool:
        """Store an offer durably; ``False`` when its id is already in the outbox (idempotent)."""
        ...

    def claim(self, consumer: str, count: int = 100, *, now: float | None = None) -> list[OutboxEntry]:
        """Entries for ``consumer`` to deliver: new due ones, and ones idle too long at another consumer."""
        ...

    def ack(self, entry: OutboxEntry) -> bool:
        """The offer was delivered: ``True`` the first time its id is acked, ``False`` after."""
        ...

    def dead(self, entry: OutboxEntry, reason: str, attempts: int) -> None:
        """Give up on an entry: move it to dead letters."""
        ...

    def dead_letters(self) -> list[DeadLetter]:
        """Offers given up on, with the reason and the attempts made."""
        ...

    def is_delivered(self, offer_id: str) -> bool: ...

    def pending(self) -> int:
        """Offers not yet acked or dead (held ones included)."""
        ...


class MemoryOutbox:
    """The outbox in this process's memory (the embedded default)."""

    def __init__(self, *, claim_idle_s: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.claim_idle_s = claim_idle_s
        self.clock = clock
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._held: list[tuple[float, int, Offer]] = []
        self._ready: OrderedDict[str, Offer] = OrderedDict()
        self._claimed: dict[str, tuple[str, float, Offer, int]] = {}
        self._delivered: set[str] = set()
        self._dead: list[DeadLetter] = []
        self._seq = 0

    def put(self, offer: Offer) -> bool:
        with self._lock:
            if offer.offer_id in self._ids:
                return False
            self._ids.add(offer.offer_id)
            self._seq += 1
            if offer.deliver_after is not None:
                heapq.heappush(self._held, (offer.deliver_after, self._seq, offer))
            else:
                self._ready[f"{self._seq}"] = offer
            return True

    def claim(self, consumer: str, count: int = 100, *, now: float | None = None) -> list[OutboxEntry]:
        t = self.clock() if now is None else now
        with self._lock:
            while self._held and self._held[0][0] <= t:
                _, seq, offer = heapq.heappop(self._held)
                self._ready[f"{seq}"] = offer
            out: list[OutboxEntry] = []
            for entry_id, (owner, since, offer, n) in list(self._claimed.items()):
                if len(out) >= count:
                    break
                if owner != consumer and t - since >= self.claim_idle_s:
                    self._claimed[entry_id] = (consumer, t, offer, n + 1)
                    out.append(OutboxEntry(entry_id, offer, n + 1))
            while self._ready and len(out) < count:
                entry_id, offer = self._ready.popitem(last=False)
                self._claimed[entry_id] = (consumer, t, offer, 1)
                out.append(OutboxEntry(entry_id, offer, 1))
            return out

    def ack(self, entry: OutboxEntry) -> bool:
        with self._lock:
            self._claimed.pop(entry.entry_id, None)
            if entry.offer.offer_id in self._delivered:
                return False
            self._delivered.add(entry.offer.offer_id)
            return True

    def dead(self, entry: OutboxEntry, reason: str, attempts: int) -> None:
        with self._lock:
            self._claimed.pop(entry.entry_id, None)
            self._dead.append(DeadLetter(entry.offer, reason, attempts))

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._dead)

    def is_delivered(self, offer_id: str) -> bool:
        with self._lock:
            return offer_id in self._delivered

    def pending(self) -> int:
        with self._lock:
            return len(self._held) + len(self._ready) + len(self._claimed)
