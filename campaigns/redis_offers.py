"""Many decisions' caps and outbox writes in one round trip, on a single Redis.

One engine call decides many events; each offer asks the limiter for its caps
(:mod:`campaigns.redis_limiter`) and, when they have room, is written to the outbox
(:mod:`campaigns.redis_outbox`): two round trips an offer. :class:`RedisOffers` runs
one script per event instead, built from the same Lua functions (``acquire``, ``put``,
``remember``): the event's candidate campaigns in priority order, each one's caps
checked and taken at once, the first with room written to the outbox, the others not
asked. The scripts of every event of the call go in one pipeline: each is atomic and
they run in event order, so the answers are those of one call at a time.

On a single Redis only: a script may span the device's caps, the campaign's budgets
and the outbox only when every key is on one server (on a cluster each offer's
caps go in one round trip of two scripts, see :mod:`campaigns.redis_limiter`, and its
outbox put in another).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import campaigns._redis as _redis
from campaigns._outbox_lua import PUT_FN, REMEMBER_FN
from campaigns.limiter import CapCheck, Grant
from campaigns.offers import Offer
from campaigns.redis_limiter import ACQUIRE_FN, RedisLimiter
from campaigns.redis_outbox import RedisOutbox
from proxbase.redis_script import register_script

# ARGV[1]: candidates; then per candidate: token, now, n caps, 4 values per cap (see acquire), then the put's
# body, after, now, ttl, exp and the delayed index's member and ttl ('' and 0: not delayed).
# KEYS per candidate: its n caps, the outbox's stream, held, ids, heldbody, and the delayed index when it has one.
# Returns code, used for each candidate asked, up to the first that got its caps (code 0, or -1: already had).
_DECIDE = ACQUIRE_FN + PUT_FN + REMEMBER_FN + """
local out = {}
local a, k = 2, 1
for _ = 1, tonumber(ARGV[1]) do
  local token, now, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local caps, args = {}, {}
  for i = 1, n do caps[i] = KEYS[k + i - 1] end
  for i = 1, 4 * n do args[i] = ARGV[a + 2 + i] end
  a, k = a + 3 + 4 * n, k + n
  local code, used = acquire(caps, args, now, token)
  out[#out + 1] = code
  out[#out + 1] = used
  local member = ARGV[a + 5]
  if code <= 0 then
    local new = put(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], token, ARGV[a], ARGV[a + 1],
                    tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), ARGV[a + 4])
    if new == 1 and member ~= '' then remember(KEYS[k + 4], member, ARGV[a + 6]) end
    return out
  end
  a, k = a + 7, k + 4 + (member ~= '' and 1 or 0)
end
return out
"""

Ask = tuple[str, Sequence[CapCheck], float, Offer]
"""One candidate: the offer id (the caps' token), its caps, the event time, the offer to write if they have room."""


class RedisOffers:
    """A :class:`RedisLimiter` and a :class:`RedisOutbox` on one single Redis, asked for many events at once."""

    def __init__(self, limiter: RedisLimiter, outbox: RedisOutbox) -> None:
        self.limiter = limiter
        self.outbox = outbox
        self._script = register_script(limiter.client, _DECIDE)

    @classmethod
    def of(cls, limiter: Any, outbox: Any) -> RedisOffers | None:
        """The batched path for this limiter and outbox, or ``None`` when they are not both on one single Redis
        (memory adapters, a cluster, or two clients)."""
        if not isinstance(limiter, RedisLimiter) or not isinstance(outbox, RedisOutbox):
            return None
        if limiter.cluster or _redis.is_cluster(limiter.client) or limiter.client is not outbox.client:
            return None
        return cls(limiter, outbox)

    def _call(self, asks: Sequence[Ask]) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = [len(asks)]
        for token, checks, now, offer in asks:
            cap_keys, cap_args = self.limiter._call_args(token, checks, now)
            put_keys, put_args = self.outbox._put_call(offer)
            delayed = self.outbox._delayed_call(offer)
            keys += cap_keys + put_keys + (delayed[0] if delayed is not None else [])
            args += [cap_args[1], cap_args[0], len(checks), *cap_args[2:]]  # token, now, n, the caps'
            args += [*put_args[1:], *(delayed[1] if delayed is not None else ["", 0])]
        return keys, args

    #: :meth:`run` takes the ``cancels`` that come before its events (:meth:`CampaignRules.evaluate`)
    takes_cancels = True

    def run(self, events: Sequence[Sequence[Ask]], cancels: Sequence[tuple[str, float]] = ()) -> list[list[Grant]]:
        """Each event's candidates in order until one gets its caps (and is written to the outbox); the grants
        of the candidates asked, per event. ``cancels`` (``(cancel key, now)``, as
        :meth:`RedisOutbox.cancel_many` takes them) are done first, in the same round trip (a second one drops
        the held offers they found, when there are any). Raises :class:`campaigns.errors.StoreUnavailable` when
        Redis is away."""
        take = self.outbox.take_calls(cancels) if cancels else []
        calls = [*take, *[(self._script, *self._call(asks)) for asks in events if asks]]
        try:
            got = _redis.run_scripts(self.limiter.client, calls)
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "frequency caps and offer outbox") from exc
        if take:
            self.outbox.drop_taken(cancels, got[: len(take)])
        replies = iter(got[len(take) :])
        out: list[list[Grant]] = []
        for asks in events:
            reply = next(replies) if asks else []
            out.append([RedisLimiter._grant(asks[i][1], int(reply[2 * i]), int(reply[2 * i + 1]))
                        for i in range(len(reply) // 2)])
        return out


__all__ = ["RedisOffers"]
