"""Campaign counters per hour for the console: what the decider did with each matched event, and what
was delivered. In memory (the embedded default) or in Redis, shared by every worker.

Per campaign and hour of event time (UTC): ``matched`` events, each verdict
outcome (``offer`` = issued, ``held``, ``blocked``, ``dropped``, ``outranked``,
``paused``, ``schedule``, ``audience``), refusals per cap, and offers
``delivered`` out of the outbox; per campaign, the ``backlog`` (issued or held,
not yet delivered). Only the last ``keep_hours`` hours are kept.

Both twins are fed on the engine thread (:meth:`HourlyCounters.record`,
:meth:`HourlyCounters.delivered`), which only adds to a counter in the process;
:meth:`RedisHourly.flush` (the console's loop, every second) moves those counts
to Redis with one pipelined ``HINCRBY`` per field, so a decision never waits on
Redis. ``<prefix>:console:hourly:<campaign>:<hour>`` and
``<prefix>:console:total:<campaign>`` are hashes expiring after ``keep_hours``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

HOUR = 3600.0
OUTCOMES = ("offer", "held", "blocked", "dropped", "outranked", "paused", "schedule", "audience", "stale",
            "template_empty")


def _row(fields: Mapping[str, int]) -> dict[str, Any]:
    outcomes = {o: int(fields.get(f"o:{o}", 0)) for o in OUTCOMES}
    caps = {k[4:]: int(v) for k, v in sorted(fields.items()) if k.startswith("cap:")}
    return {"matched": int(fields.get("matched", 0)), "issued": outcomes["offer"], "held": outcomes["held"],
            "dropped": outcomes["dropped"], "blocked": outcomes["blocked"], "outcomes": outcomes, "caps": caps,
            "delivered": int(fields.get("delivered", 0))}


class HourlyCounters:
    """The in-memory twin (one worker)."""

    def __init__(self, keep_hours: int = 48) -> None:
        self.keep_hours = keep_hours
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        self._rows: dict[str, dict[int, Counter[str]]] = defaultdict(dict)  # hour -1: the campaign's totals

    # -- feeding (engine thread, or the delivery loop)

    def record(self, decision: Any) -> None:
        """One :class:`campaigns.Decision` (the engine host's decision listener)."""
        verdicts = getattr(decision, "verdicts", ())
        if not verdicts:
            return
        hour = math.floor(float(decision.event.ts) / HOUR)
        with self._lock:
            for v in verdicts:
                row = self._pending[(v.campaign_id, hour)]
                row["matched"] += 1
                row[f"o:{v.outcome}"] += 1
                if v.outcome == "blocked":
                    row[f"cap:{v.cap or 'cap'}"] += 1
                if v.outcome in ("offer", "held"):
                    self._pending[(v.campaign_id, -1)]["issued"] += 1

    def delivered(self, offers: Iterable[Mapping[str, Any]]) -> None:
        """Offers that left the outbox (the service's delivered-offer listener)."""
        with self._lock:
            for o in offers:
                cid = str(o.get("campaign_id", ""))
                self._pending[(cid, math.floor(float(o.get("ts") or time.time()) / HOUR))]["delivered"] += 1
                self._pending[(cid, -1)]["delivered"] += 1

    def _take(self) -> dict[tuple[str, int], Counter[str]]:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(Counter)
        return pending

    # -- reading (event loop)

    async def flush(self) -> None:
        self._merge(self._take())

    def _merge(self, pending: Mapping[tuple[str, int], Counter[str]]) -> None:
        for (cid, hour), fields in pending.items():
            rows = self._rows[cid]
            rows.setdefault(hour, Counter()).update(fields)
            hours = [h for h in rows if h >= 0]
            for old in sorted(hours)[: max(0, len(hours) - self.keep_hours)]:
                del rows[old]

    async def fetch(self, cid: str, hours: list[int]) -> dict[int, Mapping[str, int]]:
        rows = self._rows.get(cid, {})
        return {h: rows[h] for h in [-1, *hours] if h in rows}

    async def report(self, campaign_ids: Iterable[str], now: float | None = None) -> dict[str, Any]:
        """Per campaign: ``hours`` (oldest first, only hours with counts) and ``backlog``."""
        await self.flush()
        last = math.floor((time.time() if now is None else now) / HOUR)
        hours = list(range(last - self.keep_hours + 1, last + 2))  # +1: event times a little ahead of the clock
        out = {}
        for cid in campaign_ids:
            got = await self.fetch(cid, hours)
            total = got.get(-1, {})
            out[cid] = {"hours": [{"hour": h * HOUR, **_row(got[h])} for h in sorted(got) if h >= 0],
                        "backlog": max(0, int(total.get("issued", 0)) - int(total.get("delivered", 0)))}
        return out


class RedisHourly(HourlyCounters):
    """The same counters in Redis (``client``: a ``redis.asyncio`` client), summed over every worker."""

    def __init__(self, client: Any, prefix: str, keep_hours: int = 48) -> None:
        super().__init__(keep_hours)
        self._client = client
        self.prefix = prefix

    def _key(self, cid: str, hour: int) -> str:
        return f"{self.prefix}:console:total:{cid}" if hour < 0 else f"{self.prefix}:console:hourly:{cid}:{hour}"

    async def flush(self) -> None:
        pending = self._take()
        if not pending:
            return
        ttl = int(self.keep_hours * HOUR)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for (cid, hour), fields in pending.items():
                    key = self._key(cid, hour)
                    for name, n in fields.items():
                        pipe.hincrby(key, name, n)
                    pipe.expire(key, ttl)
                await pipe.execute()
        except Exception:  # Redis away: keep the counts for the next flush
            with self._lock:
                for k, fields in pending.items():
                    self._pending[k].update(fields)
            raise

    async def fetch(self, cid: str, hours: list[int]) -> dict[int, Mapping[str, int]]:
        wanted = [-1, *hours]
        async with self._client.pipeline(transaction=False) as pipe:
            for h in wanted:
                pipe.hgetall(self._key(cid, h))
            found = await pipe.execute()
        return {h: {k.decode(): int(v) for k, v in got.items()} for h, got in zip(wanted, found, strict=True) if got}


__all__ = ["HOUR", "OUTCOMES", "HourlyCounters", "RedisHourly"]
