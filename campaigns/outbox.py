"""The outbox: offers that passed their caps, kept until a dispatcher has delivered them.

An offer is written here before anyone tries to deliver it. Delivery workers
``claim`` entries, deliver them and ``ack``. A claim is a *lease*: it belongs to
one consumer and carries a fencing token (``consumer``, ``deliveries``: the
claim's number, which every new claim of the entry increases). A worker renews
its leases while it delivers (``renew``); a lease neither renewed nor acked
within ``claim_idle_s`` (its worker died, or lost Redis) is claimed again by
another worker with a higher token, so every offer is delivered at least once
while the outbox survives. ``renew`` answers ``False`` for a lease that was taken
over or whose offer was delivered meanwhile: the old holder must not deliver it.

``ack`` writes the offer's *delivered* mark (and releases the claim) in one
atomic step; it returns ``True`` only for the first ack of an offer id. ``claim``
never hands out an offer that carries the mark (such an entry is dropped in the
same atomic step), so the only way one offer reaches a sink twice is a delivery
whose ack was lost (Redis gone between the send and the ack, or the worker
killed there): the sinks deduplicate by offer id for that case (see
:mod:`campaigns.dispatch`). Offers held by quiet hours wait until their
``deliver_after`` time. Entries that fail too often go to dead letters.

An offer past its ``expires_at`` when it is due (held by quiet hours, delayed, or queued) is
dropped instead of handed out, and counted (``drop_counts()["expired"]``). A delayed offer
(``Offer.delayed``) not yet due is dropped by ``cancel(cancel_key(device, fence))`` when its device
enters its fence again (``drop_counts()["cancelled"]``).

:class:`MemoryOutbox` is the embedded default; :class:`campaigns.redis_outbox.RedisOutbox`
keeps the same behaviour on a Redis stream with a consumer group.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from campaigns.offers import Offer, cancel_key


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One claimed offer: ``entry_id`` names the entry; ``consumer`` and ``deliveries`` (how many times the
    entry was claimed, this claim included) are the claim's fencing token; ``shard``: where it lives."""

    entry_id: str
    offer: Offer
    deliveries: int = 1
    consumer: str = ""
    shard: int = 0


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

    def renew(self, entries: Sequence[OutboxEntry]) -> list[bool]:
        """Extend the leases of claims still held with the same token; ``False`` for each lost one."""
        ...

    def ack(self, entry: OutboxEntry) -> bool:
        """The offer was delivered: ``True`` the first time its id is acked, ``False`` after."""
        ...

    def ack_many(self, entries: Sequence[OutboxEntry]) -> list[bool | Exception]:
        """:meth:`ack` of several entries at once (one round trip for a shared store): each entry's answer in
        its place, or the exception its ack met; a store that cannot be reached at all raises."""
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

    def cancel(self, key: str, now: float) -> int:
        """Drop the delayed offers of ``key`` (:func:`campaigns.offers.cancel_key`) not due by ``now``."""
        ...

    def drop_counts(self) -> dict[str, int]:
        """Offers dropped instead of delivered: ``expired`` and ``cancelled``."""
        ...


class MemoryOutbox:
    """The outbox in this process's memory (the embedded default).

    As the Redis outbox does, it remembers an offer id for ``dedup_ttl_s`` after its ``put`` (a ``put`` of
    the same id within that time is a no-op) and after its delivery (:meth:`is_delivered`); a long-running
    service does not keep every id it ever saw.
    """

    def __init__(self, *, claim_idle_s: float = 30.0, dedup_ttl_s: float = 7 * 86400.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.claim_idle_s = claim_idle_s
        self.dedup_ttl_s = float(dedup_ttl_s)
        self.clock = clock
        self._lock = threading.Lock()
        # offer id -> when it was put / delivered, oldest first (the clock's order), so the expired ones are
        # taken off the front
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._held: list[tuple[float, int, Offer]] = []
        self._ready: OrderedDict[str, Offer] = OrderedDict()
        self._claimed: dict[str, tuple[str, float, Offer, int]] = {}
        self._delivered: OrderedDict[str, float] = OrderedDict()
        self._dead: list[DeadLetter] = []
        self._seq = 0
        self._drops = {"expired": 0, "cancelled": 0}
        self._delayed: dict[str, dict[int, float]] = {}  # cancel key -> {seq: due} of held delayed offers
        self._cancelled: set[int] = set()  # held entries cancelled (skipped when due)

    def put(self, offer: Offer) -> bool:
        now = self.clock()
        with self._lock:
            if offer.offer_id in self._ids:  # then the expired ids are forgotten, as the Redis script does
                return False
            self._ids[offer.offer_id] = now
            _forget(self._ids, now - self.dedup_ttl_s)
            self._seq += 1
            if offer.deliver_after is not None:
                heapq.heappush(self._held, (offer.deliver_after, self._seq, offer))
                if offer.delayed:
                    self._delayed.setdefault(cancel_key(offer.device_id, offer.fence_id), {})[self._seq] = offer.deliver_after
            else:
                self._ready[f"{self._seq}"] = offer
            return True

    def claim(self, consumer: str, count: int = 100, *, now: float | None = None) -> list[OutboxEntry]:
        t = self.clock() if now is None else now
        with self._lock:
            while self._held and self._held[0][0] <= t:
                _, seq, offer = heapq.heappop(self._held)
                if offer.delayed:
                    mine = self._delayed.get(cancel_key(offer.device_id, offer.fence_id), {})
                    mine.pop(seq, None)
                    if not mine:
                        self._delayed.pop(cancel_key(offer.device_id, offer.fence_id), None)
                if seq in self._cancelled:
                    self._cancelled.discard(seq)
                    continue
                self._ready[f"{seq}"] = offer
            out: list[OutboxEntry] = []
            for entry_id, (owner, since, offer, n) in list(self._claimed.items()):
                if len(out) >= count:
                    break
                if owner != consumer and t - since >= self.claim_idle_s:
                    if offer.offer_id in self._delivered:  # delivered through another entry: drop it
                        del self._claimed[entry_id]
                        continue
                    self._claimed[entry_id] = (consumer, t, offer, n + 1)
                    out.append(OutboxEntry(entry_id, offer, n + 1, consumer))
            while self._ready and len(out) < count:
                entry_id, offer = self._ready.popitem(last=False)
                if offer.expires_at is not None and offer.expires_at <= t:
                    self._drops["expired"] += 1
                    continue
                if offer.offer_id in self._delivered:  # delivered within dedup_ttl_s (put again after its put
                    continue  # was forgotten): not sent twice, as the Redis claim script does
                self._claimed[entry_id] = (consumer, t, offer, 1)
                out.append(OutboxEntry(entry_id, offer, 1, consumer))
            return out

    def renew(self, entries: Sequence[OutboxEntry]) -> list[bool]:
        t = self.clock()
        out = []
        with self._lock:
            for e in entries:
                held = self._claimed.get(e.entry_id)
                ok = held is not None and held[0] == e.consumer and held[3] == e.deliveries
                if ok and held is not None:
                    self._claimed[e.entry_id] = (held[0], t, held[2], held[3])
                out.append(ok)
        return out

    def ack(self, entry: OutboxEntry) -> bool:
        now = self.clock()
        with self._lock:
            self._claimed.pop(entry.entry_id, None)
            first = entry.offer.offer_id not in self._delivered
            if first:
                self._delivered[entry.offer.offer_id] = now
            _forget(self._delivered, now - self.dedup_ttl_s)
            return first

    def ack_many(self, entries: Sequence[OutboxEntry]) -> list[bool | Exception]:
        return [self.ack(e) for e in entries]

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
            return len(self._held) - len(self._cancelled) + len(self._ready) + len(self._claimed)

    def cancel(self, key: str, now: float) -> int:
        with self._lock:
            mine = self._delayed.get(key) or {}
            gone = [seq for seq, due in mine.items() if due > now]
            for seq in gone:
                del mine[seq]
                self._cancelled.add(seq)
            if not mine:
                self._delayed.pop(key, None)
            self._drops["cancelled"] += len(gone)
            return len(gone)

    def drop_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._drops)


def _forget(seen: OrderedDict[str, float], before: float) -> None:
    """Drop the ids of ``seen`` (oldest first) marked before ``before``; stops at the first newer one (a clock
    stepping back keeps a few a little longer, never drops one early)."""
    while seen:
        _, at = next(iter(seen.items()))
        if at >= before:
            return
        seen.popitem(last=False)
