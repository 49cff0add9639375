"""Report counters in Redis: one script call per campaign and batch, every key in the campaign's slot.

Keys (``prefix`` is the configured namespace):

- ``<prefix>:report:{<campaign_id>}``: a hash, field ``<measure>\\x1f<arm>\\x1f<store>`` -> count;
- ``<prefix>:report:{<campaign_id>}:seen``: a sorted set of ``<measure>:<token>`` scored by time,
  trimmed to the last ``keep_s``.

- ``<prefix>:pending:{<device_id>}``: the device's exposures waiting for a qualifying visit
  (:class:`RedisPending`, for :class:`campaigns.live.LiveConversions`).

The ``{campaign_id}`` hash tag puts both keys of a campaign in one cluster
slot, so one Lua call per campaign adds a batch atomically: a token already
in ``seen`` is skipped (a retried batch, a replaying worker), each new one is
recorded and its counter incremented with ``HINCRBY``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from campaigns import _redis
from campaigns.counters import MEASURES, Counts, Increment
from campaigns.live import Pending
from proxbase.redis_script import register_script

_ADD = """
local now = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local done = 0
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - keep))
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    done = done + 1
  end
end
if done > 0 then
  redis.call('PEXPIRE', KEYS[2], math.ceil(keep * 1000))
end
return done
"""

_CLAIM = """
local visit = tonumber(ARGV[1])
local windows = {}
for i = 2, #ARGV, 2 do windows[ARGV[i]] = tonumber(ARGV[i + 1]) end
local all = redis.call('HGETALL', KEYS[1])
local best, best_ts, best_tok = false, 0, ''
for i = 1, #all, 2 do
  local tok, val = all[i], all[i + 1]
  local p = cjson.decode(val)
  local ts, w = tonumber(p[1]), windows[p[3]]
  if w and ts < visit and visit <= ts + w then
    redis.call('HDEL', KEYS[1], tok)
    if (not best) or ts > best_ts or (ts == best_ts and tok > best_tok) then
      best, best_ts, best_tok = val, ts, tok
    end
  elseif tonumber(p[2]) < visit then
    redis.call('HDEL', KEYS[1], tok)
  end
end
if best then return {best_tok, best} end
return false
"""

_SEP = "\x1f"


class RedisCounters:
    """Counters shared by every worker through Redis (see the module docstring for the keys)."""

    def __init__(self, client: Any, prefix: str = "proximity", *, keep_s: float = 14 * 86400.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = _redis.connect(client) if isinstance(client, str) else client
        self.prefix = prefix
        self.keep_s = keep_s
        self.clock = clock
        self._script = register_script(self.client, _ADD)

    def key(self, campaign_id: str) -> str:
        return f"{self.prefix}:report:{{{campaign_id}}}"

    def add(self, increments: Sequence[Increment], now: float | None = None) -> int:
        return self.add_many([(increments, now)])

    def add_many(self, groups: Sequence[tuple[Sequence[Increment], float | None]]) -> int:
        """:meth:`add` for several ``(increments, now)`` groups, in order, in one round trip (one script
        call per group and campaign: each is one slot)."""
        try:
            return sum(int(n) for n in _redis.run_scripts(self.client, self.add_calls(groups)))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "report counters") from exc

    def add_calls(self, groups: Sequence[tuple[Sequence[Increment], float | None]]) -> list[Any]:
        """The script calls of :meth:`add_many` (for :func:`campaigns._redis.run_scripts`); each replies how many
        of its increments counted."""
        calls = []
        for increments, at in groups:
            now = self.clock() if at is None else at
            by_campaign: dict[str, list[Any]] = defaultdict(list)
            for inc in increments:
                by_campaign[inc.campaign_id] += [f"{inc.measure}:{inc.token}",
                                                 _SEP.join((inc.measure, inc.arm, inc.store))]
            for cid, args in by_campaign.items():
                key = self.key(cid)
                calls.append((self._script, [key, f"{key}:seen"],
                              [repr(float(now)), repr(float(self.keep_s)), *args]))
        return calls

    def counts(self, campaign_id: str) -> Counts:
        out: Counts = {}
        try:
            fields = self.client.hgetall(self.key(campaign_id))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "report counters") from exc
        for field, value in fields.items():
            measure, arm, store = (field.decode() if isinstance(field, bytes) else field).split(_SEP)
            if measure in MEASURES:
                out.setdefault((arm, store), dict.fromkeys(MEASURES, 0))[measure] = int(value)
        return out


class RedisPending:
    """Pending exposures in Redis: ``<prefix>:pending:{<device_id>}``, a hash token -> JSON
    ``[ts, until, campaign, arm, store]``; a claim is one Lua call in the device's slot."""

    def __init__(self, client: Any, prefix: str = "proximity", *, keep_s: float = 86400.0) -> None:
        self.client = _redis.connect(client) if isinstance(client, str) else client
        self.prefix = prefix
        self.keep_s = keep_s
        self._claim = register_script(self.client, _CLAIM)

    def key(self, device_id: str) -> str:
        return f"{self.prefix}:pending:{{{device_id}}}"

    def add(self, device_id: str, pending: Pending) -> None:
        self.add_many([(device_id, pending)])

    def add_many(self, items: Sequence[tuple[str, Pending]]) -> None:
        """:meth:`add` for several ``(device_id, pending)``, in one round trip."""
        if not items:
            return
        try:
            _redis.raise_first(_redis.run_commands(self.client, self._add_commands(items)))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "pending conversions") from exc

    def add_then_claim(self, items: Sequence[tuple[str, Pending]], counters: Any,
                       groups: Sequence[tuple[Sequence[Increment], float | None]],
                       claims: Sequence[tuple[str, float, Mapping[str, float]]]) -> list[Pending | None]:
        """``add_many(items)``, ``counters.add_many(groups)``, then ``claim_many(claims)``, in that order, in one
        round trip (what :meth:`campaigns.live.LiveConversions.together` held: one engine call's exposures and
        the claims of its events). Counters on another client are written first, in their own round trip."""
        same = isinstance(counters, RedisCounters) and counters.client is self.client
        if groups and not same:
            counters.add_many(groups)
        counted = counters.add_calls(groups) if same and groups else []
        commands = self._add_commands(items) if items else []
        if not commands and not counted and not claims:
            return []
        try:
            added, replies = _redis.run_together(self.client, commands, [*counted, *self._claim_calls(claims)])
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "pending conversions and report counters") from exc
        _redis.raise_first(added)
        return self._claimed(replies[len(counted):])

    def _add_commands(self, items: Sequence[tuple[str, Pending]]) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        for device_id, pending in items:
            value = json.dumps([pending.ts, pending.until, pending.campaign_id, pending.arm, pending.store])
            key = self.key(device_id)
            ttl_ms = int((pending.until - pending.ts + self.keep_s) * 1000)
            commands += [("HSET", key, pending.token, value),
                         ("PEXPIRE", key, ttl_ms, "GT"),  # never shortens what an earlier exposure needs
                         ("PEXPIRE", key, ttl_ms, "NX")]
        return commands

    def claim(self, device_id: str, visit_ts: float, windows: Any) -> Pending | None:
        return self.claim_many([(device_id, visit_ts, windows)])[0]

    def claim_many(self, claims: Sequence[tuple[str, float, Mapping[str, float]]]) -> list[Pending | None]:
        """:meth:`claim` for several ``(device_id, visit_ts, windows)``, in order, in one round trip."""
        try:
            replies = _redis.run_scripts(self.client, self._claim_calls(claims))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "pending conversions") from exc
        return self._claimed(replies)

    def _claim_calls(self, claims: Sequence[tuple[str, float, Mapping[str, float]]]) -> list[Any]:
        calls = []
        for device_id, visit_ts, windows in claims:
            args: list[Any] = [repr(float(visit_ts))]
            for cid, within in windows.items():
                args += [cid, repr(float(within))]
            calls.append((self._claim, [self.key(device_id)], args))
        return calls

    @staticmethod
    def _claimed(replies: Sequence[Any]) -> list[Pending | None]:
        out: list[Pending | None] = []
        for got in replies:
            if not got:
                out.append(None)
                continue
            token, value = (x.decode() if isinstance(x, bytes) else x for x in got)
            ts, until, cid, arm, store = json.loads(value)
            out.append(Pending(token, cid, arm, store, float(ts), float(until)))
        return out

    def forget(self, device_id: str) -> None:
        """Erase a device's pending exposures (privacy)."""
        try:
            self.client.delete(self.key(device_id))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "pending conversions") from exc


__all__ = ["RedisCounters", "RedisPending"]
