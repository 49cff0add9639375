"""The outbox on Redis streams with a consumer group, on one Redis or a Redis Cluster.

The outbox is cut into ``shards`` (1 on a single Redis, 16 on a cluster by default); an offer's
shard is ``crc32(offer_id) % shards``. Every key of shard ``k`` carries the hash tag ``{outbox}``
(one shard) or ``{outbox:k}``, so each script (:mod:`campaigns._outbox_lua`) touches one slot, and the
shards spread the outbox over the cluster's masters:

- ``<prefix>:{outbox:k}:stream``: offers ready to deliver (fields ``id`` and ``offer``: JSON);
  consumer group ``dispatch``; an entry is ``XACK``-ed and deleted once delivered;
- ``...:held`` (sorted set of offer ids by ``deliver_after``) and ``...:heldbody`` (hash id -> JSON):
  offers held by quiet hours, moved to the stream by the claim script when due;
- ``...:ids``: offer ids put, scored by put time (``put`` is idempotent per offer id for ``dedup_ttl_s``);
- ``...:done``: the *delivered* marks, offer ids scored by ack time (kept ``dedup_ttl_s``);
- ``...:dead``: a stream of dead letters (offer, reason, attempts);
- ``...:drops``: a hash counting offers dropped instead of delivered (``expired``, ``cancelled``);
- ``...:delayed:<device>|<fence>``: in the shard of that cancel key, ``shard:offer id`` of the delayed
  offers an enter of the device at the fence cancels (``cancel``), expiring once they are due.

An offer past its ``expires_at`` is dropped (and counted) by the claim script, when it is promoted
from held or read from the stream (its ``exp`` field).

The fencing protocol (see :mod:`campaigns.outbox`): the claim script promotes due held offers,
takes over entries idle for ``claim_idle_s`` (``XAUTOCLAIM``: their delivery count, the token,
goes up), reads new ones, and drops every entry whose offer carries the delivered mark, all in one
atomic call. ``renew`` resets the idle time of claims whose pending entry still names this consumer
with the same delivery count (``XCLAIM ... JUSTID`` keeps the count). ``ack`` writes the mark and
acknowledges the entry in one call. Changing ``shards`` on a live outbox needs it drained first.

:class:`RedisOutbox` uses redis-py's blocking client (for the synchronous decider's ``put``);
:class:`AsyncRedisOutbox` is the same outbox on ``redis.asyncio`` for the delivery loop of a
service, so ``claim``, ``renew`` and ``ack`` never block the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import zlib
from collections.abc import Callable, Generator, Sequence
from typing import Any

import redis

import campaigns._redis as _redis
from campaigns._outbox_lua import _ACK, _CANCEL, _CLAIM, _DEAD, _DELAYED, _PUT, _RENEW
from campaigns.offers import Offer, cancel_key
from campaigns.outbox import DeadLetter, OutboxEntry
from proxbase.redis_script import register_script

GROUP = "dispatch"


class _Shards:
    """Keys, arguments and replies of the outbox scripts: everything but the I/O, for both clients."""

    def _setup(self, prefix: str, shards: int | None, on_cluster: bool, claim_idle_s: float,
               dedup_ttl_s: float, clock: Callable[[], float]) -> None:
        if on_cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(f"on Redis Cluster the key prefix must not contain '{{' or '}}' ({prefix!r})")
        n = (16 if on_cluster else 1) if shards is None else shards
        if n < 1:
            raise ValueError(f"shards must be at least 1, not {n}")
        self.prefix = prefix
        self.shards = n
        self.claim_idle_s = claim_idle_s
        self.dedup_ttl_s = float(dedup_ttl_s)
        self.clock = clock
        tags = ["{outbox}"] if n == 1 else [f"{{outbox:{k}}}" for k in range(n)]
        self._base = [f"{prefix}:{tag}" for tag in tags]
        self._next = 0  # the shard the next claim starts at (claims rotate over the shards)

    def shard_of(self, offer_id: str) -> int:
        return zlib.crc32(offer_id.encode()) % self.shards

    def _k(self, shard: int, name: str) -> str:
        return f"{self._base[shard]}:{name}"

    def _put_call(self, offer: Offer) -> tuple[list[str], list[Any]]:
        k = self.shard_of(offer.offer_id)
        after = "" if offer.deliver_after is None else repr(float(offer.deliver_after))
        keys = [self._k(k, "stream"), self._k(k, "held"), self._k(k, "ids"), self._k(k, "heldbody")]
        exp = "" if offer.expires_at is None else repr(float(offer.expires_at))
        return keys, [offer.offer_id, _body(offer), after, repr(self.clock()), repr(self.dedup_ttl_s), exp]

    def _delayed_call(self, offer: Offer) -> tuple[list[str], list[Any]] | None:
        """A new delayed offer's entry in its cancel key's index (``REMEMBER_FN``): ``([key], [member, ttl])``."""
        if not offer.delayed or offer.deliver_after is None:
            return None
        key = self._delayed_key(cancel_key(offer.device_id, offer.fence_id))
        ttl = max(1, int(offer.deliver_after - self.clock()) + 3600)
        return [key], [f"{self.shard_of(offer.offer_id)}:{offer.offer_id}", ttl]

    def _delayed_key(self, key: str) -> str:
        return self._k(zlib.crc32(key.encode()) % self.shards, f"delayed:{key}")

    def _cancel_calls(self, members: Any, now: float) -> dict[int, tuple[list[str], list[Any]]]:
        """The cancel script's call per shard for the ``shard:offer id`` members of a cancel key."""
        ids: dict[int, list[str]] = {}
        for m in members:
            shard, _, oid = _s(m).partition(":")
            ids.setdefault(int(shard), []).append(oid)
        return {k: ([self._k(k, "held"), self._k(k, "heldbody"), self._k(k, "drops")], [repr(float(now)), *v])
                for k, v in ids.items()}

    def _claim_call(self, shard: int, consumer: str, count: int, t: float) -> tuple[list[str], list[Any]]:
        keys = [self._k(shard, "stream"), self._k(shard, "held"), self._k(shard, "heldbody"), self._k(shard, "done"),
                self._k(shard, "drops")]
        return keys, [GROUP, consumer, count, int(self.claim_idle_s * 1000), repr(float(t)), 1000]

    def _order(self) -> list[int]:
        start = self._next
        self._next = (self._next + 1) % self.shards
        return [(start + i) % self.shards for i in range(self.shards)]

    def _claim_steps(self, consumer: str, count: int, t: float) -> Generator[
            list[tuple[int, tuple[list[str], list[Any]]]], list[Any], list[OutboxEntry]]:
        """The claim of up to ``count`` entries over the shards, as rounds of claim-script calls that each go
        out together: it yields a round's ``(shard, call)`` pairs and is sent their replies.

        ``count`` is split over the shards of a round (in the rotating order of :meth:`_order`, the first ones
        one more), so a round claims at most ``count`` in all. A shard that gave all it was asked may hold
        more: the next round asks it again, with the shards not asked yet, for what is still missing. So
        an outbox with a few offers answers in one round (a round trip per node) instead of one round trip
        per shard, and a busy shard still gets the whole ``count`` within a few rounds."""
        out: list[OutboxEntry] = []
        queue = self._order()  # the shards to ask: first those that gave all they were asked, then the rest
        while len(out) < count and queue:
            left = count - len(out)
            ask, queue = queue[:left], queue[left:]
            quota = [left // len(ask) + (i < left % len(ask)) for i in range(len(ask))]
            replies = yield [(k, self._claim_call(k, consumer, q, t)) for k, q in zip(ask, quota, strict=True)]
            full = []
            for k, q, reply in zip(ask, quota, replies, strict=True):
                out += self._entries(reply, consumer, k)
                if len(reply) >= q:
                    full.append(k)
            queue = full + queue
        return out

    @staticmethod
    def _entries(reply: Any, consumer: str, shard: int) -> list[OutboxEntry]:
        return [OutboxEntry(_s(eid), Offer.from_dict(json.loads(body)), int(n), consumer, shard)
                for eid, body, n in reply if body]

    def _renew_calls(self, entries: Sequence[OutboxEntry]) -> dict[tuple[int, str], list[int]]:
        """Entries grouped by (shard, consumer): each group is one script call; values index ``entries``."""
        groups: dict[tuple[int, str], list[int]] = {}
        for i, e in enumerate(entries):
            groups.setdefault((e.shard, e.consumer), []).append(i)
        return groups

    def _ack_call(self, entry: OutboxEntry) -> tuple[list[str], list[Any]]:
        keys = [self._k(entry.shard, "stream"), self._k(entry.shard, "done")]
        return keys, [GROUP, entry.entry_id, entry.offer.offer_id, repr(self.clock()), repr(self.dedup_ttl_s)]

    def _dead_call(self, entry: OutboxEntry, reason: str, attempts: int) -> tuple[list[str], list[Any]]:
        keys = [self._k(entry.shard, "stream"), self._k(entry.shard, "dead")]
        return keys, [GROUP, entry.entry_id, _body(entry.offer), reason, attempts]


class RedisOutbox(_Shards):
    """A durable outbox shared by every worker (see the module docstring).

    ``client``: a URL (a cluster node's URL gives a cluster client), a ``redis.Redis`` or a
    ``redis.cluster.RedisCluster``. Every Redis failure is raised as
    :class:`campaigns.errors.StoreUnavailable`; ``timeout_s`` bounds each call on a client made from a URL.
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "proximity",
        *,
        shards: int | None = None,
        claim_idle_s: float = 30.0,
        dedup_ttl_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        self._own = isinstance(client, str)
        self.client = _redis.connect(client, timeout_s=timeout_s) if isinstance(client, str) else client
        self._setup(prefix, shards, _redis.is_cluster(self.client), claim_idle_s, dedup_ttl_s, clock)
        self._scripts = {name: register_script(self.client, src) for name, src in
                         (("put", _PUT), ("claim", _CLAIM), ("renew", _RENEW), ("ack", _ACK), ("dead", _DEAD),
                          ("cancel", _CANCEL), ("delayed", _DELAYED))}
        self._guard(self._groups)

    def _groups(self) -> None:
        for k in range(self.shards):
            self._group(k)

    def _group(self, shard: int) -> None:
        try:
            self.client.xgroup_create(self._k(shard, "stream"), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "offer outbox") from exc

    def _run(self, name: str, call: tuple[list[str], list[Any]], shard: int | None = None) -> Any:
        def one() -> Any:  # (run_scripts: in the protocol on a single Redis, not through redis-py's parser)
            return _redis.run_scripts(self.client, [(self._scripts[name], call[0], call[1])])[0]

        def go() -> Any:
            try:
                return one()
            except redis.ResponseError as exc:  # the group went away (stream deleted): make it again
                if shard is None or "NOGROUP" not in str(exc):
                    raise
                self._group(shard)
                return one()
        return self._guard(go)

    def _run_many(self, name: str, calls: Sequence[tuple[int, tuple[list[str], list[Any]]]]) -> list[Any]:
        """``(shard, call)`` calls of one script in one round trip (one per node on a cluster): each reply, or the
        error Redis gave that call, in its place. A call whose shard lost its consumer group is run again alone
        (:meth:`_run` makes the group again); a lost connection raises
        :class:`~campaigns.errors.StoreUnavailable` for all."""
        scripts = [(self._scripts[name], *call) for _, call in calls]
        replies = self._guard(functools.partial(_redis.run_scripts, self.client, scripts, raise_errors=False))
        for i, (shard, call) in enumerate(calls):
            if isinstance(replies[i], redis.ResponseError) and "NOGROUP" in str(replies[i]):
                try:
                    replies[i] = self._run(name, call, shard)
                except Exception as exc:  # (that call only; the others' answers stand)
                    replies[i] = exc
        return replies

    def put(self, offer: Offer) -> bool:
        new = bool(self._run("put", self._put_call(offer)))
        delayed = self._delayed_call(offer)
        if new and delayed is not None:
            self._run("delayed", delayed)
        return new

    def cancel(self, key: str, now: float) -> int:
        """Drop the delayed offers of ``key`` not due by ``now`` (an enter of their device at their fence)."""
        members = self._run("delayed", ([self._delayed_key(key)], ["", 0]))
        return sum(int(self._run("cancel", call, k)) for k, call in self._cancel_calls(members, now).items())

    def cancel_many(self, items: Sequence[tuple[str, float]]) -> int:
        """:meth:`cancel` for several ``(key, now)`` (distinct keys), in two round trips at most on a single
        Redis: every key's delayed offers taken in one, the held ones among them dropped in the other."""
        if not items:
            return 0
        taken = self._guard(lambda: _redis.run_scripts(self.client, self.take_calls(items)))
        return self.drop_taken(items, taken)

    def take_calls(self, items: Sequence[tuple[str, float]]) -> list[Any]:
        """The first step of :meth:`cancel_many` as script calls (for :func:`campaigns._redis.run_scripts`; each
        takes a cancel key's index of delayed offers and replies its members), so that a caller can send them
        with its own calls (:class:`campaigns.redis_offers.RedisOffers`)."""
        return [(self._scripts["delayed"], [self._delayed_key(key)], ["", 0]) for key, _ in items]

    def drop_taken(self, items: Sequence[tuple[str, float]], taken: Sequence[Any]) -> int:
        """The second step of :meth:`cancel_many`: drop the held offers among the members ``taken`` (the
        replies of :meth:`take_calls`), in one round trip when there are any; returns how many."""
        calls = [(self._scripts["cancel"], *call) for (_, now), members in zip(items, taken, strict=True)
                 for call in self._cancel_calls(members, now).values()]
        if not calls:
            return 0
        return sum(int(n) for n in self._guard(lambda: _redis.run_scripts(self.client, calls)))

    def drop_counts(self) -> dict[str, int]:
        out = {"expired": 0, "cancelled": 0}
        for k in range(self.shards):
            got: Any = self._guard(functools.partial(self.client.hgetall, self._k(k, "drops")))
            for name, n in got.items():
                out[_s(name)] = out.get(_s(name), 0) + int(n)
        return out

    def claim(self, consumer: str, count: int = 100, *, now: float | None = None) -> list[OutboxEntry]:
        """Up to ``count`` entries, from every shard in one round trip (one per node on a cluster) while the
        outbox holds fewer than ``count`` (see :meth:`_claim_steps`)."""
        steps = self._claim_steps(consumer, count, self.clock() if now is None else now)
        calls = next(steps)
        while True:
            replies = self._run_many("claim", calls)
            _redis.raise_first(replies)
            try:
                calls = steps.send(replies)
            except StopIteration as done:
                return list(done.value)

    def renew(self, entries: Sequence[OutboxEntry]) -> list[bool]:
        result = [False] * len(entries)
        for (k, consumer), idx in self._renew_calls(entries).items():
            args: list[Any] = [GROUP, consumer]
            for i in idx:
                args += [entries[i].entry_id, entries[i].deliveries]
            for i, ok in zip(idx, self._run("renew", ([self._k(k, "stream")], args)), strict=True):
                result[i] = bool(ok)
        return result

    def ack(self, entry: OutboxEntry) -> bool:
        return bool(self._run("ack", self._ack_call(entry)))

    def ack_many(self, entries: Sequence[OutboxEntry]) -> list[bool | Exception]:
        """:meth:`ack` of several entries in one round trip (on a cluster, one per node): each entry's
        answer in its place, or the error Redis gave that entry's call (an entry whose shard lost its
        consumer group is acked alone, which makes the group again); a lost connection raises
        :class:`~campaigns.errors.StoreUnavailable` for all."""
        if not entries:
            return []
        replies = self._run_many("ack", [(e.shard, self._ack_call(e)) for e in entries])
        return [reply if isinstance(reply, Exception) else bool(reply) for reply in replies]

    def dead(self, entry: OutboxEntry, reason: str, attempts: int) -> None:
        self._run("dead", self._dead_call(entry, reason, attempts))

    def dead_letters(self) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        for k in range(self.shards):
            entries: Any = self._guard(functools.partial(self.client.xrange, self._k(k, "dead")))
            out += [DeadLetter(_offer(f), _s(f[b"reason"]), int(f[b"attempts"])) for _id, f in entries]
        return out

    def is_delivered(self, offer_id: str) -> bool:
        key = self._k(self.shard_of(offer_id), "done")
        return self._guard(lambda: self.client.zscore(key, offer_id)) is not None

    def pending(self) -> int:
        total = 0
        for k in range(self.shards):
            total += int(self._guard(functools.partial(self.client.xlen, self._k(k, "stream"))))
            total += int(self._guard(functools.partial(self.client.zcard, self._k(k, "held"))))
        return total

    def close(self) -> None:
        """Close the client when this outbox made it from a URL."""
        if self._own:
            _redis.close(self.client)


class AsyncRedisOutbox(_Shards):
    """:class:`RedisOutbox` on ``redis.asyncio``: ``claim``, ``renew``, ``ack`` (and the rest) are
    coroutines and never block the event loop. Same keys and scripts, so a synchronous
    :class:`RedisOutbox` (the decider's ``put``) and this one share one outbox.

    Build it with ``await AsyncRedisOutbox.connect(url, prefix)``, or from a ``redis.asyncio.Redis`` /
    ``redis.asyncio.cluster.RedisCluster`` followed by ``await outbox.setup()``.
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "proximity",
        *,
        shards: int | None = None,
        claim_idle_s: float = 30.0,
        dedup_ttl_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._own = False
        self.client = client
        self._setup(prefix, shards, _redis.is_cluster(client), claim_idle_s, dedup_ttl_s, clock)
        self._scripts = {name: register_script(client, src) for name, src in
                         (("put", _PUT), ("claim", _CLAIM), ("renew", _RENEW), ("ack", _ACK), ("dead", _DEAD),
                          ("cancel", _CANCEL), ("delayed", _DELAYED))}

    @classmethod
    async def connect(cls, url: str, prefix: str = "proximity", *, timeout_s: float = 5.0,
                      **kw: Any) -> AsyncRedisOutbox:
        """An outbox on ``url`` (a cluster node's URL gives a cluster client); ``timeout_s`` bounds every
        Redis call (a black-holed Redis raises :class:`~campaigns.errors.StoreUnavailable` after it)."""
        box = cls(await _redis.connect_async(url, timeout_s=timeout_s), prefix, **kw)
        box._own = True
        try:
            await box.setup()
        except BaseException:
            await box.aclose()
            raise
        return box

    async def setup(self) -> None:
        """Create the consumer groups (idempotent)."""
        for k in range(self.shards):
            await self._group(k)

    async def _group(self, shard: int) -> None:
        try:
            await self.client.xgroup_create(self._k(shard, "stream"), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "offer outbox") from exc

    async def _run(self, name: str, call: tuple[list[str], list[Any]], shard: int | None = None) -> Any:
        try:
            try:
                return await self._scripts[name](keys=call[0], args=call[1])
            except redis.ResponseError as exc:
                if shard is None or "NOGROUP" not in str(exc):
                    raise
                await self._group(shard)
                return await self._scripts[name](keys=call[0], args=call[1])
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "offer outbox") from exc

    async def put(self, offer: Offer) -> bool:
        return bool(await self._run("put", self._put_call(offer)))

    async def claim(self, consumer: str, count: int = 100, *, now: float | None = None) -> list[OutboxEntry]:
        """Up to ``count`` entries; a round's shards are asked at once (see :meth:`RedisOutbox.claim`)."""
        steps = self._claim_steps(consumer, count, self.clock() if now is None else now)
        calls = next(steps)
        while True:
            replies = await asyncio.gather(*(self._run("claim", call, k) for k, call in calls))
            try:
                calls = steps.send(list(replies))
            except StopIteration as done:
                return list(done.value)

    async def renew(self, entries: Sequence[OutboxEntry]) -> list[bool]:
        result = [False] * len(entries)
        for (k, consumer), idx in self._renew_calls(entries).items():
            args: list[Any] = [GROUP, consumer]
            for i in idx:
                args += [entries[i].entry_id, entries[i].deliveries]
            reply = await self._run("renew", ([self._k(k, "stream")], args))
            for i, ok in zip(idx, reply, strict=True):
                result[i] = bool(ok)
        return result

    async def ack(self, entry: OutboxEntry) -> bool:
        return bool(await self._run("ack", self._ack_call(entry)))

    async def dead(self, entry: OutboxEntry, reason: str, attempts: int) -> None:
        await self._run("dead", self._dead_call(entry, reason, attempts))

    async def is_delivered(self, offer_id: str) -> bool:
        try:
            return await self.client.zscore(self._k(self.shard_of(offer_id), "done"), offer_id) is not None
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "offer outbox") from exc

    async def pending(self) -> int:
        total = 0
        try:
            for k in range(self.shards):
                total += int(await self.client.xlen(self._k(k, "stream")))
                total += int(await self.client.zcard(self._k(k, "held")))
        except _redis.UNAVAILABLE as exc:
            raise _redis.unavailable(exc, "offer outbox") from exc
        return total

    async def aclose(self) -> None:
        """Close the client when this outbox made it (:meth:`connect`)."""
        if self._own:
            await self.client.aclose()


def _body(offer: Offer) -> str:
    return json.dumps(offer.to_dict(), separators=(",", ":"), sort_keys=True)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _offer(fields: Any) -> Offer:
    raw = fields.get(b"offer", fields.get("offer"))
    return Offer.from_dict(json.loads(raw))


__all__ = ["AsyncRedisOutbox", "RedisOutbox"]
