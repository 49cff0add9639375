"""The Redis state store: presence state shared by any number of engine processes.

Keys (``P`` is the configurable prefix, ``D`` the device id; ``{D}`` is the
Redis Cluster hash tag, so a device's keys live in one slot):

- ``P:{D}:st``: the device's presence state, ``b"<version>|" + binary`` (a
  12-byte header: last evidence time, visit count; then 34 bytes per visit);
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

Not done: Redis Cluster. The keys carry hash tags, but the save script touches
the devices of a batch and the one due set together, which a cluster rejects
across slots; a cluster deployment needs per-slot due sets and one script call per slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import count
from typing import Any, TypeVar

import numpy as np
import redis as redis_lib

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
                   ("src", "u1"), ("conf", "i1")])
T = TypeVar("T")

_SAVE = """
local ttl = ARGV[1]
local out = {}
for i = 2, #KEYS do
  local j = (i - 2) * 4 + 2
  local cur = redis.call('GET', KEYS[i])
  local v = 0
  if cur then v = tonumber(string.match(cur, '^(%d+)|')) or 0 end
  if v == tonumber(ARGV[j]) then
    if ARGV[j + 1] == '' then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], ARGV[j + 1], 'PX', ttl)
    end
    if ARGV[j + 2] == '' then
      redis.call('ZREM', KEYS[1], ARGV[j + 3])
    else
      redis.call('ZADD', KEYS[1], ARGV[j + 2], ARGV[j + 3])
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
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
        if cluster:
            raise NotImplementedError("Redis Cluster is not supported yet (see proximity._redis_store)")
        self._own = isinstance(client, str)
        self.r = redis_lib.Redis.from_url(client) if isinstance(client, str) else client
        self.prefix = prefix
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.max_retries = max_retries
        self.chunk = chunk
        self.due_key = f"{prefix}:due"
        self._save = self.r.register_script(_SAVE)
        self._places_script = self.r.register_script(_PLACES)
        self.retries = 0  # compare-and-set conflicts seen (for tests and metrics)
        self.saved = 0  # device states written

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis state store unavailable: {exc}", retry_after_s=1.0) from exc
        except redis_lib.RedisError as exc:
            raise StateError(f"Redis state store error: {exc}") from exc

    def _st(self, device_id: str) -> str:
        return f"{self.prefix}:{{{device_id}}}:st"

    def _info(self, device_id: str) -> str:
        return f"{self.prefix}:{{{device_id}}}:info"

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

    def _load(self, names: Sequence[str]) -> list[bytes | None]:
        raw: list[bytes | None] = []
        for i in range(0, len(names), 2000):
            keys = [self._st(d) for d in names[i : i + 2000]]
            raw.extend(self._call(lambda k=keys: self.r.mget(k)))
        return raw

    def _decode(self, raw: list[bytes | None], places: PlaceTable,
                spare: int) -> tuple[PresenceState, list[int], list[bytes]]:
        """A state table for the loaded devices (index i = raw[i]) with ``spare`` free records; versions; blobs."""
        d = len(raw)
        versions = [0] * d
        blobs: list[bytes] = []
        for i, value in enumerate(raw):
            if value:
                v, _, blob = value.partition(b"|")
                versions[i] = int(v)
                blobs.append(blob)
            else:
                blobs.append(b"")
        lengths = np.fromiter(map(len, blobs), np.int64, d)
        has = lengths > 0
        hdr = np.zeros(d, HEADER)
        hdr["last"] = -np.inf
        buf = np.frombuffer(b"".join(blobs), np.uint8)
        offsets = np.zeros(d, np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        if has.any():
            idx = offsets[has][:, None] + np.arange(HEADER.itemsize)
            hdr[has] = buf[idx].copy().view(HEADER)[:, 0]
        counts = hdr["n"].astype(np.int64)
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
            last_of_dev = np.r_[owner[1:] != owner[:-1], True]
            state.r_next[slots] = np.where(last_of_dev, -1, slots + 1)
            state.d_head[np.flatnonzero(counts > 0)] = first.astype(np.int32)
            self._known_places(places, recs["place"])
        return state, versions, blobs

    def _encode(self, state: PresenceState, devs: np.ndarray) -> list[bytes]:
        """The binary state (without version) of each device in ``devs``; ``b""`` for a device with nothing."""
        live = np.flatnonzero(state.r_dev >= 0)
        owner = state.r_dev[live]
        order = np.argsort(owner, kind="stable")
        live, owner = live[order], owner[order]
        counts = np.bincount(owner, minlength=state.n_devices)
        recs = np.empty(len(live), RECORD)
        recs["place"] = state.r_place[live]
        recs["enter"] = state.r_enter[live]
        recs["gps"] = state.r_gps[live]
        recs["bcn"] = state.r_bcn[live]
        recs["mask"] = state.r_mask[live]
        recs["src"] = state.r_src[live]
        recs["conf"] = state.r_conf[live]
        hdr = np.empty(state.n_devices, HEADER)
        hdr["last"] = state.d_last
        hdr["n"] = counts
        hb, rb = hdr.tobytes(), recs.tobytes()
        starts = np.zeros(state.n_devices + 1, np.int64)
        np.cumsum(counts * RECORD.itemsize, out=starts[1:])
        h, r = HEADER.itemsize, starts.tolist()
        out = []
        for d in devs.tolist():
            if counts[d] == 0 and not np.isfinite(state.d_last[d]):
                out.append(b"")
            else:
                out.append(hb[d * h : (d + 1) * h] + rb[r[d] : r[d + 1]])
        return out

    def _save_all(self, names: Sequence[str], versions: Sequence[int], values: Sequence[bytes],
                  due: Sequence[float | None]) -> list[bool]:
        """Compare-and-set every device; a value of ``b""`` deletes. Returns which ones won."""
        won: list[bool] = []
        for i in range(0, len(names), self.chunk):
            keys = [self.due_key]
            args: list[Any] = [self.ttl_ms]
            for name, v, value, t in zip(names[i : i + self.chunk], versions[i : i + self.chunk],
                                         values[i : i + self.chunk], due[i : i + self.chunk], strict=True):
                keys.append(self._st(name))
                args.extend((v, (b"%d|" % (v + 1)) + value if value else b"", "" if t is None else repr(t), name))
            won.extend(bool(x) for x in self._call(lambda k=keys, a=args: self._save(keys=k, args=a)))
        return won

    def _run(
        self,
        names: np.ndarray,
        step: Callable[[PresenceState, np.ndarray], tuple[Transitions, np.ndarray]],
        places: PlaceTable,
        params: PresenceParams,
        spare: Callable[[np.ndarray], int],
    ) -> Transitions:
        """Load ``names``, run ``step(state, pending)`` (-> events, which devices to delete), save by CAS; retry losers.

        ``pending`` are the indexes into ``names`` of the devices in the state table
        (state device i is ``names[pending[i]]``). Event ``dev`` fields come back
        as indexes into ``names``.
        """
        pending = np.arange(len(names))
        parts: list[Transitions] = []
        for _attempt in range(self.max_retries + 1):
            sub = names[pending].tolist()
            state, versions, old = self._decode(self._load(sub), places, spare(pending))
            tr, delete = step(state, pending)
            local = np.arange(len(sub))
            values = self._encode(state, local)
            due = next_due(state, local, params)
            save_idx = [i for i in range(len(sub)) if (delete[i] and versions[i]) or (not delete[i] and values[i] != old[i])]
            won = np.ones(len(sub), bool)
            self.saved += len(save_idx)
            if save_idx:
                res = self._save_all(
                    [sub[i] for i in save_idx], [versions[i] for i in save_idx],
                    [b"" if delete[i] else values[i] for i in save_idx],
                    [None if delete[i] or values[i] == b"" else float(due[i]) for i in save_idx],
                )
                won[np.array(save_idx)[~np.array(res, bool)]] = False
                gone = [sub[i] for i, ok in zip(save_idx, res, strict=True) if ok and delete[i]]
                if gone:
                    self._call(lambda g=gone: self.r.delete(*[self._info(x) for x in g]))
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

    def advance(self, now: float, places: PlaceTable, params: PresenceParams) -> tuple[Transitions, np.ndarray]:
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
            tr = self._run(names, step, places, params, lambda p: 16)
            tr.dev = tr.dev + offset
            offset += len(names)
            parts.append(tr)
            all_names.append(names)
            if len(due) < self.chunk or self.saved == saved:
                break
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
        raw = self._load([device_id])
        if not raw[0]:
            return None
        state, versions, _ = self._decode(raw, places, 0)
        out = visit_snapshot(state, 0, places)
        out["version"] = versions[0]
        return out

    def close(self) -> None:
        if self._own:
            self.r.close()


__all__ = ["HEADER", "RECORD", "RedisStateStore"]
