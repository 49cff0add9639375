"""Caps in Redis: one Lua script checks and consumes every cap of an offer that lives in one hash slot.

Keys (``prefix`` is the configured namespace):

- ``<prefix>:cap:{<device_id>}:<name>`` for per-device caps (per campaign,
  global, cooldown per fence): the ``{device}`` hash tag keeps all of one
  device's caps in one cluster slot, so one script call covers them atomically;
- ``<prefix>:budget:{<campaign_id>}:<name>`` for campaign budgets (total and per
  day): every device's offers of a campaign count there, so they cannot share a
  device's slot; the ``{campaign}`` tag keeps a campaign's budgets together.

Each key is a sorted set of the offer ids it allowed, scored by issue time; the
script trims entries older than the window (and one more ``ttl``, for late
events), counts from the window start (``ZCOUNT``) and, only when every cap has
room, adds the offer id to all keys.

Atomicity across slots, and the guarantee. On a single Redis (``cluster=False``)
all keys of an offer go to ONE script call: check and consumption of every cap
are one atomic step. On Redis Cluster (``cluster=True``, the default for a
cluster client) no script may span slots, so the limiter runs the script twice, once
on the campaign's budget keys and once on the device's keys, both in one round trip
(pipelined, each on its slot's node); each call takes its place (adds the offer id)
only if every cap of its slot has room. If either refuses, a compensating ``ZREM``
gives back the place the other took, and the answer is the first refusal in the order
budgets, then device caps (what asking them one after the other would answer).

A reservation is counted by every concurrent check from the moment it is made,
so **no cap is ever exceeded**, in either mode, whatever the interleaving. The
price is an occasional *under*-issue: for the instant between the two calls and the
refund, a budget (or a device cap) counts an offer that is then refunded, and a
concurrent offer can be refused when it would just have fit. If a worker dies before
the refund, or the refund cannot reach Redis, the reservation stays until the cap's
window ends (a total budget keeps it): one offer fewer, never one more. Retrying the
same decision (same offer id) finds its reservation and completes it.

A failover loses no count when replicas are in sync (``CLUSTER FAILOVER``); a
master killed before its replica received the last writes loses those counts
(Redis replication is asynchronous), see the README's "Sizing and deployment".

Blocking calls. :class:`RedisLimiter` uses redis-py's blocking client, because the decider that
calls it is synchronous (it runs inside ``Engine.process``, with the presence store's own blocking
Redis calls). A service on an event loop runs the whole engine call in a worker thread
(``await asyncio.to_thread(engine.process, ...)`` or a small ``ThreadPoolExecutor``), never on the loop;
the client's ``socket_timeout`` (5 s by default) bounds how long that thread can wait.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import campaigns._redis as _redis
from campaigns.errors import StoreUnavailable
from campaigns.limiter import CapCheck, Grant, trim_before
from proxbase.redis_script import register_script

# acquire(keys, args, now, token): every cap of ``keys`` has room -> the token is added to each (code 0); the
# token is there already -> -1 (a retried decision); else the 1-based index of the first full cap and its use.
# ``args`` holds 4 values per key: limit, window start, trim bound, ttl (ms, 0: none).
ACQUIRE_FN = """
local function acquire(keys, args, now, token)
  local n = #keys
  if n > 0 and redis.call('ZSCORE', keys[1], token) then
    return -1, 0
  end
  for i = 1, n do
    local base = (i - 1) * 4
    local limit = tonumber(args[base + 1])
    local since = args[base + 2]
    local trim = args[base + 3]
    if trim ~= '-inf' then
      redis.call('ZREMRANGEBYSCORE', keys[i], '-inf', '(' .. trim)
    end
    local used = redis.call('ZCOUNT', keys[i], since, '+inf')
    if used >= limit then
      return i, used
    end
  end
  for i = 1, n do
    redis.call('ZADD', keys[i], now, token)
    local ttl = tonumber(args[(i - 1) * 4 + 4])
    if ttl > 0 then
      redis.call('PEXPIRE', keys[i], ttl)
    end
  end
  return 0, 0
end
"""

# KEYS: the caps; ARGV: now, token, then 4 per key (see acquire)
_ACQUIRE = ACQUIRE_FN + """
local code, used = acquire(KEYS, {unpack(ARGV, 3)}, ARGV[1], ARGV[2])
return {code, used}
"""


def _num(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    return repr(float(x))


class _Caps:
    """Keys, script arguments and results: everything but the I/O, shared by both clients."""

    prefix: str
    cluster: bool

    def _setup(self, prefix: str, cluster: bool) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(f"on Redis Cluster the key prefix must not contain '{{' or '}}' ({prefix!r}): "
                             f"it would change the keys' hash slots")
        self.prefix = prefix
        self.cluster = cluster

    def key(self, c: CapCheck) -> str:
        kind = "cap" if c.scope == "device" else "budget"
        return f"{self.prefix}:{kind}:{{{c.scope_id}}}:{c.name}"

    def _call_args(self, token: str, checks: Sequence[CapCheck], now: float) -> tuple[list[str], list[Any]]:
        args: list[Any] = [_num(now), token]
        for c in checks:
            ttl_ms = 0 if c.ttl_s <= 0 or math.isinf(c.ttl_s) else math.ceil(c.ttl_s * 1000) + 1000
            args += [c.limit, _num(c.since), _num(trim_before(c)), ttl_ms]
        return [self.key(c) for c in checks], args

    def _groups(self, checks: Sequence[CapCheck]) -> list[list[CapCheck]]:
        """One group per hash slot, in the order the cluster protocol runs them (budgets first)."""
        if not self.cluster:
            return [list(checks)]
        budget = [c for c in checks if c.scope == "campaign"]
        device = [c for c in checks if c.scope == "device"]
        for group in (budget, device):
            if len({c.scope_id for c in group}) > 1:
                raise ValueError("one offer's caps must name one device and one campaign")
        return [g for g in (budget, device) if g]

    @staticmethod
    def _grant(checks: Sequence[CapCheck], code: int, used: int) -> Grant:
        if code == 0:
            return Grant(True)
        if code < 0:
            return Grant(True, duplicate=True)
        return Grant(False, blocked_by=checks[code - 1].label, used=used)

    def _device_match(self, device_id: str) -> str:
        return f"{self.prefix}:cap:{{{device_id}}}:*"


class RedisLimiter(_Caps):
    """Caps shared by every worker through Redis or Redis Cluster (see the module docstring).

    ``client``: a URL (a cluster node's URL gives a cluster client), a ``redis.Redis`` or a
    ``redis.cluster.RedisCluster``. ``cluster``: ``None`` follows the client; ``True`` on a single
    Redis runs the cluster protocol there (tests, and a single Redis that will become a cluster).
    """

    def __init__(self, client: Any, prefix: str = "proximity", *, cluster: bool | None = None,
                 timeout_s: float = 5.0) -> None:
        self._own = isinstance(client, str)
        self.client = _redis.connect(client, timeout_s=timeout_s) if isinstance(client, str) else client
        on_cluster = _redis.is_cluster(self.client)
        if cluster is False and on_cluster:
            raise ValueError("a Redis Cluster client needs RedisLimiter(..., cluster=True) (or cluster=None)")
        self._setup(prefix, on_cluster if cluster is None else cluster)
        self._script = register_script(self.client, _ACQUIRE)

    def acquire(self, token: str, checks: Sequence[CapCheck], now: float) -> Grant:
        if not checks:
            return Grant(True)
        groups = self._groups(checks)
        calls = [(self._script, *self._call_args(token, group, now)) for group in groups]
        try:
            replies = _redis.run_scripts(self.client, calls, raise_errors=False)
        except _redis.UNAVAILABLE as exc:  # which calls ran is not known: a place left taken is an under-issue
            raise _redis.unavailable(exc, "frequency caps") from exc
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        codes = [(-2, 0) if isinstance(r, Exception) else (int(r[0]), int(r[1])) for r in replies]
        refused = next((i for i, (code, _used) in enumerate(codes) if code > 0), None)
        if failed is not None or refused is not None:
            # compensate: give back the places the other calls took (one round trip); after an error, best
            # effort (the error is what is raised)
            taken = [c for group, (code, _used) in zip(groups, codes, strict=True) if code == 0 for c in group]
            with contextlib.suppress(StoreUnavailable) if failed is not None else contextlib.nullcontext():
                self.release(token, taken)
            if failed is not None:
                if isinstance(failed, _redis.UNAVAILABLE):
                    raise _redis.unavailable(failed, "frequency caps") from failed
                raise failed
            assert refused is not None
            return self._grant(groups[refused], *codes[refused])
        return Grant(True, duplicate=all(code < 0 for code, _used in codes))

    def release(self, token: str, checks: Sequence[CapCheck]) -> None:
        try:
            commands = [("ZREM", self.key(c), token) for group in self._groups(checks) for c in group]
            _redis.raise_first(_redis.run_commands(self.client, commands))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "frequency caps") from exc

    def usage(self, check: CapCheck, now: float) -> int:
        try:
            return int(self.client.zcount(self.key(check), _num(check.since), "+inf"))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "frequency caps") from exc

    def forget(self, device_id: str) -> None:
        """Erase a device's counters (its keys share the ``{device}`` tag: one slot, one node)."""
        match = self._device_match(device_id)
        try:
            if _redis.is_cluster(self.client):
                node = self.client.get_node_from_key(match)
                keys = list(self.client.scan_iter(match=match, count=500, target_nodes=node))
            else:
                keys = list(self.client.scan_iter(match=match, count=500))
            for key in keys:
                self.client.delete(key)
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "frequency caps") from exc

    def close(self) -> None:
        """Close the client when this limiter made it from a URL."""
        if self._own:
            _redis.close(self.client)


__all__ = ["RedisLimiter"]
