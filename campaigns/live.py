"""Conversions as they happen: what a service keeps so it can answer a report without its logs.

:class:`LiveConversions` takes every decision (``on_decision``) and every
presence event (``on_events``) of a worker and keeps the report counters
(:mod:`campaigns.counters`) up to date:

- an exposure (offer, held offer or holdout decision) is counted and becomes
  *pending* for its device, until the campaign's window has passed;
- a store-level event that makes a visit qualify for some campaigns (any event
  of a visit at their places whose ``dwell_s`` reaches their ``min_dwell``, and
  whose probability, when events carry one, reaches theirs) *claims* the device's
  pending exposures of those campaigns made before the visit started and
  within their windows: each of them has met its first qualifying visit and is
  resolved; the latest converts (last-exposure attribution), the others do not.

The visit's start is the event time minus its ``dwell_s`` (the visit's first
evidence), so the visit that triggered an exposure, in progress when it was
made, never converts it. This is the rule of :func:`campaigns.report.lift_report`
decided as events arrive: visits are taken in the order they qualify, which is
their start order except when a ``min_dwell`` visit overlaps another one.

Pending exposures live where the state lives: :class:`MemoryPending` here,
:class:`campaigns.redis_counters.RedisPending` in Redis (one hash per device,
``{device}``-tagged, claimed by one Lua call), so any worker may see the visit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from campaigns.conversions import Spec, specs_of
from campaigns.counters import Increment, ReportCounters
from campaigns.decider import EXPOSED
from campaigns.experiments import HOLDOUT
from campaigns.expiry import extend, pop_expired
from campaigns.offers import offer_id


@dataclass(frozen=True, slots=True)
class Pending:
    """An exposure waiting for its first qualifying visit."""

    token: str
    campaign_id: str
    arm: str
    store: str
    ts: float
    until: float


#: a pending exposure as :class:`MemoryPending` keeps it: ``(token, campaign_id, arm, store, ts, until)``
_Row = tuple[str, str, str, str, float, float]


class PendingStore(Protocol):
    def add(self, device_id: str, pending: Pending) -> None: ...

    def claim(self, device_id: str, visit_ts: float, windows: Mapping[str, float]) -> Pending | None:
        """Resolve the pending exposures of ``device_id`` that a visit starting at ``visit_ts`` qualifies for
        (campaign in ``windows``, made before the visit, at most its window before it); return the latest."""
        ...

    def add_many(self, items: Sequence[tuple[str, Pending]]) -> None:
        """:meth:`add` for several ``(device_id, pending)`` (a store may do it in one round trip)."""
        ...

    def claim_many(self, claims: Sequence[tuple[str, float, Mapping[str, float]]]) -> list[Pending | None]:
        """:meth:`claim` for several ``(device_id, visit_ts, windows)``, in order."""
        ...


class MemoryPending:
    """Pending exposures in this process.

    As :class:`campaigns.redis_counters.RedisPending` does (a key TTL, never shortened), a device's exposures
    are dropped once ``keep_s`` has passed, by ``clock``, since the exposure that needs them longest was added
    (its window after it): the exposures of devices that never come back do not pile up for as long as the
    process runs. Expired devices come off a heap.
    """

    def __init__(self, *, keep_s: float = 86400.0, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        # device -> token -> the exposure as a plain tuple (:data:`_Row`), not a Pending: a tuple of strings and
        # floats, and then its device's dict, drop out of the garbage collector's sight at its next full
        # collection, which would otherwise walk every exposure of the attribution windows each time (see
        # proximity.service.collector)
        self._by_device: dict[str, dict[str, _Row]] = {}
        self._expires: dict[str, float] = {}  # device -> when its exposures are dropped
        self._ages: list[tuple[float, str]] = []  # heap of (expires, device); stale when a device's moved on
        self.keep_s = keep_s
        self.clock = clock

    def add(self, device_id: str, pending: Pending) -> None:
        now = self.clock()
        with self._lock:
            self._expire(now)
            self._by_device.setdefault(device_id, {})[pending.token] = (
                pending.token, pending.campaign_id, pending.arm, pending.store, pending.ts, pending.until)
            extend(self._ages, self._expires, device_id, now + pending.until - pending.ts + self.keep_s)

    def _expire(self, now: float) -> None:
        """Drop the devices whose exposures expired by ``now`` (under the lock)."""
        for device_id in pop_expired(self._ages, self._expires, now):
            self._by_device.pop(device_id, None)

    def add_many(self, items: Sequence[tuple[str, Pending]]) -> None:
        for device_id, pending in items:
            self.add(device_id, pending)

    def claim_many(self, claims: Sequence[tuple[str, float, Mapping[str, float]]]) -> list[Pending | None]:
        return [self.claim(*c) for c in claims]

    def claim(self, device_id: str, visit_ts: float, windows: Mapping[str, float]) -> Pending | None:
        now = self.clock()
        with self._lock:
            self._expire(now)
            mine = self._by_device.get(device_id)
            if not mine:
                return None
            # (token, campaign_id, arm, store, ts, until)
            hit = [p for p in mine.values() if p[1] in windows and p[4] < visit_ts <= p[4] + windows[p[1]]]
            for p in [*hit, *(p for p in mine.values() if p[5] < visit_ts)]:
                mine.pop(p[0], None)
            if not mine:
                del self._by_device[device_id]
                self._expires.pop(device_id, None)
            return Pending(*max(hit, key=lambda p: (p[4], p[0]))) if hit else None

    def forget(self, device_id: str) -> None:
        """Erase a device's pending exposures (privacy)."""
        with self._lock:
            self._by_device.pop(device_id, None)
            self._expires.pop(device_id, None)


#: what :meth:`LiveConversions.together` holds: exposures, their counter groups, claims
_Held = tuple[list[tuple[str, Pending]], list[tuple[list[Increment], float]], list[tuple[str, float, dict[str, float]]]]


class LiveConversions:
    """Feeds report counters from a worker's decisions and events (see the module docstring)."""

    def __init__(self, counters: ReportCounters, pending: PendingStore, campaigns: Any, fences: Mapping[str, Any]) -> None:
        self.counters = counters
        self.pending = pending
        self._held: dict[int, _Held] = {}  # per thread inside together(): exposures, counter groups, claims
        self.replace(campaigns, fences)

    def replace(self, campaigns: Any, fences: Mapping[str, Any]) -> None:
        self.specs: dict[str, Spec] = {s.campaign_id: s for s in specs_of(campaigns, fences)}

    def on_decision(self, decision: Any) -> None:
        self.on_decisions([decision])

    def on_decisions(self, decisions: Sequence[Any]) -> None:
        """Record the exposures of several decisions (one engine call's): a Redis store writes the pending
        exposures and the counters in one round trip (two when they are on different clients); inside
        :meth:`together`, with the claims that follow them."""
        items: list[tuple[str, Pending]] = []
        groups: list[tuple[list[Increment], float]] = []
        for decision in decisions:
            e = decision.event
            incs = []
            for v in decision.verdicts:
                spec = self.specs.get(v.campaign_id)
                if v.outcome not in EXPOSED or spec is None:
                    continue
                arm = HOLDOUT if v.outcome == "holdout" else (v.variant or "offer")
                token = offer_id(v.campaign_id, e.device_id, e.place, e.kind, e.ts, e.dwell_s)
                items.append((e.device_id, Pending(token, v.campaign_id, arm, e.fence_id, e.ts, e.ts + spec.within_s)))
                incs.append(Increment(v.campaign_id, arm, e.fence_id, "exposed", token))
            if incs:
                groups.append((incs, e.ts))
        if not items and not groups:
            return
        held = self._held.get(threading.get_ident())
        if held is None:
            self._write(items, groups, [])
            return
        if held[2]:  # claims came first: they go first (the order of the calls is kept)
            self._flush(held)
        held[0].extend(items)
        held[1].extend(groups)

    def on_events(self, events: Iterable[Any]) -> None:
        """Let ``events`` claim their devices' pending exposures (inside :meth:`together`: at its end)."""
        claims: list[tuple[str, float, dict[str, float]]] = []
        for e in events:
            if e.zone is not None:
                continue
            prob = e.to_dict().get("probability")
            windows = {cid: s.within_s for cid, s in self.specs.items() if _qualifies(s, e, prob)}
            if windows:
                claims.append((e.device_id, e.ts - e.dwell_s, windows))
        if not claims:
            return
        held = self._held.get(threading.get_ident())
        if held is None:
            self._write([], [], claims)
        else:
            held[2].extend(claims)

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Within the block, on this thread, hold what :meth:`on_decisions` and :meth:`on_events` write and write
        it when the block ends, in the order of the calls, in one round trip on a Redis store (exposures,
        their counters, then the claims; a claim that converts adds one more for its counter). One engine
        call's requests (:meth:`proximity.service.host.EngineHost.process_ping_parts`) used to pay that per
        request: two round trips for each with an event. When the block raises, what it holds is written as
        far as it can be, and the block's error is raised."""
        me = threading.get_ident()
        if me in self._held:  # nested: the outer block writes
            yield
            return
        held: _Held = ([], [], [])
        self._held[me] = held
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self._flush(held)
            raise
        finally:
            self._held.pop(me, None)
        self._flush(held)

    def _flush(self, held: _Held) -> None:
        items, groups, claims = list(held[0]), list(held[1]), list(held[2])
        for x in held:
            x.clear()
        if items or groups or claims:
            self._write(items, groups, claims)

    def _write(self, items: list[tuple[str, Pending]], groups: list[tuple[list[Increment], float]],
               claims: list[tuple[str, float, dict[str, float]]]) -> None:
        """Exposures (pending and counted), then claims; the conversions the claims won are counted."""
        together = getattr(self.pending, "add_then_claim", None)  # a Redis store: one round trip for all
        if together is not None:
            won = together(items, self.counters, groups, claims)
        else:
            if items:
                self.pending.add_many(items)
            if groups:
                self.counters.add_many(groups)
            won = self.pending.claim_many(claims) if claims else []
        incs = [Increment(w.campaign_id, w.arm, w.store, "converted", w.token) for w in won if w is not None]
        if incs:
            self.counters.add(incs)


def _qualifies(spec: Spec, event: Any, prob: Any) -> bool:
    """Whether ``event`` is the moment its visit qualifies for ``spec``."""
    if spec.places is not None and event.fence_id not in spec.places:
        return False
    if spec.min_probability > 0 and prob is not None and float(prob) < spec.min_probability:
        return False
    return bool(event.dwell_s >= spec.min_dwell_s)


__all__ = ["LiveConversions", "MemoryPending", "Pending", "PendingStore"]
