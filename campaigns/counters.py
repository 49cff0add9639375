"""Report counters: exposures and conversions per campaign, arm and store, kept where the state is kept.

A service cannot re-read its whole log for every ``GET /v1/campaigns/{id}/report``;
it keeps two counters per (campaign, arm, store), ``exposed`` and
``converted``, and answers from them with :func:`report_from_counts` (the same
statistics as :func:`campaigns.report.lift_report`).

Every increment carries a token (the exposure's offer id, or the converting
visit's id): a token counts once per campaign, so a retried batch or a
second worker replaying the same decision never counts twice. Tokens are
remembered for ``keep_s`` (long enough for any retry).

:class:`MemoryCounters` is the embedded default; :class:`campaigns.redis_counters.RedisCounters`
shares the counters between workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from campaigns.conversions import Spec
from campaigns.experiments import HOLDOUT
from campaigns.expiry import extend, pop_expired
from campaigns.report import MIN_EXPOSED, rows_from_counts

Measure = Literal["exposed", "converted"]
MEASURES: tuple[Measure, ...] = ("exposed", "converted")


@dataclass(frozen=True, slots=True)
class Increment:
    """One exposure (``measure="exposed"``) or conversion of ``campaign_id``'s ``arm`` at ``store``."""

    campaign_id: str
    arm: str
    store: str
    measure: Measure
    token: str

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, not {self.measure!r}")
        if not self.token:
            raise ValueError("an increment needs a token (the exposure's or the visit's id)")


Counts = dict[tuple[str, str], dict[str, int]]
"""(arm, store) -> {"exposed": n, "converted": n}"""


@runtime_checkable
class ReportCounters(Protocol):
    def add(self, increments: Sequence[Increment], now: float | None = None) -> int:
        """Count each increment whose token is new for its campaign; returns how many counted."""
        ...

    def add_many(self, groups: Sequence[tuple[Sequence[Increment], float | None]]) -> int:
        """:meth:`add` for several ``(increments, now)`` groups, in order (a store may do it in one round trip)."""
        ...

    def counts(self, campaign_id: str) -> Counts:
        """The campaign's counters."""
        ...


class MemoryCounters:
    """Counters in this process (a lock makes ``add`` atomic across threads).

    As :class:`campaigns.redis_counters.RedisCounters` does, each call first forgets the tokens of its
    campaigns seen more than ``keep_s`` before its ``now``, then adds; the oldest tokens come off a heap, so a
    call costs the same with 1,000 or 10 million tokens remembered (it once scanned them all).
    """

    def __init__(self, *, keep_s: float = 14 * 86400.0, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counts] = {}
        self._seen: dict[str, dict[str, float]] = {}  # campaign -> token key -> when it was seen
        self._ages: dict[str, list[tuple[float, str]]] = {}  # campaign -> heap of (when seen, token key)
        self.keep_s = keep_s
        self.clock = clock

    def add_many(self, groups: Sequence[tuple[Sequence[Increment], float | None]]) -> int:
        return sum(self.add(increments, now) for increments, now in groups)

    def add(self, increments: Sequence[Increment], now: float | None = None) -> int:
        now = self.clock() if now is None else now
        done = 0
        with self._lock:
            for cid in {inc.campaign_id for inc in increments}:
                self._forget(cid, now - self.keep_s)
            for inc in increments:
                seen = self._seen.setdefault(inc.campaign_id, {})
                key = f"{inc.measure}:{inc.token}"
                if key in seen:
                    continue
                extend(self._ages.setdefault(inc.campaign_id, []), seen, key, now)
                cell = self._counts.setdefault(inc.campaign_id, {}).setdefault((inc.arm, inc.store),
                                                                               dict.fromkeys(MEASURES, 0))
                cell[inc.measure] += 1
                done += 1
        return done

    def _forget(self, campaign_id: str, before: float) -> None:
        """Forget the campaign's tokens seen before ``before`` (under the lock)."""
        if campaign_id in self._ages:
            pop_expired(self._ages[campaign_id], self._seen[campaign_id], before, inclusive=False)

    def counts(self, campaign_id: str) -> Counts:
        with self._lock:
            return {k: dict(v) for k, v in self._counts.get(campaign_id, {}).items()}


def report_from_counts(spec: Spec, counts: Mapping[tuple[str, str], Mapping[str, int]], *,
                       min_exposed: int = MIN_EXPOSED) -> dict[str, Any]:
    """The lift rows of one campaign from its counters (the shape of ``proximity campaigns report --json``)."""
    arms = [HOLDOUT, "offer", *spec.variants]
    arms += sorted({a for a, _ in counts} - set(arms))
    stores = sorted({s for _, s in counts})
    a_idx, s_idx = {a: i for i, a in enumerate(arms)}, {s: i for i, s in enumerate(stores)}
    exposed = np.zeros((1, len(arms), max(len(stores), 1)), np.int64)
    won = np.zeros_like(exposed)
    for (arm, store), cell in counts.items():
        exposed[0, a_idx[arm], s_idx[store]] += int(cell.get("exposed", 0))
        won[0, a_idx[arm], s_idx[store]] += int(cell.get("converted", 0))
    return {"campaign_id": spec.campaign_id, "min_exposed": min_exposed,
            "lift": rows_from_counts(exposed, won, [spec], stores, arms, min_exposed)}


__all__ = ["MEASURES", "Counts", "Increment", "MemoryCounters", "ReportCounters", "report_from_counts"]
