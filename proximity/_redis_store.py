"""The Redis state store: presence state shared by any number of engine processes.

Keys (``P`` is the configurable prefix, ``D`` the device id; ``{D}`` is the
Redis Cluster hash tag, so a device's keys live in one slot):

- ``P:{D}:st``: the device's presence state, ``b"<version>|" + binary`` (a
  12-byte header: last evidence time, visit count; then 36 bytes per visit);
  expires after ``ttl_s`` of wall-clock idleness;
- ``P:{D}:info``: hash of ``a`` (attrs JSON), ``z`` (time zone), ``o`` (opt-out);
- ``P:{places}``, ``P:{places}:seq``: place key -> integer id, shared by all processes;
- ``P:due``: sorted set, device id -> the earliest time ``advance`` has work for it
  (a debounce exit or the event-time TTL).

One transition function for both stores, by optimistic concurrency: load the
batch's devices (one ``MGET``), run :func:`proximity.presence.apply_evidence`,
then save every changed device with one Lua script call that compare-and-sets
each device on its version and updates its due time in the same atomic step.
Devices whose version moved (another process won) are reloaded and recomputed
from their fresh state; their events from the lost attempt are discarded, so
each event is produced exactly once across processes. A batch of at most
``chunk`` devices is saved all-or-nothing; a lost connection raises
:class:`proximity.errors.StoreUnavailable` (the request can be retried: evidence
already applied is dropped as late or re-applied idempotently).

Redis Cluster (``cluster=True``). No script may touch keys of two slots, so the
due set is split by slot: ``P:due:{T}``, where the tag ``T`` (see :func:`slot_tags`)
hashes to the slot that the devices listed in it hash to. The devices of a save are
grouped by slot, and each group is one call of the same script (its devices plus
its slot's due set); the calls are pipelined, per node when the client is a
``redis.cluster.RedisCluster``. Loads are pipelined ``GET``s. ``advance`` reads every
slot's due set (one pipelined ``ZRANGEBYSCORE`` per slot, 16384 per call; then only the
slots whose page was full). Semantics and events are those of the single-Redis mode;
what changes is the unit of atomicity: one slot group, not the whole chunk (a lost
connection mid-batch can leave some groups saved: the retried request then drops
their evidence as already applied, without their events). Redirections (``MOVED``,
``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``) refresh the slot map and resend what did not run;
a save group that still fails counts as a lost compare-and-set and is recomputed.
The mode runs on a single Redis too (every slot on one server), which is how the
shared presence suite tests it.
"""

from __future__ import annotations

import hashlib
import json
from binascii import crc_hqx
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import count
from typing import Any, TypeVar

import numpy as np
import redis as redis_lib
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.crc import key_slot

from proximity.errors import StateError, StoreUnavailable
from proximity.events import Device
from proximity.presence import (
    Evidence,
    PlaceTable,
    PresenceParams,
    PresenceState,
    Resolved,
    Transitions,
    advance_state,
    apply_evidence,
    next_due,
    visit_snapshot,
)

HEADER = np.dtype([("last", "<f8"), ("n", "<u4")])
RECORD = np.dtype([("place", "<i4"), ("enter", "<f8"), ("gps", "<f8"), ("bcn", "<f8"), ("mask", "<u4"),
                   ("src", "u1"), ("conf", "i1"), ("miss", "u1"), ("tent", "u1")])
T = TypeVar("T")
SLOTS = 16384  # Redis Cluster hash slots
# error replies that mean the command did not run, so it can be sent again
_NOT_RUN = (redis_lib.exceptions.AskError, redis_lib.exceptions.TryAgainError, redis_lib.exceptions.ClusterDownError)


@cache
def slot_tags() -> tuple[bytes, ...]:
    """``slot_tags()[s]``: the smallest decimal number (as bytes) whose Redis Cluster hash slot is ``s``
    (the tag of slot ``s``'s due set; at most 6 digits)."""
    tags: list[bytes | None] = [None] * SLOTS
    left, i = SLOTS, 0
    while left:
        tag = b"%d" % i
        s = crc_hqx(tag, 0) % SLOTS
        if tags[s] is None:
            tags[s] = tag
            left -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def _pack(parts: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol."""
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%b\r\n" % (len(x), x) for x in parts])

_SAVE = """
local ttl, skip = ARGV[1], tonumber(ARGV[2]) + 3
local out = {}
for i = 2, #KEYS do
  local j = (i - 2) * 2 + 3
  local want, due = string.match(ARGV[j], '^(%d+)(.*)$')
  want = tonumber(want)
  local value = ARGV[j + 1]
  local write = value ~= '' and value ~= '='
  local cur
  if write then
    cur = redis.call('SET', KEYS[i], value, 'PX', ttl, 'GET')  -- the common case: one call
  else
    cur = redis.call('GET', KEYS[i])
  end
  local v = 0
  if cur then v = tonumber(string.match(cur, '^(%d+)|')) or 0 end
  if v ~= want and write then  -- lost the race: put the winner's state back
    if cur then
      redis.call('SET', KEYS[i], cur, 'PX', ttl)
    else
      redis.call('DEL', KEYS[i])
    end
  end
  if v == want then
    if value == '' and cur then
      redis.call('DEL', KEYS[i])
    end
    if due ~= '' then
      local name = string.sub(KEYS[i], skip, -5)
      if due == ' -' then
        redis.call('ZREM', KEYS[1], name)
      else
        redis.call('ZADD', KEYS[1], string.sub(due, 2), name)
      end
    end
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
return table.concat(out)
"""

_LOAD = """
local sizes, values = {}, {}
for a = 1, #KEYS, 4000 do  -- MGET, 4000 keys a call at most (unpack's limit is about 8000)
  local got = redis.call('MGET', unpack(KEYS, a, math.min(a + 3999, #KEYS)))
  for k = 1, #got do
    local v = got[k]
    if v then
      sizes[a + k - 1] = #v
      values[#values + 1] = v
    else
      sizes[a + k - 1] = 0
    end
  end
end
return {table.concat(sizes, ','), table.concat(values)}
"""

_PLACES = """
local out = {}
for i = 1, #ARGV do
  local id = redis.call('HGET', KEYS[1], ARGV[i])
  if not id then
    id = redis.call('INCR', KEYS[2]) - 1
    redis.call('HSET', KEYS[1], ARGV[i], id)
  end
  out[i] = tonumber(id)
end
return out
"""


def _connect(url: str, cluster: bool) -> Any:
    """A client for ``url``: with ``cluster=True`` a :class:`redis.cluster.RedisCluster` when the server is a
    cluster node, else a plain client (cluster mode on one server)."""
    client = redis_lib.Redis.from_url(url)
    if not cluster:
        return client
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
        client.close()
        raise StoreUnavailable(f"Redis state store unavailable: {exc}", retry_after_s=1.0) from exc
    if not enabled:
        return client
    client.close()
    # a seed node of our own: redis-py drops the seed it builds from a URL with its connection still open
    options = parse_url(url)
    options.pop("db", None)
    seed = ClusterNode(options.pop("host"), options.pop("port"))
    cluster_client = RedisCluster(startup_nodes=[seed], **options)
    cluster_client._proximity_seeds = [seed]
    return cluster_client


@dataclass
class Stored:
    """Device states as stored (one buffer): device i's binary state is ``buf[start[i]:start[i] + length[i]]``
    (length 0: no state), written under ``version[i]`` (0: no key)."""

    version: np.ndarray
    buf: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def parse(cls, sizes: np.ndarray, blob: bytes) -> Stored:
        """Values ``b"<version>|<state>"`` concatenated in ``blob`` (``sizes`` bytes each, 0 for none)."""
        buf = np.frombuffer(blob, np.uint8)
        n = len(sizes)
        begin = np.zeros(n, np.int64)
        np.cumsum(sizes[:-1], out=begin[1:])
        version = np.zeros(n, np.int64)
        start = begin.copy()
        length = np.zeros(n, np.int64)
        has = np.flatnonzero(sizes > 0)
        if len(has):
            bars = np.flatnonzero(buf == ord("|"))  # the first one after a value's start ends its version digits
            at_bar = np.searchsorted(bars, begin[has])
            sep = bars[np.minimum(at_bar, max(len(bars) - 1, 0))] if len(bars) else begin[has]
            digits = sep - begin[has]
            if (at_bar >= len(bars)).any() or digits.min() < 1 or digits.max() > 18 or (sep >= begin[has] + sizes[has]).any():
                raise StateError("a presence state in Redis is not '<version>|<state>': was it written by this version?")
            width = int(digits.max())
            at = begin[has][:, None] + np.arange(width)
            inside = np.arange(width) < digits[:, None]
            d = np.where(inside, buf[np.minimum(at, len(buf) - 1)].astype(np.int64) - 48, 0)
            scale = np.where(inside, 10 ** np.clip(digits[:, None] - 1 - np.arange(width), 0, None), 0)
            version[has] = (d * scale).sum(axis=1)
            start[has] = sep + 1
            length[has] = begin[has] + sizes[has] - sep - 1
        return cls(version, buf, start, length)

    def body(self, i: int) -> bytes:
        return self.buf[self.start[i] : self.start[i] + self.length[i]].tobytes()


def _changed(a: Stored, b: Stored) -> np.ndarray:
    """Per device: do the binary states of ``a`` and ``b`` differ?"""
    out = a.length != b.length
    same = np.flatnonzero(~out & (a.length > 0))
    if len(same):
        lens = a.length[same]
        total = int(lens.sum())
        rep = np.repeat(np.arange(len(same)), lens)
        first = np.cumsum(lens) - lens
        within = np.arange(total) - first[rep]
        diff = a.buf[a.start[same][rep] + within] != b.buf[b.start[same][rep] + within]
        out[same] = np.bincount(rep, weights=diff, minlength=len(same)) > 0
    return out


class RedisStateStore:
    """Presence state in Redis (see the module docstring). Build it with :func:`proximity.store.RedisStore`."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "proximity",
        ttl_s: float = 7 * 24 * 3600.0,
        max_retries: int = 16,
        chunk: int = 5000,
        cluster: bool = False,
    ) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(f"with cluster=True the key prefix must not contain '{{' or '}}' (it would change "
                             f"the keys' hash slots): {prefix!r}")
        self._own = isinstance(client, str)
        self.r = _connect(client, cluster) if isinstance(client, str) else client
        self.cluster = cluster
        self._nodes = isinstance(self.r, RedisCluster)  # route each slot to its node
        if self._nodes and not cluster:
            raise ValueError("a RedisCluster client needs RedisStore(..., cluster=True)")
        self.prefix = prefix
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.max_retries = max_retries
        self.chunk = chunk
        self.due_key = f"{prefix}:due"  # single-Redis mode; cluster mode: due_key_of(device)
        self._due_keys: list[bytes] | None = None  # cluster mode: slot -> its due set
        self._scan_heads: list[bytes] | None = None  # cluster mode: slot -> packed "ZRANGEBYSCORE <its due set>"
        kwargs = self.r.get_connection_kwargs() if self._nodes else self.r.connection_pool.connection_kwargs
        if kwargs.get("decode_responses"):
            raise ValueError("the Redis state store needs a client without decode_responses (states are binary)")
        self._scripts = {name: (src, hashlib.sha1(src.encode()).hexdigest()) for name, src in
                         (("save", _SAVE), ("load", _LOAD))}
        self._places_script = self.r.register_script(_PLACES)
        self.retries = 0  # compare-and-set conflicts seen (for tests and metrics)
        self.saved = 0  # device states written

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.exceptions.ClusterError,
                redis_lib.exceptions.RedisClusterException) as exc:  # the latter two: a slot without a master
            raise StoreUnavailable(f"Redis state store unavailable: {exc}", retry_after_s=1.0) from exc
        except redis_lib.RedisError as exc:
            raise StateError(f"Redis state store error: {exc}") from exc

    def _st(self, device_id: str) -> str:
        return f"{self.prefix}:{{{device_id}}}:st"

    def _st_keys(self, names: Sequence[str]) -> list[bytes]:
        head, tail = f"{self.prefix}:{{".encode(), b"}:st"
        return [head + n.encode() + tail for n in names]

    def _script(self, name: str, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """``EVALSHA`` of one of our scripts, packed here in one join (redis-py packs argument by argument,
        which costs more than the script itself for batches of thousands of devices)."""
        src, sha = self._scripts[name]
        head = [b"EVALSHA", sha.encode(), b"%d" % len(keys)]
        packed = b"*%d\r\n" % (len(head) + len(keys) + len(args)) + b"".join(
            [b"$%d\r\n%b\r\n" % (len(x), x) for parts in (head, keys, args) for x in parts])
        for attempt in (0, 1):
            pool = self.r.connection_pool
            conn = pool.get_connection()
            try:
                conn.send_packed_command([packed])
                return conn.read_response()
            except redis_lib.exceptions.NoScriptError:
                if attempt:
                    raise
                self.r.script_load(src)
            except BaseException:
                conn.disconnect()  # a half-read reply must not be left on a pooled connection
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")

    def _info(self, device_id: str) -> str:
        return f"{self.prefix}:{{{device_id}}}:info"

    # -- cluster mode: slots, due sets, pipelines routed per node ---------------------------------

    def _slot_due_key(self, slot: int) -> bytes:
        if self._due_keys is None:
            head = self.prefix.encode()
            self._due_keys = [b"%b:due:{%b}" % (head, tag) for tag in slot_tags()]
        return self._due_keys[slot]

    def due_key_of(self, device_id: str) -> str:
        """The due set that lists ``device_id`` (one per hash slot with ``cluster=True``)."""
        if not self.cluster:
            return self.due_key
        return self._slot_due_key(key_slot(self._st(device_id).encode())).decode()

    def _client_of(self, slot: int) -> Any:
        if not self._nodes:
            return self.r
        return self.r.get_redis_connection(self.r.nodes_manager.get_node_from_slot(slot))

    def _send(self, commands: Sequence[tuple[int, bytes]], script: str | None = None) -> list[Any]:
        """Run ``(slot, packed command)`` pairs, pipelined per node; replies in order, an error reply as its
        exception.

        A command refused without running (``NOSCRIPT``: ``script`` is loaded on that node;
        a redirection or ``TRYAGAIN``: the slot map is refreshed) is sent again, at most twice.
        """
        if not commands:
            return []
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        for attempt in range(3):
            by_node: dict[int, tuple[Any, list[int]]] = {}
            if self._nodes:
                for i in todo:
                    client = self._client_of(commands[i][0])
                    by_node.setdefault(id(client), (client, []))[1].append(i)
            else:
                by_node[0] = (self.r, todo)
            again: list[int] = []
            refresh = False
            for client, idx in by_node.values():
                pool = client.connection_pool
                conn = pool.get_connection()
                try:
                    conn.send_packed_command([b"".join([commands[i][1] for i in idx])])
                    for i in idx:
                        try:
                            replies[i] = conn.read_response()
                        except redis_lib.ResponseError as exc:
                            replies[i] = exc
                except BaseException:
                    conn.disconnect()  # a half-read pipeline must not be left on a pooled connection
                    raise
                finally:
                    pool.release(conn)
                missing = [i for i in idx if isinstance(replies[i], redis_lib.exceptions.NoScriptError)]
                if missing and script is not None:
                    client.script_load(script)
                redirected = [i for i in idx if isinstance(replies[i], _NOT_RUN)]
                refresh = refresh or bool(redirected)
                again += missing + redirected
            if not again or attempt == 2:
                break
            if refresh and self._nodes:
                self.r.nodes_manager.initialize()
            todo = sorted(again)
        return replies

    def _group_by_slot(self, keys: Sequence[bytes]) -> list[tuple[int, np.ndarray]]:
        """``(slot, indexes into keys)`` per slot, at most ``chunk`` indexes each."""
        slots = np.fromiter(map(key_slot, keys), np.int64, len(keys))
        order = np.argsort(slots, kind="stable")
        cuts = np.flatnonzero(np.diff(slots[order])) + 1
        out = []
        for idx in np.split(order, cuts) if len(keys) else []:
            for j in range(0, len(idx), self.chunk):
                out.append((int(slots[idx[0]]), idx[j : j + self.chunk]))
        return out

    def _load_cluster(self, keys: Sequence[bytes]) -> Stored:
        replies = self._call(lambda: self._send([(key_slot(k), _pack((b"GET", k))) for k in keys]))
        bad = [r for r in replies if isinstance(r, Exception)]
        if bad:
            raise StoreUnavailable(f"Redis state store unavailable: {bad[0]}", retry_after_s=1.0)
        sizes = np.fromiter((len(v) if v is not None else 0 for v in replies), np.int64, len(replies))
        return Stored.parse(sizes, b"".join([v for v in replies if v]))

    def _save_cluster(self, keys: Sequence[bytes], heads: Sequence[bytes], values: Sequence[bytes]) -> np.ndarray:
        head = [b"%d" % self.ttl_ms, b"%d" % len(self.prefix.encode())]
        src, sha = self._scripts["save"]
        groups = self._group_by_slot(keys)
        commands = []
        for slot, idx in groups:
            group = idx.tolist()
            commands.append((slot, _pack([b"EVALSHA", sha.encode(), b"%d" % (len(group) + 1),
                                          self._slot_due_key(slot), *[keys[i] for i in group], *head,
                                          *[x for i in group for x in (heads[i], values[i])]])))
        replies = self._call(lambda: self._send(commands, script=src))
        won = np.zeros(len(keys), bool)
        for (_slot, idx), reply in zip(groups, replies, strict=True):
            if isinstance(reply, _NOT_RUN):
                continue  # not saved: recomputed from a fresh load, like a lost compare-and-set
            if isinstance(reply, Exception):
                raise StateError(f"Redis state store error: {reply}")
            won[idx] = np.frombuffer(reply, np.uint8) == ord("1")
        return won

    # -- places ---------------------------------------------------------------------------

    def place_ids(self, keys: Sequence[str]) -> list[int]:
        keys = list(keys)
        out: list[int] = []
        for i in range(0, len(keys), 1000):
            part = keys[i : i + 1000]
            out.extend(int(x) for x in self._call(lambda p=part: self._places_script(
                keys=[f"{self.prefix}:{{places}}", f"{self.prefix}:{{places}}:seq"], args=p)))
        return out

    def _known_places(self, places: PlaceTable, ids: np.ndarray) -> None:
        """Make sure ``places`` knows every id found in loaded state (another process may have made it)."""
        if not len(ids):
            return
        top = int(ids.max())
        if top < len(places) and all(places.keys[i] is not None for i in np.unique(ids).tolist()):
            return
        table = self._call(lambda: self.r.hgetall(f"{self.prefix}:{{places}}"))
        new = [(k.decode(), int(v)) for k, v in table.items() if k.decode() not in places.ids]
        if new:
            places.add_keys([k for k, _ in new], [v for _, v in new])

    # -- devices: load, decode, encode, save ---------------------------------------------------

    def resolve(self, device_ids: np.ndarray) -> Resolved:
        local = dict(zip(dict.fromkeys(device_ids), count()))
        codes = np.fromiter(map(local.__getitem__, device_ids), np.int64, len(device_ids))
        names = np.empty(len(local), dtype=object)
        names[:] = list(local)
        return Resolved(codes, names)

    def _load(self, names: Sequence[str], keys: Sequence[bytes] | None = None) -> Stored:
        """The stored state of each device, one script call per ``chunk`` devices."""
        keys = self._st_keys(names) if keys is None else keys
        if self.cluster:
            return self._load_cluster(keys)
        sizes: list[np.ndarray] = []
        blobs: list[bytes] = []
        for i in range(0, len(keys), self.chunk):
            size_text, blob = self._call(lambda k=keys[i : i + self.chunk]: self._script("load", k, ()))
            sizes.append(np.array(size_text.split(b","), np.int64))
            blobs.append(blob)
        return Stored.parse(np.concatenate(sizes) if sizes else np.zeros(0, np.int64), b"".join(blobs))

    def _decode(self, stored: Stored, places: PlaceTable, spare: int) -> PresenceState:
        """A state table for the loaded devices (index i = device i of ``stored``) with ``spare`` free records."""
        d = len(stored)
        buf, offsets, has = stored.buf, stored.start, stored.length > 0
        hdr = np.zeros(d, HEADER)
        hdr["last"] = -np.inf
        if has.any():
            idx = offsets[has][:, None] + np.arange(HEADER.itemsize)
            hdr[has] = buf[idx].copy().view(HEADER)[:, 0]
        counts = hdr["n"].astype(np.int64)
        if (stored.length[has] != HEADER.itemsize + counts[has] * RECORD.itemsize).any():
            raise StateError("a presence state in Redis has the wrong size for its visit count: it was written "
                             "by another version of proximity; use a new key prefix (or flush the old one)")
        n_rec = int(counts.sum())
        state = PresenceState(d, 0)
        state.d_last[:] = hdr["last"]
        state.grow_records(n_rec + spare)
        if n_rec:
            rec_starts = (offsets + HEADER.itemsize)[counts > 0]
            per = counts[counts > 0]
            owner = np.repeat(np.flatnonzero(counts > 0), per)
            first = np.zeros(len(per), np.int64)
            np.cumsum(per[:-1], out=first[1:])
            k_in = np.arange(n_rec) - np.repeat(first, per)
            byte0 = np.repeat(rec_starts, per) + k_in * RECORD.itemsize
            recs = buf[byte0[:, None] + np.arange(RECORD.itemsize)].copy().view(RECORD)[:, 0]
            # the first n_rec records of the fresh pool become the loaded visits
            slots = np.arange(n_rec, dtype=np.int32)
            state.meta[0] = n_rec if n_rec < len(state.r_place) else -1
            state.meta[1] -= n_rec
            state.r_place[slots] = recs["place"]
            state.r_dev[slots] = owner
            state.r_enter[slots] = recs["enter"]
            state.r_gps[slots] = recs["gps"]
            state.r_bcn[slots] = recs["bcn"]
            state.r_mask[slots] = recs["mask"]
            state.r_src[slots] = recs["src"]
            state.r_conf[slots] = recs["conf"]
            state.r_miss[slots] = recs["miss"]
            state.r_tent[slots] = recs["tent"]
            last_of_dev = np.r_[owner[1:] != owner[:-1], True]
            state.r_next[slots] = np.where(last_of_dev, -1, slots + 1)
            state.d_head[np.flatnonzero(counts > 0)] = first.astype(np.int32)
            self._known_places(places, recs["place"])
        return state

    def _encode(self, state: PresenceState) -> Stored:
        """The binary state (without version) of every device of ``state``; length 0 for a device with nothing."""
        n = state.n_devices
        live = np.flatnonzero(state.r_dev >= 0)
        owner = state.r_dev[live]
        order = np.argsort(owner, kind="stable")
        live, owner = live[order], owner[order]
        counts = np.bincount(owner, minlength=n).astype(np.int64)
        recs = np.empty(len(live), RECORD)
        recs["place"] = state.r_place[live]
        recs["enter"] = state.r_enter[live]
        recs["gps"] = state.r_gps[live]
        recs["bcn"] = state.r_bcn[live]
        recs["mask"] = state.r_mask[live]
        recs["src"] = state.r_src[live]
        recs["conf"] = state.r_conf[live]
        recs["miss"] = state.r_miss[live]
        recs["tent"] = state.r_tent[live]
        hdr = np.empty(n, HEADER)
        hdr["last"] = state.d_last
        hdr["n"] = counts
        length = np.where((counts > 0) | np.isfinite(state.d_last), HEADER.itemsize + counts * RECORD.itemsize, 0)
        start = np.zeros(n, np.int64)
        np.cumsum(length[:-1], out=start[1:])
        buf = np.zeros(int(length.sum()), np.uint8)
        kept = length > 0
        buf[(start[kept][:, None] + np.arange(HEADER.itemsize)).ravel()] = hdr[kept].view(np.uint8)
        if len(live):
            first = np.zeros(n, np.int64)
            np.cumsum(counts[:-1], out=first[1:])
            k_in = np.arange(len(live)) - first[owner]
            byte0 = start[owner] + HEADER.itemsize + k_in * RECORD.itemsize
            buf[(byte0[:, None] + np.arange(RECORD.itemsize)).ravel()] = recs.view(np.uint8)
        return Stored(np.zeros(n, np.int64), buf, start, length)

    def _save_all(self, keys: Sequence[bytes], heads: Sequence[bytes], values: Sequence[bytes]) -> np.ndarray:
        """Compare-and-set devices on their version; returns which ones won (see ``_SAVE``).

        ``heads[i]`` is ``b"<expected version>"`` plus ``b" <due time>"`` (set the device's
        score in the due set) or ``b" -"`` (remove it from the due set); ``values[i]`` is
        the new stored value, ``b""`` (delete) or ``b"="`` (leave the state as it is).
        """
        if self.cluster:
            return self._save_cluster(keys, heads, values)
        won: list[np.ndarray] = []
        head = [b"%d" % self.ttl_ms, b"%d" % len(self.prefix.encode())]
        due_key = self.due_key.encode()
        for i in range(0, len(keys), self.chunk):
            k = [due_key, *keys[i : i + self.chunk]]
            args = [*head, *(x for pair in zip(heads[i : i + self.chunk], values[i : i + self.chunk], strict=True)
                             for x in pair)]
            reply = self._call(lambda k=k, a=args: self._script("save", k, a))
            won.append(np.frombuffer(reply, np.uint8) == ord("1"))
        return np.concatenate(won) if won else np.zeros(0, bool)

    def _run(
        self,
        names: np.ndarray,
        step: Callable[[PresenceState, np.ndarray], tuple[Transitions, np.ndarray]],
        places: PlaceTable,
        params: PresenceParams,
        spare: Callable[[np.ndarray], int],
        *,
        refresh_due: bool = False,
    ) -> Transitions:
        """Load ``names``, run ``step(state, pending)`` (-> events, which devices to delete), save by CAS; retry losers.

        ``pending`` are the indexes into ``names`` of the devices in the state table
        (state device i is ``names[pending[i]]``). Event ``dev`` fields come back
        as indexes into ``names``.

        The due set holds, per device, a time *at or before* the first one at which
        ``advance`` has work for it. A save moves it only when that comes earlier
        (a new visit): a ping that merely pushes a debounce or the TTL later leaves it,
        and ``advance`` (``refresh_due``) sets the exact time on the devices it finds
        with nothing to do yet. So the common save is one ``GET`` and one ``SET``.
        """
        pending = np.arange(len(names))
        parts: list[Transitions] = []
        all_keys = self._st_keys(names.tolist())
        for _attempt in range(self.max_retries + 1):
            sub = pending.tolist()
            keys = [all_keys[i] for i in sub]
            old = self._load((), keys)
            state = self._decode(old, places, spare(pending))
            local = np.arange(len(sub))
            due_before = next_due(state, local, params)
            tr, delete = step(state, pending)
            new = self._encode(state)
            due = next_due(state, local, params)
            has_old = old.version > 0
            gone = delete | (new.length == 0)
            changed = _changed(new, old)
            drop = gone & (has_old | delete | refresh_due)
            write = ~gone & changed
            set_due = write & (~has_old | (due < due_before) | refresh_due)
            touch = ~gone & ~changed & refresh_due
            save = np.flatnonzero(drop | write | touch)
            won = np.ones(len(sub), bool)
            self.saved += len(save)
            if len(save):
                body = new.buf.tobytes()
                start, end = new.start.tolist(), (new.start + new.length).tolist()
                ver = old.version.tolist()
                due_l = due.tolist()
                flags = (drop.astype(np.int8) + 2 * set_due + 4 * touch).tolist()
                heads, values = [], []
                for i in save.tolist():
                    f = flags[i]
                    if f & 1:
                        heads.append(b"%d -" % ver[i])
                        values.append(b"")
                    else:
                        heads.append(b"%d %r" % (ver[i], due_l[i]) if f & 6 else b"%d" % ver[i])
                        values.append(b"=" if f & 4 else b"%d|%b" % (ver[i] + 1, body[start[i] : end[i]]))
                res = self._save_all([keys[i] for i in save.tolist()], heads, values)
                won[save[~res]] = False
                gone_ids = [names[sub[i]] for i in save[res & delete[save]].tolist()]
                if gone_ids:
                    self._call(lambda g=gone_ids: self.r.delete(*[self._info(x) for x in g]))
            keep = won[tr.dev] if len(tr) else np.zeros(0, bool)
            kept = Transitions(*(a[keep] for a in tr._buffers()), status=tr.status)
            kept.dev = pending[kept.dev]
            parts.append(kept)
            if won.all():
                return Transitions.concat(parts)
            self.retries += int((~won).sum())
            pending = pending[~won]
        raise StateError(f"gave up after {self.max_retries} conflicting updates of {len(pending)} device(s)")

    # -- the store interface ---------------------------------------------------------------

    def apply(self, resolved: Resolved, ev: Evidence, places: PlaceTable, params: PresenceParams) -> Transitions:
        names = resolved.names
        status = np.zeros(len(ev), np.int8)

        def step(state: PresenceState, pending: np.ndarray) -> tuple[Transitions, np.ndarray]:
            in_batch = np.zeros(len(names), bool)
            in_batch[pending] = True
            idx = np.flatnonzero(in_batch[ev.dev])
            sub = ev.take_devices(in_batch)
            pos = np.full(len(names), -1, np.int64)
            pos[pending] = np.arange(len(pending))
            sub.dev = pos[sub.dev]
            tr = apply_evidence(state, sub, places, params)
            status[idx] = tr.status
            named = tr.ev >= 0
            tr.ev[named] = idx[tr.ev[named]]
            return tr, np.zeros(len(pending), bool)

        tr = self._run(names, step, places, params, lambda p: 64)
        tr.status = status
        return tr

    def _due_pages(self, now: float, slots: Sequence[int]) -> tuple[list[bytes], list[int]]:
        """Cluster mode: the first ``chunk`` devices due before ``now`` in each slot's due set; which pages were full."""
        if self._scan_heads is None:
            self._scan_heads = [_pack((b"ZRANGEBYSCORE", self._slot_due_key(s), b"-inf"))[4:] for s in range(SLOTS)]
        heads = self._scan_heads
        tail = _pack((b"(%r" % float(now), b"LIMIT", b"0", b"%d" % self.chunk))[4:]  # the rest of the command
        replies = self._call(lambda: self._send([(s, b"*7\r\n" + heads[s] + tail) for s in slots]))
        bad = [r for r in replies if isinstance(r, Exception)]
        if bad:
            raise StoreUnavailable(f"Redis state store unavailable: {bad[0]}", retry_after_s=1.0)
        full = [s for s, r in zip(slots, replies, strict=True) if len(r) >= self.chunk]
        return [x for r in replies for x in r], full

    def advance(self, now: float, places: PlaceTable, params: PresenceParams) -> tuple[Transitions, np.ndarray]:
        if self.cluster:
            return self._advance_cluster(now, places, params)
        parts: list[Transitions] = []
        all_names: list[np.ndarray] = []
        offset = 0
        for _round in range(10_000):
            due = self._call(lambda: self.r.zrangebyscore(self.due_key, "-inf", f"({float(now)!r}",
                                                          start=0, num=self.chunk))
            if not due:
                break
            names = np.empty(len(due), dtype=object)
            names[:] = [x.decode() for x in due]

            def step(state: PresenceState, pending: np.ndarray) -> tuple[Transitions, np.ndarray]:
                return advance_state(state, np.arange(state.n_devices), now, params)

            saved = self.saved
            tr = self._run(names, step, places, params, lambda p: 16, refresh_due=True)
            tr.dev = tr.dev + offset
            offset += len(names)
            parts.append(tr)
            all_names.append(names)
            if len(due) < self.chunk or self.saved == saved:
                break
        names_all = np.concatenate(all_names) if all_names else np.empty(0, dtype=object)
        return Transitions.concat(parts), names_all

    def _advance_cluster(self, now: float, places: PlaceTable, params: PresenceParams) -> tuple[Transitions, np.ndarray]:
        """``advance`` over every slot's due set: a round reads a page of each (the first round all 16384
        slots, later rounds only those whose page was full) and runs the due devices ``chunk`` at a time."""
        parts: list[Transitions] = []
        all_names: list[np.ndarray] = []
        offset = 0
        slots: Sequence[int] = range(SLOTS)

        def step(state: PresenceState, pending: np.ndarray) -> tuple[Transitions, np.ndarray]:
            return advance_state(state, np.arange(state.n_devices), now, params)

        for _round in range(10_000):
            due, full = self._due_pages(now, slots)
            if not due:
                break
            saved = self.saved
            for i in range(0, len(due), self.chunk):
                names = np.empty(len(due[i : i + self.chunk]), dtype=object)
                names[:] = [x.decode() for x in due[i : i + self.chunk]]
                tr = self._run(names, step, places, params, lambda p: 16, refresh_due=True)
                tr.dev = tr.dev + offset
                offset += len(names)
                parts.append(tr)
                all_names.append(names)
            if not full or self.saved == saved:
                break
            slots = full
        names_all = np.concatenate(all_names) if all_names else np.empty(0, dtype=object)
        return Transitions.concat(parts), names_all

    def forget(self, device_id: str, places: PlaceTable, params: PresenceParams) -> tuple[Transitions, np.ndarray]:
        names = np.empty(1, dtype=object)
        names[0] = device_id

        def step(state: PresenceState, pending: np.ndarray) -> tuple[Transitions, np.ndarray]:
            return advance_state(state, np.arange(state.n_devices), 0.0, params, forget=True)

        tr = self._run(names, step, places, params, lambda p: 16)
        self._call(lambda: self.r.delete(self._info(device_id), self._st(device_id)))
        return tr, names

    def update_info(self, device_ids: np.ndarray, attrs: np.ndarray, timezone: np.ndarray) -> None:
        has = (attrs != None) | (timezone != None)  # noqa: E711
        if not has.any():
            return
        latest: dict[str, dict[str, str]] = {}
        for d, a, z in zip(device_ids[has], attrs[has], timezone[has], strict=True):
            fields = latest.setdefault(d, {})
            if a is not None:
                fields["a"] = json.dumps(a, sort_keys=True, default=str)
            if z is not None:
                fields["z"] = z

        def write() -> None:
            pipe = self.r.pipeline(transaction=False)
            for d, fields in latest.items():
                pipe.hset(self._info(d), mapping=fields)
                pipe.pexpire(self._info(d), self.ttl_ms)
            pipe.execute()

        self._call(write)

    def set_opt_out(self, device_id: str, flag: bool) -> None:
        key = self._info(device_id)
        if flag:
            self._call(lambda: (self.r.hset(key, "o", "1"), self.r.pexpire(key, self.ttl_ms)))
        else:
            self._call(lambda: self.r.hdel(key, "o"))

    def devices(self, device_ids: Sequence[str]) -> dict[str, Device]:
        ids = list(device_ids)

        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for d in ids:
                pipe.hmget(self._info(d), "a", "z", "o")
            return list(pipe.execute())

        out = {}
        for d, (a, z, o) in zip(ids, self._call(read) if ids else [], strict=True):
            out[d] = Device(d, json.loads(a) if a else {}, z.decode() if z else None, bool(o))
        return out

    def snapshot(self, device_id: str, places: PlaceTable) -> dict[str, Any] | None:
        stored = self._load([device_id])
        if not stored.version[0]:
            return None
        state = self._decode(stored, places, 0)
        out = visit_snapshot(state, 0, places)
        out["version"] = int(stored.version[0])
        return out

    def close(self) -> None:
        if not self._own:
            return
        nodes = []
        if self._nodes:  # RedisCluster.close() leaves the startup nodes' connections open
            manager = self.r.nodes_manager
            nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values(),
                     *getattr(self.r, "_proximity_seeds", [])]
        self.r.close()
        for node in nodes:
            if node.redis_connection is not None:
                node.redis_connection.close()


__all__ = ["HEADER", "RECORD", "RedisStateStore"]
