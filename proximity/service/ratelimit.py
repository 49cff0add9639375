"""Rate limits: token buckets per API key and per device, in the process or shared through Redis.

A request is charged one token in its key's bucket (``rate_limit`` requests/s,
bursts of ``rate_burst``; before its body is read) and, for an ingest batch, one
token in the bucket of *each* device it carries (``device_rate_limit``,
``device_rate_burst``: the pings' ``device_id``\\s, a scan's ``observer_id``\\s; a gateway is
no device: its own sightings are charged to its key only). Device buckets belong
to a key (an app's installs share its key, never another app's devices). A batch
is charged all or nothing: when one of its devices has no token left, none is
taken and the batch gets 429.

Every answer to a limited route carries the three fields of the IETF draft
*RateLimit header fields for HTTP* (draft-ietf-httpapi-ratelimit-headers-06):
``RateLimit-Limit`` (the bucket's size), ``RateLimit-Remaining`` (whole tokens left)
and ``RateLimit-Reset`` (seconds until the bucket is full again), of the bucket
closest to empty among those the request drew from. A 429 has ``Retry-After``
and the same number of seconds in its body (``retry_after_s``).

:class:`RateLimiter` keeps buckets in the process; :class:`RedisRateLimiter` keeps
them in Redis, shared by every worker: one Lua script per request refills (by
Redis's clock) and takes from all the buckets of the request at once. Every key
of one call is ``<prefix>:ratelimit:{<key name>}...``: the hash tag puts an API
key's buckets and its devices' in one slot, so the script runs on Redis Cluster.
If Redis cannot be reached the worker's own buckets decide (a limit protects the
service; it never becomes an outage of its own). ``rate <= 0`` disables a limiter.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Quota:
    """The outcome of one charge: ``wait`` seconds before a retry can pass (0: allowed), and the state of the
    bucket closest to empty after it (``limit`` its size, ``remaining`` tokens, ``reset`` seconds until full).
    ``what`` is ``"key"`` or ``"device"``; ``name`` the key name or the device id."""

    wait: float
    limit: float
    remaining: float
    reset: float
    what: str = "key"
    name: str = ""

    @property
    def retry_after(self) -> int:
        """Whole seconds for ``Retry-After`` (rounded up, so a client that waits is served)."""
        return retry_after_seconds(self.wait)

    def headers(self) -> dict[str, str]:
        """The draft-06 ``RateLimit-*`` fields (and ``Retry-After`` when refused)."""
        out = {"RateLimit-Limit": str(int(self.limit)), "RateLimit-Remaining": str(max(0, int(self.remaining))),
               "RateLimit-Reset": str(max(0, math.ceil(self.reset - 1e-9)))}
        if self.wait > 0:
            out["Retry-After"] = str(self.retry_after)
        return out

    def tighter(self, other: Quota | None) -> Quota:
        """Of two charges, the one to report: a refusal first, else the fewer tokens left."""
        if other is None:
            return self
        if (self.wait > 0) != (other.wait > 0):
            return self if self.wait > 0 else other
        return self if self.remaining <= other.remaining else other


def retry_after_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds; round up so a client that waits is served."""
    return str(retry_after_seconds(seconds))


def _member_suffix(member: str) -> str:
    return "" if not member else ":d:" + hashlib.blake2b(member.encode("utf-8", "surrogatepass"),
                                                        digest_size=10).hexdigest()


class RateLimiter:
    """Token buckets in the process: ``rate`` tokens per second, up to ``burst``. A bucket is named by a
    ``group`` (the key name) and a ``member`` (``""``: the key's own bucket; else a device id)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 what: str = "key") -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        if self.rate > 0 and self.burst < 1:
            raise ValueError("the rate limit's burst must allow at least one request")
        self.what = what
        self._clock = clock
        # (group, member) -> (tokens, when charged), least recently charged first: a bucket full again is the
        # same as none, so those at the front are dropped (a worker does not keep a bucket for every device
        # it ever saw, as Redis expires them)
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, name: str, cost: float = 1.0) -> float:
        """Charge ``name``'s own bucket: ``0.0`` when the request may go on, else the seconds to wait."""
        quota = self.take_all(name, [""], cost)
        return 0.0 if quota is None else quota.wait

    def take_all(self, group: str, members: Sequence[str], cost: float = 1.0) -> Quota | None:
        """Charge every member's bucket of ``group``, all or none; ``None`` when the limit is off."""
        if self.rate <= 0 or not members:
            return None
        now = self._clock()
        with self._lock:
            tokens = []
            for m in members:
                level, last = self._buckets.get((group, m), (self.burst, now))
                tokens.append(min(self.burst, level + max(0.0, now - last) * self.rate))
            allowed = all(t >= cost for t in tokens)
            if allowed:
                tokens = [t - cost for t in tokens]
            buckets = self._buckets
            for m, t in zip(members, tokens, strict=True):
                buckets[(group, m)] = (t, now)
                buckets.move_to_end((group, m))
            while buckets:
                level, last = next(iter(buckets.values()))
                if last + (self.burst - level) / self.rate > now:
                    break
                buckets.popitem(last=False)
        wait = 0.0 if allowed else max((cost - t) / self.rate for t in tokens if t < cost)
        return self._quota(wait, tokens, members, group)

    def _quota(self, wait: float, tokens: Sequence[float], members: Sequence[str], group: str) -> Quota:
        i = min(range(len(tokens)), key=tokens.__getitem__)
        return Quota(wait, self.burst, tokens[i], (self.burst - tokens[i]) / self.rate, self.what, members[i] or group)

    async def acquire(self, name: str) -> float:
        """:meth:`take` for one request (the interface :class:`RedisRateLimiter` shares)."""
        return self.take(name)

    async def charge(self, group: str, members: Sequence[str] = ("",)) -> Quota | None:
        return self.take_all(group, members)


# KEYS: the buckets; ARGV: rate, burst, cost, ttl (ms). All or none: {wait, fewest tokens left, its index}.
_BUCKETS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, ok = {}, true
for i, k in ipairs(KEYS) do
  local v = redis.call('HMGET', k, 'tokens', 'last')
  local level, last = tonumber(v[1]) or burst, tonumber(v[2]) or now
  tokens[i] = math.min(burst, level + math.max(0, now - last) * rate)
  if tokens[i] < cost then ok = false end
end
local wait, low, at = 0, burst + 1, 1
for i, k in ipairs(KEYS) do
  if ok then tokens[i] = tokens[i] - cost
  elseif tokens[i] < cost then wait = math.max(wait, (cost - tokens[i]) / rate) end
  if tokens[i] < low then low, at = tokens[i], i end
  redis.call('HSET', k, 'tokens', tostring(tokens[i]), 'last', tostring(now))
  redis.call('PEXPIRE', k, ARGV[4])
end
return {tostring(wait), tostring(low), at}
"""


class RedisRateLimiter:
    """The same buckets in Redis (``<prefix>:ratelimit:{<key name>}`` and, per device,
    ``<prefix>:ratelimit:{<key name>}:d:<hash of the device id>``): every worker draws from them."""

    def __init__(self, client: Any, prefix: str, rate: float, burst: float | None = None, what: str = "key") -> None:
        self._client = client
        self.prefix = prefix
        self.local = RateLimiter(rate, burst, what=what)
        self.rate, self.burst, self.what = self.local.rate, self.local.burst, what
        # an idle bucket is full again after burst / rate seconds: keep it no longer
        self._ttl_ms = max(1000, int(1000 * self.burst / self.rate) + 1000) if self.rate > 0 else 1000
        from proxbase.redis_script import register_script  # redis only where it is used
        self._script = register_script(client, _BUCKETS_LUA)

    def key(self, group: str, member: str = "") -> str:
        return f"{self.prefix}:ratelimit:{{{group}}}{_member_suffix(member)}"

    async def acquire(self, name: str) -> float:
        quota = await self.charge(name)
        return 0.0 if quota is None else quota.wait

    async def charge(self, group: str, members: Sequence[str] = ("",)) -> Quota | None:
        if self.rate <= 0 or not members:
            return None
        try:
            wait, low, at = await self._script(keys=[self.key(group, m) for m in members],
                                               args=[repr(self.rate), repr(self.burst), "1", str(self._ttl_ms)])
        except Exception:  # Redis away: the local buckets decide
            return self.local.take_all(group, members)
        tokens = float(low)
        return Quota(float(wait), self.burst, tokens, (self.burst - tokens) / self.rate, self.what,
                     members[int(at) - 1] or group)


def limiters(config: Any, client: Any = None) -> Mapping[str, RateLimiter | RedisRateLimiter]:
    """``{"key": ..., "device": ...}`` for a :class:`~proximity.service.config.ServiceConfig`: in Redis when a
    ``client`` is given. ``rate_limit: 0`` turns both off; ``device_rate_limit: 0`` only the device one."""
    device_rate = config.device_rate_limit if config.rate_limit > 0 else 0.0
    if client is None:
        return {"key": RateLimiter(config.rate_limit, config.rate_burst),
                "device": RateLimiter(device_rate, config.device_rate_burst, what="device")}
    return {"key": RedisRateLimiter(client, config.redis_prefix, config.rate_limit, config.rate_burst),
            "device": RedisRateLimiter(client, config.redis_prefix, device_rate, config.device_rate_burst,
                                       what="device")}


__all__ = ["Quota", "RateLimiter", "RedisRateLimiter", "limiters", "retry_after_header", "retry_after_seconds"]
