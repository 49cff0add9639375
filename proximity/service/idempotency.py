"""Safe retries: a batch's first response is kept per ``batch_id`` and replayed for a repeat.

:class:`MemoryIdempotency` (one process) and :class:`RedisIdempotency` (shared by
every worker, so a retry that lands on another worker is replayed too) answer
``claim``; :func:`idempotent` runs a handler's work once per key.

Claims cannot strand a batch. A claim is a *lease* with a fencing token: it is
``pending <token>`` for ``lease_s`` (1 s by default) and renewed every
``lease_s / 4`` while the batch runs. A request that fails releases its claim;
when it cannot (Redis away) or its worker dies (kill -9), the lease simply runs
out, so a retry is processed afresh at most ``lease_s`` after the last renewal
(at once when Redis was away for longer than that). Only the holder of the token
can release, renew or complete a claim; a request whose lease was taken over
still answers its client (what it answers is what the batch committed, see the
ingest journal in :mod:`proximity.store`), but does not overwrite the record.
A request renews for at most :data:`MAX_LEASE_HOLD_S`: a batch stuck longer than
that (a hung dependency) no longer answers its retries 409 for as long as it hangs.

Each record also keeps the *fingerprint* of the batch's body (:func:`fingerprint`,
a BLAKE2b of the canonical JSON), from the claim on: the same ``batch_id`` with
another body is refused with 422 (``reason: batch_id_reused``) rather than
answered with the first body's response, while it is pending and once it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxbase.tasks import cancel_and_wait
from proximity.service.errors import ApiError, redis_unavailable
from proximity.service.metrics import ServiceMetrics

log = logging.getLogger("proximity.service.idempotency")


@dataclass(frozen=True)
class Claim:
    """What ``claim`` found: ``state`` is ``"new"`` (this request holds the lease ``token`` and processes the
    batch), ``"pending"`` (another request holds it) or ``"done"`` (``stored`` is the first answer);
    ``fingerprint`` is the body fingerprint the record holds (``""``: none, e.g. a record of an older
    version)."""

    state: str
    stored: tuple[int, bytes] | None = None
    token: str = ""
    fingerprint: str = ""


def fingerprint(doc: Any) -> str:
    """The fingerprint of a parsed JSON body: BLAKE2b (128 bits, hex) of its canonical form (keys sorted,
    no spaces), so the same document sent again, re-serialised or gzipped, has the same fingerprint."""
    try:
        canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits, NaN: the standard library's way
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass")
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


class IdempotencyStore:
    """Responses kept per batch_id (interface); see :class:`Claim`. ``lease_s`` is how long a claim lives
    without a renewal."""

    lease_s: float = 1.0

    async def claim(self, key: str, fingerprint: str = "") -> Claim:
        """Claim ``key`` for a body of ``fingerprint`` (kept with the lease and then with the answer)."""
        raise NotImplementedError

    async def renew(self, key: str, token: str) -> bool:
        """Extend the lease; ``False`` when ``token`` no longer holds it."""
        raise NotImplementedError

    async def complete(self, key: str, token: str, status: int, body: bytes) -> bool:
        """Keep the answer (when ``token`` holds the claim, or nobody does); ``False`` when fenced out."""
        raise NotImplementedError

    async def release(self, key: str, token: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class MemoryIdempotency(IdempotencyStore):
    """In the process: at most ``max_entries`` responses, each for ``ttl`` seconds. A claim lives as long as
    its request (the process holds it; a dead process takes its claims with it)."""

    def __init__(self, ttl: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        # key -> (expires, answer or None while pending, lease token, body fingerprint)
        self._entries: OrderedDict[str, tuple[float, tuple[int, bytes] | None, str, str]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (expires, _, _, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[key]

    async def claim(self, key: str, fingerprint: str = "") -> Claim:
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            token = secrets.token_hex(8)
            self._entries[key] = (now + self.ttl, None, token, fingerprint)
            return Claim("new", None, token, fingerprint)
        if entry[1] is None:
            return Claim("pending", fingerprint=entry[3])
        return Claim("done", entry[1], fingerprint=entry[3])

    async def renew(self, key: str, token: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[1] is None and entry[2] == token

    async def complete(self, key: str, token: str, status: int, body: bytes) -> bool:
        entry = self._entries.get(key)
        if entry is not None and (entry[1] is not None or entry[2] != token):
            return False
        self._entries[key] = (self._clock() + self.ttl, (status, body), "", "" if entry is None else entry[3])
        self._entries.move_to_end(key)
        return True

    async def release(self, key: str, token: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] is None and entry[2] == token:
            del self._entries[key]


# KEYS[1] the record; ARGV[1] token (the lease token, a space, the body's fingerprint), ARGV[2] lease (ms).
# Reply {0} new, {1, value} pending, {2, value} done.
_CLAIM = """
local pending = 'pending ' .. ARGV[1]
if redis.call('SET', KEYS[1], pending, 'NX', 'PX', ARGV[2]) then return {0} end
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], pending, 'PX', ARGV[2]) return {0} end
if string.sub(v, 1, 8) == 'pending ' then return {1, v} end
return {2, v}
"""
# KEYS[1] the record; ARGV[1] token, ARGV[2] lease (ms): 1 renewed, 0 not held
_RENEW = """
if redis.call('GET', KEYS[1]) == 'pending ' .. ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS[1] the record; ARGV[1] token, ARGV[2] the answer, ARGV[3] ttl (ms): 1 kept, 0 fenced out
_COMPLETE = """
local v = redis.call('GET', KEYS[1])
if v and v ~= 'pending ' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# KEYS[1] the record; ARGV[1] token: deleted only while this token holds it
_RELEASE = """
if redis.call('GET', KEYS[1]) == 'pending ' .. ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisIdempotency(IdempotencyStore):
    """In Redis, so a retry that lands on another worker is replayed too.

    ``<prefix>:idem:<hash>`` holds ``pending <token> <fingerprint>`` (a lease of
    ``lease_s``, renewed while the batch runs) and then ``<status> <fingerprint> <body>``
    for ``ttl`` seconds (the fingerprint is 32 hex digits; a record of an older version,
    ``<status> <body>``, has none and is replayed as before). One key per record: a
    Redis Cluster keeps each in one slot.
    """

    def __init__(self, client: Any, prefix: str, ttl: float, lease_s: float = 1.0) -> None:
        self._client = client
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self.lease_s = lease_s
        self.lease_ms = max(1, int(lease_s * 1000))
        from proxbase.redis_script import register_script  # redis only where it is used
        self._claim_script = register_script(client, _CLAIM)
        self._renew_script = register_script(client, _RENEW)
        self._complete_script = register_script(client, _COMPLETE)
        self._release_script = register_script(client, _RELEASE)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    async def claim(self, key: str, fingerprint: str = "") -> Claim:
        token = f"{secrets.token_hex(8)} {fingerprint}" if fingerprint else secrets.token_hex(8)
        with redis_unavailable("idempotency store"):
            reply = await self._claim_script(keys=[self._key(key)], args=[token, self.lease_ms])
        if int(reply[0]) == 0:
            return Claim("new", None, token, fingerprint)
        value = bytes(reply[1])
        if int(reply[0]) == 1:  # b"pending <token>[ <fingerprint>]"
            return Claim("pending", fingerprint=_fingerprint_of(value[8:].decode("ascii", "replace")))
        status, _, rest = value.partition(b" ")
        fp = ""
        if len(rest) > _FP_LEN and rest[_FP_LEN:_FP_LEN + 1] == b" " and _is_hex(rest[:_FP_LEN]):
            fp, rest = rest[:_FP_LEN].decode("ascii"), rest[_FP_LEN + 1:]
        return Claim("done", (int(status), rest), fingerprint=fp)

    async def renew(self, key: str, token: str) -> bool:
        with redis_unavailable("idempotency store"):
            return bool(await self._renew_script(keys=[self._key(key)], args=[token, self.lease_ms]))

    async def complete(self, key: str, token: str, status: int, body: bytes) -> bool:
        with redis_unavailable("idempotency store"):
            fp = _fingerprint_of(token)
            value = str(status).encode() + b" " + (fp.encode("ascii") + b" " if fp else b"") + body
            return bool(await self._complete_script(keys=[self._key(key)], args=[token, value, self.ttl_ms]))

    async def release(self, key: str, token: str) -> None:
        with redis_unavailable("idempotency store"):
            await self._release_script(keys=[self._key(key)], args=[token])


_FP_LEN = 32  # hex digits of a fingerprint
_HEX = frozenset(b"0123456789abcdef")


def _is_hex(data: bytes) -> bool:
    return all(c in _HEX for c in data)


def _fingerprint_of(token: str) -> str:
    """The fingerprint part of a lease token (``"<token> <fingerprint>"``), ``""`` when it has none."""
    return token.partition(" ")[2]


def batch_key(scope: str, batch_id: str) -> str:
    """The key of (``scope``, ``batch_id``): of its idempotency record and of its ingest journal."""
    return hashlib.sha256(f"{scope}\0{batch_id}".encode("utf-8", "surrogatepass")).hexdigest()[:40]


#: How long a request keeps renewing its claim. Every Redis call of a batch times out within seconds, so a
#: batch still running after this is stuck (a hung dependency, a bug): renewing on would answer its retries
#: 409 for as long as it hangs. Past it the lease runs out and a retry takes the batch over; the fencing token
#: keeps the stuck request from completing the claim it lost.
MAX_LEASE_HOLD_S = 30.0


async def _keep_lease(store: IdempotencyStore, key: str, token: str, max_hold_s: float = MAX_LEASE_HOLD_S) -> None:
    """Renew the claim every ``lease_s / 4`` until cancelled or ``max_hold_s`` (a failed renewal is tried
    again)."""
    give_up = time.monotonic() + max_hold_s
    while True:
        await asyncio.sleep(store.lease_s / 4)
        if time.monotonic() >= give_up:
            log.error("batch %s still running after %.0f s: its idempotency lease is left to run out so that a "
                      "retry can take it over", key, max_hold_s)
            return
        try:
            if not await store.renew(key, token):
                log.warning("idempotency lease of %s was taken over; this request no longer holds it", key)
                return
        except Exception as exc:  # Redis away: the lease runs out unless a later renewal gets through
            log.debug("renewing idempotency lease %s failed: %s", key, exc)


async def idempotent(store: IdempotencyStore, metrics: ServiceMetrics, scope: str, batch_id: str | None,
                     work: Callable[[str | None], Awaitable[web.Response]], body_fingerprint: str = "",
                     max_hold_s: float = MAX_LEASE_HOLD_S) -> web.Response:
    """Run ``work(key)`` once per (``scope``, ``batch_id``); replay its response for repeats (``scope`` names the
    endpoint and the API key, so two keys never see each other's responses). ``key`` (``None`` without a
    ``batch_id``) also names the batch's ingest journal, so a retry of a batch that failed half way answers
    what the first try committed. A repeat whose ``body_fingerprint`` (see :func:`fingerprint`) differs from
    the first body's gets 422, whether the first is still running or done."""
    if batch_id is None:
        return await work(None)
    key = batch_key(scope, batch_id)
    claim = await store.claim(key, body_fingerprint)
    if claim.state != "new" and claim.fingerprint and body_fingerprint and claim.fingerprint != body_fingerprint:
        raise ApiError(422, f"batch_id {batch_id!r} was already used for a different body: a retry must send the "
                            "same body; give a new batch its own batch_id", field="batch_id",
                       reason="batch_id_reused")
    if claim.state == "done" and claim.stored is not None:
        metrics.replays.inc()
        status, body = claim.stored
        return web.Response(body=body, status=status, content_type="application/json",
                            headers={"Idempotent-Replay": "true"})
    if claim.state == "pending":
        raise ApiError(409, f"batch_id {batch_id!r} is being processed by another request; retry shortly",
                       field="batch_id", reason="in_progress", headers={"Retry-After": "1"})
    lease = asyncio.create_task(_keep_lease(store, key, claim.token, max_hold_s), name="idempotency-lease")
    try:
        response = await work(key)
    except BaseException:
        lease.cancel()
        with contextlib.suppress(Exception):
            await store.release(key, claim.token)
        raise
    finally:
        await cancel_and_wait([lease])
    try:
        if response.status < 500 and response.body is not None:
            await store.complete(key, claim.token, response.status, bytes(response.body))  # type: ignore[arg-type]
        else:
            await store.release(key, claim.token)
    except Exception as exc:
        # The batch is committed and this answer says what it committed; a retry (the lease runs out) reads
        # the same back from the ingest journal, so the client gets this answer rather than a 503.
        log.warning("keeping the answer of batch %r failed: %s", batch_id, exc)
    return response


__all__ = ["Claim", "IdempotencyStore", "MemoryIdempotency", "RedisIdempotency", "batch_key", "fingerprint",
           "idempotent"]
