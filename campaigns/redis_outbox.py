"""The outbox on a Redis stream with a consumer group.

Keys (all carry the ``{outbox}`` hash tag, so every script touches one slot):

- ``<prefix>:{outbox}:stream``: offers ready to deliver (field ``offer``: JSON);
  consumer group ``dispatch``; an entry is ``XACK``-ed and deleted once delivered;
- ``<prefix>:{outbox}:held``: offers held by quiet hours, a sorted set scored by
  ``deliver_after``; moved to the stream when due (a script, atomically);
- ``<prefix>:{outbox}:id:<offer_id>``: set when an offer enters (``put`` is
  idempotent per offer id); ``...:done:<offer_id>`` set by the first ack (at
  most one delivery is ever counted per id);
- ``<prefix>:{outbox}:dead``: a stream of dead letters (offer, reason, attempts).

A worker that dies keeps its entries pending in the group; after
``claim_idle_s`` any other worker takes them over with ``XAUTOCLAIM``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from campaigns.offers import Offer
from campaigns.outbox import DeadLetter, OutboxEntry
from proxbase.errors import unavailable_on

GROUP = "dispatch"

_PUT = """
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) == false then
  return 0
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('XADD', KEYS[1], '*', 'offer', ARGV[1])
end
return 1
"""

_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, offer in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'offer', offer)
  redis.call('ZREM', KEYS[2], offer)
end
return #due
"""

_ACK = """
local first = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2])
redis.call('XACK', KEYS[1], ARGV[3], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if first == false then return 0 end
return 1
"""


# a Redis server away is StoreUnavailable (the service answers 503 + Retry-After)
_away = unavailable_on((redis.ConnectionError, redis.TimeoutError), "Redis outbox")


class RedisOutbox:
    """A durable outbox shared by every worker (see the module docstring)."""

    @_away
    def __init__(
        self,
        client: Any,
        prefix: str = "proximity",
        *,
        claim_idle_s: float = 30.0,
        dedup_ttl_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = redis.Redis.from_url(client) if isinstance(client, str) else client
        self.prefix = prefix
        self.claim_idle_s = claim_idle_s
        self.dedup_ttl_s = int(dedup_ttl_s)
        self.clock = clock
        base = f"{prefix}:{{outbox}}"
        self.stream, self.held, self.dead_stream, self._base = f"{base}:stream", f"{base}:held", f"{base}:dead", base
        self._put = self.client.register_script(_PUT)
        self._promote = self.client.register_script(_PROMOTE)
        self._ack = self.client.register_script(_ACK)
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @_away
    def put(self, offer: Offer) -> bool:
        body = json.dumps(offer.to_dict(), separators=(",", ":"), sort_keys=True)
        after = "" if offer.deliver_after is None else repr(float(offer.deliver_after))
        keys = [self.stream, self.held, f"{self._base}:id:{offer.offer_id}"]
        return bool(self._put(keys=keys, args=[body, after, self.dedup_ttl_s]))

    @_away
    def claim(self, consumer: str, count: int = 100, *, now: float | None = None) -> list[OutboxEntry]:
        t = self.clock() if now is None else now
        self._promote(keys=[self.stream, self.held], args=[repr(float(t)), 1000])
        out: list[OutboxEntry] = []
        idle_ms = int(self.claim_idle_s * 1000)
        reply: Any = self.client.xautoclaim(self.stream, GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=count)
        for entry_id, fields in reply[1]:
            if fields:
                out.append(OutboxEntry(_s(entry_id), _offer(fields), 2))
        if len(out) < count:
            batches: Any = self.client.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count - len(out))
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    if fields:
                        out.append(OutboxEntry(_s(entry_id), _offer(fields), 1))
        return out

    @_away
    def ack(self, entry: OutboxEntry) -> bool:
        keys = [self.stream, f"{self._base}:done:{entry.offer.offer_id}"]
        return bool(self._ack(keys=keys, args=[entry.entry_id, self.dedup_ttl_s, GROUP]))

    @_away
    def dead(self, entry: OutboxEntry, reason: str, attempts: int) -> None:
        body = json.dumps(entry.offer.to_dict(), separators=(",", ":"), sort_keys=True)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_stream, {"offer": body, "reason": reason, "attempts": attempts})
        pipe.xack(self.stream, GROUP, entry.entry_id)
        pipe.xdel(self.stream, entry.entry_id)
        pipe.execute()

    @_away
    def dead_letters(self) -> list[DeadLetter]:
        entries: Any = self.client.xrange(self.dead_stream)
        return [
            DeadLetter(_offer(f), _s(f[b"reason"]), int(f[b"attempts"]))
            for _id, f in entries
        ]

    @_away
    def is_delivered(self, offer_id: str) -> bool:
        return bool(self.client.exists(f"{self._base}:done:{offer_id}"))

    @_away
    def pending(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.zcard(self.held)
        n_stream, n_held = pipe.execute()
        return int(n_stream) + int(n_held)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _offer(fields: Any) -> Offer:
    raw = fields.get(b"offer", fields.get("offer"))
    return Offer.from_dict(json.loads(raw))
