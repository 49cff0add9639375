"""Caps in Redis: one Lua script checks and consumes every cap of an offer.

Keys (``prefix`` is the configured namespace):

- ``<prefix>:cap:{<device_id>}:<name>`` for per-device caps (per campaign,
  global, cooldown per fence): the ``{device}`` hash tag keeps all of one
  device's caps in one cluster slot, so one script call covers them atomically;
- ``<prefix>:budget:{<campaign_id>}:<name>`` for campaign budgets.

Each key is a sorted set of the offer ids it allowed, scored by issue time; the
script trims entries older than the window (and one more ``ttl``, for late events), counts from the window start
(``ZCOUNT``) and, only when every cap has room, adds the offer id to all keys.

Atomicity across slots. On a single Redis (the default, ``cluster=False``) all
keys of an offer go to ONE script call: the check and the consumption of every
cap are one atomic step. On Redis Cluster a budget key lives in its campaign's
slot, not the device's, and no script may span slots. With ``cluster=True`` the
limiter runs the same script twice: first on the budget keys (reserving the
offer's place in the budget), then on the device keys; if the device caps
refuse, a compensating ``ZREM`` gives the budget place back. A budget can
therefore, for the instant between the two calls, count an offer that is then
refunded: a concurrent offer may be refused when it would just have fit (an
under-issue, never an over-issue). No cap is ever exceeded in either mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import redis

from campaigns.limiter import CapCheck, Grant, trim_before
from proxbase.errors import unavailable_on

_ACQUIRE = """
local now = ARGV[1]
local token = ARGV[2]
local n = #KEYS
if n > 0 and redis.call('ZSCORE', KEYS[1], token) then
  return {-1, 0}
end
for i = 1, n do
  local base = 2 + (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local since = ARGV[base + 2]
  local trim = ARGV[base + 3]
  if trim ~= '-inf' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. trim)
  end
  local used = redis.call('ZCOUNT', KEYS[i], since, '+inf')
  if used >= limit then
    return {i, used}
  end
end
for i = 1, n do
  redis.call('ZADD', KEYS[i], now, token)
  local ttl = tonumber(ARGV[2 + (i - 1) * 4 + 4])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return {0, 0}
"""


def _num(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    return repr(float(x))


# a Redis server away is StoreUnavailable (the service answers 503 + Retry-After)
_away = unavailable_on((redis.ConnectionError, redis.TimeoutError), "Redis caps")


class RedisLimiter:
    """Caps shared by every worker through Redis (see the module docstring for keys and atomicity)."""

    def __init__(self, client: Any, prefix: str = "proximity", *, cluster: bool = False) -> None:
        self.client = redis.Redis.from_url(client) if isinstance(client, str) else client
        self.prefix = prefix
        self.cluster = cluster
        self._script = self.client.register_script(_ACQUIRE)

    def key(self, c: CapCheck) -> str:
        kind = "cap" if c.scope == "device" else "budget"
        return f"{self.prefix}:{kind}:{{{c.scope_id}}}:{c.name}"

    def _run(self, token: str, checks: Sequence[CapCheck], now: float) -> tuple[int, int]:
        args: list[Any] = [_num(now), token]
        for c in checks:
            ttl_ms = 0 if c.ttl_s <= 0 or math.isinf(c.ttl_s) else math.ceil(c.ttl_s * 1000) + 1000
            args += [c.limit, _num(c.since), _num(trim_before(c)), ttl_ms]
        code, used = self._script(keys=[self.key(c) for c in checks], args=args)
        return int(code), int(used)

    @_away
    def acquire(self, token: str, checks: Sequence[CapCheck], now: float) -> Grant:
        if not checks:
            return Grant(True)
        if not self.cluster:
            return self._grant(checks, *self._run(token, checks, now))
        budget = [c for c in checks if c.scope == "campaign"]
        device = [c for c in checks if c.scope == "device"]
        groups = [g for g in (budget, device) if g]
        done: list[list[CapCheck]] = []
        duplicate = True
        for group in groups:
            code, used = self._run(token, group, now)
            if code > 0:
                for taken in done:  # compensate: give back what the earlier slot reserved
                    self.release(token, taken)
                return self._grant(group, code, used)
            duplicate = duplicate and code < 0
            if code == 0:
                done.append(group)
        return Grant(True, duplicate=duplicate)

    @staticmethod
    def _grant(checks: Sequence[CapCheck], code: int, used: int) -> Grant:
        if code == 0:
            return Grant(True)
        if code < 0:
            return Grant(True, duplicate=True)
        return Grant(False, blocked_by=checks[code - 1].label, used=used)

    @_away
    def release(self, token: str, checks: Sequence[CapCheck]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for c in checks:
            pipe.zrem(self.key(c), token)
        pipe.execute()

    @_away
    def usage(self, check: CapCheck, now: float) -> int:
        return int(self.client.zcount(self.key(check), _num(check.since), "+inf"))

    @_away
    def forget(self, device_id: str) -> None:
        """Erase a device's counters (its keys share the ``{device}`` tag)."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}:cap:{{{device_id}}}:*", count=500))
        if keys:
            self.client.delete(*keys)
