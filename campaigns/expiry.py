"""Keys that expire, for the memory adapters: a heap of ``(expiry, key)`` beside a map of each key's current
expiry, so what is due comes off the top instead of from a scan of every key (as Redis expires its keys)."""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def extend(heap: list[tuple[float, K]], current: dict[K, float], key: K, expiry: float) -> None:
    """``key`` lives at least until ``expiry`` (a later expiry than its current one moves it; never shortened)."""
    if expiry > current.get(key, float("-inf")):
        current[key] = expiry
        heapq.heappush(heap, (expiry, key))


def pop_expired(heap: list[tuple[float, K]], current: dict[K, float], now: float) -> list[K]:
    """The keys whose expiry is ``now`` or earlier, taken out of ``current`` (the heap's entries of a key whose
    expiry has moved on since are dropped as they come up)."""
    out: list[K] = []
    while heap and heap[0][0] <= now:
        at, key = heapq.heappop(heap)
        if current.get(key) == at:
            del current[key]
            out.append(key)
    return out


__all__ = ["extend", "pop_expired"]
