"""In-process subscribers: callbacks and queues that see every delivered offer (the live feed)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from campaigns.offers import Offer

log = logging.getLogger(__name__)

Callback = Callable[[Offer], Any] | Callable[[Offer], Awaitable[Any]]


class Subscribers:
    """Hands each offer to every subscriber.

    A callback (plain or ``async``) that raises is logged and counted in
    :attr:`errors`; it never stops the others, and the offer still counts as
    delivered (subscribers are a feed, not a guaranteed target). A queue
    subscription (:meth:`queue`) drops its oldest item when full, so a slow
    consumer never blocks delivery.

    Each offer id is handed out once: an offer delivered again (its outbox ack
    was lost and the entry came back) is skipped and counted in
    :attr:`duplicates`. The last ``remember`` ids are kept. This holds per
    process; a feed that fans out across worker processes deduplicates the same
    way on the offer id every offer message carries.
    """

    name = "subscribers"

    def __init__(self, *, remember: int = 100_000) -> None:
        self._callbacks: list[Callback] = []
        self.errors = 0
        self.dropped = 0
        self.duplicates = 0
        self.remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Add a callback; returns a function that removes it."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def queue(self, maxsize: int = 1000) -> tuple[asyncio.Queue[Offer], Callable[[], None]]:
        """An ``asyncio.Queue`` fed with every offer, and its unsubscribe function."""
        q: asyncio.Queue[Offer] = asyncio.Queue(maxsize=maxsize)

        def put(offer: Offer) -> None:
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(offer)

        return q, self.subscribe(put)

    def __len__(self) -> int:
        return len(self._callbacks)

    async def deliver(self, offer: Offer) -> int:
        if offer.offer_id in self._seen:
            self.duplicates += 1
            return 1
        self._seen[offer.offer_id] = None
        if len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        for callback in list(self._callbacks):
            try:
                result = callback(offer)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.errors += 1
                log.exception("offer subscriber %r failed", callback)
        return 1

    async def aclose(self) -> None:
        self._callbacks.clear()
