"""Frequency caps: one interface, checked and consumed atomically per offer.

A cap is counted in one *window*: the issue times of the offers it allowed are
kept per key (a sorted set in Redis, a sorted list here), and a check counts
those at or after the window's start:

- rolling window: start = ``now - window``; exact to the second, no buckets;
- calendar window: start = local midnight of the first day of the window in a
  given zone (``1d`` = today, ``7d`` = today and the six days before).

:meth:`Limiter.acquire` takes every :class:`CapCheck` that applies to one offer
and either consumes all of them (the offer's id is recorded under each key) or
none, reporting the first cap that is full. Acquiring again with the same token
is idempotent (a retried decision does not count twice).

:class:`MemoryLimiter` is the embedded default (a lock makes it atomic across
threads); :class:`campaigns.redis_limiter.RedisLimiter` shares the caps between
processes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from campaigns.expiry import extend, pop_expired
from campaigns.model import Cap

Scope = Literal["device", "campaign"]
UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class CapCheck:
    """One cap to check for one offer.

    ``scope`` says whose counter it is (``scope_id``: a device id, or a campaign
    id for budgets); ``name`` tells caps of the same owner apart. ``since`` is
    the window start (epoch s, ``-inf`` for a total), ``limit`` the most offers
    the window allows, ``ttl_s`` how long the entries must be kept (0: forever).
    """

    label: str
    scope: Scope
    scope_id: str
    name: str
    limit: int
    since: float
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Grant:
    """The result of :meth:`Limiter.acquire`: ``ok`` or the ``label`` of the full cap (and its usage)."""

    ok: bool
    blocked_by: str | None = None
    used: int = 0
    duplicate: bool = False


@runtime_checkable
class Limiter(Protocol):
    def acquire(self, token: str, checks: Sequence[CapCheck], now: float) -> Grant:
        """Consume every check for ``token`` at ``now``, or none of them."""
        ...

    def release(self, token: str, checks: Sequence[CapCheck]) -> None:
        """Give back what ``token`` consumed under ``checks`` (a refund)."""
        ...

    def usage(self, check: CapCheck, now: float) -> int:
        """How many offers the check's window holds at ``now``."""
        ...

    def forget(self, device_id: str) -> None:
        """Erase a device's counters (privacy: ``DELETE /v1/devices/{id}``)."""
        ...


def window_start(cap: Cap, now: float, zone: ZoneInfo | None) -> float:
    """The start of ``cap``'s window at ``now`` (calendar windows in ``zone``, UTC when ``None``)."""
    if cap.kind == "rolling":
        return now - cap.window_s
    days = max(1, round(cap.window_s / 86400.0))
    local = dt.datetime.fromtimestamp(now, zone or UTC)
    first = local.date() - dt.timedelta(days=days - 1)
    return dt.datetime(first.year, first.month, first.day, tzinfo=zone or UTC).timestamp()


def trim_before(check: CapCheck) -> float:
    """Entries older than this can go: one more ``ttl_s`` before the window start, so that an event
    that arrives late (its window starts earlier) still counts what its window holds even after a
    newer check went by. ``-inf`` (keep everything) for totals."""
    if math.isinf(check.since) or check.ttl_s <= 0:
        return -math.inf
    return check.since - check.ttl_s


def day_start(now: float, zone: ZoneInfo | None) -> float:
    local = dt.datetime.fromtimestamp(now, zone or UTC)
    return dt.datetime(local.year, local.month, local.day, tzinfo=zone or UTC).timestamp()


def ttl_for(cap: Cap) -> float:
    """How long a cap's entries must live: the window, plus a day (and DST) for calendar windows."""
    return cap.window_s + (90000.0 if cap.kind == "calendar" else 0.0)


class MemoryLimiter:
    """Caps in this process's memory: exact windows, atomic under a lock.

    As a Redis key expires ``ttl_s`` after its last offer, a cap's entries are forgotten (off a heap, by the
    times of the offers asked since) once no check could count them any more: ``2 * ttl_s`` and a day after
    its last offer (its window, the margin for late events, a calendar day), so the caps of devices that never
    come back do not pile up in a long-running process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per key, its offers' times (sorted) and its tokens' times. A device's key holds a few (its cap's
        # limit): a tuple of floats and a dict of str to float, which the garbage collector stops tracking (lists
        # it would track: with a device's two caps, four lists an offer, and a full collection of a worker with
        # 100,000 devices' caps walked 400,000 of them, 219-265 ms on a 2-core VM; see proximity.service.collector).
        # A campaign's key (a budget: up to its limit of offers, a few keys) keeps a list, changed in place.
        self._times: dict[tuple[str, str, str], list[float] | tuple[float, ...]] = {}
        self._tokens: dict[tuple[str, str, str], dict[str, float]] = {}
        # the tokens of a campaign's key (a budget: many tokens, and a rolling one trims at nearly every offer)
        # also as a heap of (time, token), so a trim takes the expired ones off the top instead of scanning
        # them all; a device's key holds a few tokens (its cap's limit), scanned
        self._ages: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self._expiry: dict[tuple[str, str, str], float] = {}  # key -> when none of its entries can count
        self._expiries: list[tuple[float, tuple[str, str, str]]] = []  # heap of (expiry, key); stale ones skipped

    @staticmethod
    def _key(c: CapCheck) -> tuple[str, str, str]:
        return (c.scope, c.scope_id, c.name)

    @staticmethod
    def _small(key: tuple[str, str, str]) -> bool:
        """Whether ``key`` is a device's: its times kept as a tuple, its tokens scanned (no heap); else a
        campaign's: a list changed in place and a heap of its tokens."""
        return key[0] == "device"

    def _trim(self, key: tuple[str, str, str], before: float) -> None:
        times = self._times.get(key)
        if not times or math.isinf(before) or times[0] >= before:
            return
        cut = bisect.bisect_left(times, before)
        tokens = self._tokens[key]
        if self._small(key):
            for token in [t for t, at in tokens.items() if at < before]:
                del tokens[token]
            self._times[key] = times[cut:]
        else:
            pop_expired(self._ages[key], tokens, before, inclusive=False)  # (a released token: left)
            del times[:cut]  # type: ignore[union-attr]

    def _expire(self, now: float) -> None:
        """Forget the keys whose entries no check at ``now`` or later can count (under the lock)."""
        for key in pop_expired(self._expiries, self._expiry, now):
            for table in (self._times, self._tokens, self._ages):
                table.pop(key, None)

    def acquire(self, token: str, checks: Sequence[CapCheck], now: float) -> Grant:
        with self._lock:
            self._expire(now)
            if checks and token in self._tokens.get(self._key(checks[0]), {}):
                return Grant(True, duplicate=True)
            for c in checks:
                key = self._key(c)
                self._trim(key, trim_before(c))
                used = self._count(key, c.since)
                if used >= c.limit:
                    return Grant(False, blocked_by=c.label, used=used)
            for c in checks:
                key = self._key(c)
                if self._small(key):
                    times = self._times.get(key, ())
                    at = bisect.bisect_right(times, now)
                    self._times[key] = (*times[:at], now, *times[at:])
                else:
                    bisect.insort(self._times.setdefault(key, []), now)  # type: ignore[arg-type]
                    heapq.heappush(self._ages.setdefault(key, []), (now, token))
                self._tokens.setdefault(key, {})[token] = now
                if c.ttl_s > 0:
                    extend(self._expiries, self._expiry, key, now + 2 * c.ttl_s + 86400.0 + 3600.0)
            return Grant(True)

    def release(self, token: str, checks: Sequence[CapCheck]) -> None:
        with self._lock:
            for c in checks:
                key = self._key(c)
                ts = self._tokens.get(key, {}).pop(token, None)
                if ts is not None:
                    times = self._times[key]
                    at = bisect.bisect_left(times, ts)
                    if self._small(key):
                        self._times[key] = (*times[:at], *times[at + 1 :])
                    else:
                        times.pop(at)  # type: ignore[union-attr]

    def usage(self, check: CapCheck, now: float) -> int:
        with self._lock:
            return self._count(self._key(check), check.since)

    def _count(self, key: tuple[str, str, str], since: float) -> int:
        times = self._times.get(key)
        if not times:
            return 0
        return len(times) - bisect.bisect_left(times, since)

    def forget(self, device_id: str) -> None:
        """Erase a device's counters (privacy: ``DELETE /v1/devices/{id}``)."""
        with self._lock:
            for key in [k for k in self._times if k[0] == "device" and k[1] == device_id]:
                del self._times[key]
                del self._tokens[key]
                self._ages.pop(key, None)
                self._expiry.pop(key, None)
