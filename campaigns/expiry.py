"""Keys that expire, for the memory adapters: a heap of ``(value, key)`` beside a map of each key's current
value (its expiry, or the time it was seen), so what is due comes off the top instead of from a scan of every
key (as Redis expires its keys and trims its sorted sets by score)."""

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


def pop_expired(heap: list[tuple[float, K]], current: dict[K, float], bound: float, *,
                inclusive: bool = True) -> list[K]:
    """The keys whose value in ``current`` is ``bound`` or less (``inclusive=False``: less), taken out of
    ``current`` (the heap's entries of a key whose value has changed since, or that left ``current``, are
    dropped as they come up)."""
    out: list[K] = []
    while heap and (heap[0][0] <= bound if inclusive else heap[0][0] < bound):
        at, key = heapq.heappop(heap)
        if current.get(key) == at:
            del current[key]
            out.append(key)
    return out


__all__ = ["extend", "pop_expired"]
