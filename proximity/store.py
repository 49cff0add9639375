"""Presence state stores: one interface, two implementations (memory, the embedded default; Redis).

A store only loads and saves: the transitions are computed by
:func:`proximity.presence.apply_evidence` for both. A store also hands out the
place ids (so processes sharing a Redis agree on them) and keeps what the
engine knows of each device besides its visits: the latest ``attrs`` and
``timezone`` sent by the SDK, and the opt-out flag.

Use :class:`MemoryStore` (default) or :func:`RedisStore` (``redis://`` URL or
client, a key prefix, a TTL; ``cluster=True`` for Redis Cluster); see
:mod:`proximity._redis.store` for its keys.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

import proximity._kernels_ids as K
import proximity.journal as _journal
from proxbase.jit import compiled
from proximity._ids_direct import intern_ids_small
from proximity.events import Device
from proximity.journal import Journal
from proximity.presence import (
    Evidence,
    PlaceTable,
    PresenceParams,
    PresenceState,
    Resolved,
    Transitions,
    advance_state,
    apply_evidence,
    visit_snapshot,
)
from proximity.track_rows import TrackRows
from proximity.tracked import Built, Tracked

if TYPE_CHECKING:
    from proximity._redis import RedisStateStore


class StateStore(Protocol):
    """Where presence state lives. Implementations: :class:`MemoryStore`, :func:`RedisStore`."""

    def place_ids(self, keys: Sequence[str]) -> list[int]:
        """Stable integer ids for place keys (created when new)."""

    def resolve(self, device_ids: np.ndarray) -> Resolved:
        """Handles for a batch's device ids (object array)."""

    def apply(self, resolved: Resolved, ev: Evidence, places: PlaceTable, params: PresenceParams,
              journal: Journal | None = None) -> Transitions:
        """Apply sorted evidence (``ev.dev`` are handles from ``resolved``) atomically per device; with a
        ``journal``, each device's transitions are kept with its state, and a device this batch already
        committed is answered from the journal (see :mod:`proximity.journal`)."""

    def apply_tracked(self, resolved: Resolved, tracked: Tracked, places: PlaceTable, params: PresenceParams,
                      journal: Journal | None = None) -> tuple[Transitions, Built]:
        """Like :meth:`apply` for a beacon batch whose evidence ``tracked.build`` makes from the devices'
        filter state, which the store keeps with their presence state (see :mod:`proximity.tracked`).
        Returns the transitions (``ev`` indexes the returned ``Built.ev``) and the evidence."""

    #: whether the last :meth:`advance` given a ``limit`` left devices due (the next call runs them)
    due_left: bool

    def advance(self, now: float, places: PlaceTable, params: PresenceParams,
                limit: int | None = None) -> tuple[Transitions, np.ndarray]:
        """Debounce exits due by ``now`` and TTL expiry; returns events and the names array for ``ev.dev``.
        With ``limit``, at most that many due devices are run, and :attr:`due_left` says whether others were
        due (an exit's time is its debounce's end, not ``now``: a device run by a later call gets the same
        events)."""

    def forget(self, device_id: str, places: PlaceTable, params: PresenceParams) -> tuple[Transitions, np.ndarray]:
        """Erase a device (its visits end with cause ``forget``); returns those exits."""

    def update_info(self, device_ids: np.ndarray, attrs: np.ndarray, timezone: np.ndarray) -> None:
        """Remember the latest non-null ``attrs``/``timezone`` per device (rows in time order)."""

    def set_opt_out(self, device_id: str, flag: bool) -> None: ...

    def devices(self, device_ids: Sequence[str]) -> dict[str, Device]:
        """What is known of these devices (attrs, time zone, opt-out)."""

    def snapshot(self, device_id: str, places: PlaceTable,
                 params: PresenceParams | None = None) -> dict[str, Any] | None:
        """A device's visits (with their probability under ``params``) and last evidence time, or ``None``."""

    def compile(self, params: PresenceParams) -> None:
        """Compile, or load from the kernel cache, the kernels this store's own work runs (beyond the engine's
        transition and matching): a server calls it before it says it is ready."""

    def close(self) -> None: ...


class DeviceIds:
    """Device id -> small integer handle, in numpy arrays: no Python object per device.

    Ids are kept as zero-padded rows of their UTF-8 bytes (the width grows with the
    longest id seen) in an open-addressing hash table probed by numba kernels
    (:mod:`proximity._kernels_ids`; a small batch with few new ids in numpy, the same table
    bit for bit: :mod:`proximity._ids_direct`). A batch is turned into one byte buffer (a
    ``join`` and an ``encode`` for ASCII ids) and interned in one call. Freed handles are reused. ``names(handles)``
    gives the ids back as ``str``.
    """

    def __init__(self, capacity: int = 1024, width: int = 16) -> None:
        self.keys = np.zeros((max(capacity, 16), max(width, 1)), np.uint8)
        self.key_hash = np.zeros(len(self.keys), np.uint64)
        self.free = np.zeros(len(self.keys), np.int64)
        self.slots = np.full(_pow2(2 * len(self.keys)), -1, np.int64)
        self.meta = np.zeros(4, np.int64)  # next fresh handle, free-stack size, live ids, used slots

    def __len__(self) -> int:
        return int(self.meta[2])

    @property
    def capacity(self) -> int:
        return len(self.keys)

    @staticmethod
    def _bytes(device_ids: np.ndarray | Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ids' UTF-8 bytes in one buffer, with each id's start and length (one ``join``, one ``encode``)."""
        ids = device_ids.tolist() if isinstance(device_ids, np.ndarray) else list(device_ids)
        n = len(ids)
        buf = np.frombuffer("\x00".join(ids).encode("utf-8", "surrogatepass"), np.uint8)
        cut = np.flatnonzero(buf == 0)
        if len(cut) != max(n - 1, 0):  # an id holds a NUL character: measure each one
            encoded = [x.encode("utf-8", "surrogatepass") for x in ids]
            buf = np.frombuffer(b"".join(encoded), np.uint8)
            lens = np.fromiter(map(len, encoded), np.int64, n)
            starts = np.zeros(n, np.int64)
            np.cumsum(lens[:-1], out=starts[1:])
            return buf, starts, lens
        starts = np.empty(n, np.int64)
        lens = np.empty(n, np.int64)
        if n:
            starts[0] = 0
            starts[1:] = cut + 1
            lens[:-1] = cut - starts[:-1]
            lens[-1] = len(buf) - starts[-1]
        return buf, starts, lens

    def _grow(self, width: int) -> None:
        """Room for at least one more id of ``width`` bytes: more handles, wider rows or more slots."""
        cap, w = len(self.keys), self.keys.shape[1]
        full = int(self.meta[1]) == 0 and int(self.meta[0]) >= cap
        if full or width > w:
            new_cap = 2 * cap if full else cap
            keys = np.zeros((new_cap, max(width, w)), np.uint8)
            keys[:cap, :w] = self.keys
            self.keys = keys
            for name in ("key_hash", "free"):
                old = getattr(self, name)
                grown = np.zeros(new_cap, old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)
        if 2 * (int(self.meta[3]) + 1) > len(self.slots) or len(self.slots) < 2 * len(self.keys):
            slots = np.full(_pow2(max(2 * len(self.keys), 4 * (int(self.meta[2]) + 1))), -1, np.int64)
            self.meta[3] = K.rehash_ids(self.slots, slots, self.key_hash)
            self.slots = slots

    def _run(self, device_ids: np.ndarray | Sequence[str], insert: bool) -> np.ndarray:
        buf, starts, lens = self._bytes(device_ids)
        out = np.empty(len(starts), np.int64)
        i = 0
        while True:
            args = (buf, starts, lens, i, insert, self.slots, self.keys, self.key_hash, self.meta, self.free, out)
            # a small batch in numpy while the kernel has no machine code yet (nothing to compile on a first
            # run); the kernel once it has (a server compiles it before it is ready: :meth:`compile`)
            small = None if compiled(K.intern_ids) else intern_ids_small(*args)
            i = K.intern_ids(*args) if small is None else small
            if i >= len(starts):
                return out
            self._grow(int(lens[i]))

    def compile(self) -> None:
        """Compile the ``intern_ids`` kernel (or load it from the kernel cache): every batch after is interned
        by it, small ones too (a server calls it before it says it is ready)."""
        buf, starts, lens = self._bytes([])
        K.intern_ids(buf, starts, lens, 0, False, self.slots, self.keys, self.key_hash, self.meta, self.free,
                     np.empty(0, np.int64))

    def intern(self, device_ids: np.ndarray | Sequence[str]) -> np.ndarray:
        """Handles for the ids, creating the unknown ones."""
        return self._run(device_ids, True)

    def find(self, device_ids: np.ndarray | Sequence[str]) -> np.ndarray:
        """Handles for the ids, -1 for unknown ones."""
        return self._run(device_ids, False)

    def get(self, device_id: str) -> int | None:
        h = int(self.find([device_id])[0])
        return None if h < 0 else h

    def remove(self, handles: np.ndarray) -> None:
        K.remove_ids(np.asarray(handles, np.int64), self.slots, self.keys, self.key_hash, self.meta, self.free)

    def names(self, handles: np.ndarray) -> np.ndarray:
        """The ids of these handles (object array of ``str``)."""
        rows = np.ascontiguousarray(self.keys[np.asarray(handles, np.int64)])
        raw = rows.view(f"S{self.keys.shape[1]}").ravel()  # numpy drops the zero padding
        out = np.empty(len(raw), dtype=object)
        out[:] = [x.decode("utf-8", "surrogatepass") for x in raw.tolist()]
        return out

    def in_use(self) -> np.ndarray:
        """One bool per handle handed out so far (below ``meta[0]``): whether it names an id now. A handle is
        taken from the free stack, else the next fresh one, and a removed one goes back on the stack, so this
        costs one pass over the handles and the stack (not a pass over the hash slots and a sort)."""
        used = np.ones(int(self.meta[0]), np.bool_)
        used[self.free[: int(self.meta[1])]] = False
        return used

    def nbytes(self) -> int:
        return self.keys.nbytes + self.key_hash.nbytes + self.free.nbytes + self.slots.nbytes


class _Names:
    """``names[handles]`` -> ids, read from a :class:`DeviceIds` (what :class:`Resolved` needs)."""

    def __init__(self, ids: DeviceIds) -> None:
        self._ids = ids

    def __getitem__(self, handles: Any) -> np.ndarray:
        return self._ids.names(np.atleast_1d(np.asarray(handles, np.int64)))


def _pow2(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())


class MemoryStore:
    """In-process state: a device table and a pool of visit records in numpy arrays.

    Device ids are interned to integer handles by :class:`DeviceIds` (a numba hash
    table over the ids' UTF-8 bytes), never a bytecode loop per ping. A device
    outside every place costs its id (one byte per ASCII character, padded to the
    longest id), 32 to 48 bytes of hash table and 44 bytes of device table (with the last fix); a visit
    record costs 52 bytes. Arrays grow by doubling, so up to half of that can be
    headroom. See :meth:`bytes_per_device`.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.state = PresenceState(capacity, 64)
        self.ids = DeviceIds(capacity)
        self._names = _Names(self.ids)
        self._places: dict[str, int] = {}
        self._attrs: dict[str, dict[str, Any]] = {}
        self._tz: dict[str, str] = {}
        self._opt_out: set[str] = set()
        self._journals: OrderedDict[str, tuple[float, dict[str, bytes]]] = OrderedDict()
        self._track = TrackRows()  # the beacon filters' state, rows per device handle
        self.max_journals = 4096  # batches whose journal is kept (a failure after apply is a bug in memory)
        self.due_left = False  # (see StateStore.advance)

    def __len__(self) -> int:
        return len(self.ids)

    # -- places and devices ---------------------------------------------------------------

    def place_ids(self, keys: Sequence[str]) -> list[int]:
        places = self._places
        return [places.setdefault(k, len(places)) for k in keys]

    def resolve(self, device_ids: np.ndarray) -> Resolved:
        codes = self.ids.intern(device_ids)
        if self.ids.capacity > self.state.n_devices:
            self.state.grow_devices(self.ids.capacity)
        return Resolved(codes, self._names)

    # -- transitions ----------------------------------------------------------------------

    def apply(self, resolved: Resolved, ev: Evidence, places: PlaceTable, params: PresenceParams,
              journal: Journal | None = None) -> Transitions:
        if journal is None:
            return apply_evidence(self.state, ev, places, params)
        now = time.monotonic()
        while self._journals and next(iter(self._journals.values()))[0] <= now:
            self._journals.popitem(last=False)
        while len(self._journals) >= self.max_journals:
            self._journals.popitem(last=False)
        kept = self._journals.setdefault(journal.key, (now + journal.ttl_s, {}))[1]
        handles = np.unique(ev.dev)
        names = self._names[handles].tolist() if len(handles) else []
        done = np.fromiter((n in kept for n in names), bool, len(names))
        mask = np.zeros(self.state.n_devices, bool)
        mask[handles[~done]] = True
        idx = np.flatnonzero(mask[ev.dev])
        tr = apply_evidence(self.state, ev.take_devices(mask), places, params)
        named = tr.ev >= 0
        tr.ev[named] = idx[tr.ev[named]]
        status = np.zeros(len(ev), np.int8)
        status[idx] = tr.status
        fresh = handles[~done]
        local = tr.where(np.ones(len(tr), bool))
        local.dev = np.searchsorted(fresh, tr.dev)
        for name, entry in zip([n for n, d in zip(names, done.tolist(), strict=True) if not d],
                               _journal.encode(local, len(fresh), journal), strict=True):
            kept[name] = entry
        old = [kept[n] for n, d in zip(names, done.tolist(), strict=True) if d]
        parts = [tr, _journal.replay(handles[done], old, len(ev), journal)] if old else [tr]
        out = Transitions.concat(parts)
        out.status = status
        return out

    def apply_tracked(self, resolved: Resolved, tracked: Tracked, places: PlaceTable, params: PresenceParams,
                      journal: Journal | None = None) -> tuple[Transitions, Built]:
        handles = np.unique(resolved.codes)
        if journal is not None and journal.key in self._journals and len(handles):  # committed: state stays
            kept = self._journals[journal.key][1]
            names = self._names[handles].tolist()
            done = handles[np.fromiter((n in kept for n in names), bool, len(names))]
        else:
            done = np.zeros(0, np.int64)
        built = tracked.build(self._track.take(handles))
        if journal is not None:
            journal.proximity, journal.distance = built.prox, built.dist
        tr = self.apply(resolved, built.ev, places, params, journal)
        new = built.state
        if len(done):
            new = new.take(~np.isin(new.dev, done))
        self._track.replace(np.setdiff1d(handles, done), new)
        return tr, built

    def advance(self, now: float, places: PlaceTable, params: PresenceParams,
                limit: int | None = None) -> tuple[Transitions, np.ndarray]:
        st = self.state
        live = st.r_dev >= 0
        due = np.maximum(st.r_gps + params.gps_debounce_s, st.r_bcn + params.beacon_debounce_s)
        with_exits = st.r_dev[live & (due < now)]
        used = self.ids.in_use()  # (a pass over 1M devices: 3 ms of CPU; 17 ms from the hash slots, sorted, and a gather)
        idle = np.flatnonzero(used & (st.d_last[: len(used)] + params.ttl_s < now))
        devs = np.unique(np.concatenate([with_exits.astype(np.int64), idle]))
        self.due_left = limit is not None and len(devs) > limit
        if self.due_left:
            devs = devs[:limit]
        tr, expired = advance_state(st, devs, now, params, places=places)
        out = self._named(tr)
        self._drop(devs[expired])
        return out

    def forget(self, device_id: str, places: PlaceTable, params: PresenceParams) -> tuple[Transitions, np.ndarray]:
        h = self.ids.get(device_id)
        self._attrs.pop(device_id, None)
        self._tz.pop(device_id, None)
        self._opt_out.discard(device_id)
        if h is None:
            return Transitions.empty(0), np.empty(0, dtype=object)
        devs = np.array([h], np.int64)
        tr, _ = advance_state(self.state, devs, 0.0, params, forget=True, places=places)
        out = self._named(tr)
        self._drop(devs)
        return out

    def _named(self, tr: Transitions) -> tuple[Transitions, np.ndarray]:
        """Events with ``dev`` renumbered into a small names array (safe to keep after handles are freed)."""
        uniq, inv = np.unique(tr.dev, return_inverse=True)
        tr.dev = inv.astype(np.int64)
        return tr, self._names[uniq]

    def _drop(self, handles: np.ndarray) -> None:
        if not len(handles):
            return
        names = self.ids.names(handles).tolist()
        deque(map(self._attrs.pop, names, repeat(None)), maxlen=0)
        deque(map(self._tz.pop, names, repeat(None)), maxlen=0)
        self.ids.remove(handles)
        self.state.reset_devices(handles)
        self._track.drop(handles)

    # -- device facts ---------------------------------------------------------------------

    def update_info(self, device_ids: np.ndarray, attrs: np.ndarray, timezone: np.ndarray) -> None:
        has = np.flatnonzero(attrs)  # rows with a (non-empty) attrs dict
        if len(has):
            self._attrs.update(zip(device_ids[has], attrs[has], strict=True))
        has = np.flatnonzero(timezone)
        if len(has):
            self._tz.update(zip(device_ids[has], timezone[has], strict=True))

    def set_opt_out(self, device_id: str, flag: bool) -> None:
        if flag:
            self._opt_out.add(device_id)
        else:
            self._opt_out.discard(device_id)

    def devices(self, device_ids: Sequence[str]) -> dict[str, Device]:
        out = {}
        for d in device_ids:
            attrs = self._attrs.get(d)
            out[d] = Device(d, attrs if attrs is not None else {}, self._tz.get(d), d in self._opt_out)
        return out

    def snapshot(self, device_id: str, places: PlaceTable,
                 params: PresenceParams | None = None) -> dict[str, Any] | None:
        h = self.ids.get(device_id)
        if h is None:
            return None
        return visit_snapshot(self.state, h, places, params)

    def compile(self, params: PresenceParams) -> None:
        self.ids.compile()

    def close(self) -> None:
        pass

    # -- size -----------------------------------------------------------------------------

    def bytes_per_device(self) -> float:
        """Memory held per known device: id table, device table and visit records (attrs not counted)."""
        return (self.ids.nbytes() + self.state.nbytes()) / max(1, len(self.ids))


def RedisStore(
    redis: Any,
    *,
    prefix: str = "proximity",
    ttl_s: float = 7 * 24 * 3600.0,
    max_retries: int = 16,
    cluster: bool = False,
    groups: int | None = None,
) -> RedisStateStore:
    """A Redis-backed store: ``redis`` is a URL (``redis://host:6379/0``) or a redis-py client.

    Keys start with ``prefix`` and carry a hash tag: the device's (``{device_id}``), or with
    ``cluster=True`` its device group's; see :class:`proximity._redis.store.RedisStateStore`.

    ``cluster=True`` keeps every script call within one hash slot (per-slot due sets, one
    save call per slot group), as Redis Cluster requires. With a URL it connects through
    :class:`redis.cluster.RedisCluster` when the server is a cluster node (else it runs the
    same per-slot code on the one server); a client may be a ``RedisCluster`` or a plain
    ``Redis``. The prefix must not contain ``{`` or ``}``. ``groups``: with ``cluster=True``, the number
    of device groups (hash tags) the devices are spread over (default
    :data:`proximity._redis.layout.GROUPS`, or the environment's ``PROXIMITY_REDIS_GROUPS``, which is how
    ``proximity serve`` takes it; fixed for a prefix once written, see :mod:`proximity._redis.layout`).
    """
    from proximity._redis import RedisStateStore
    from proximity._redis.layout import GROUPS

    if groups is None:
        groups = int(os.environ.get("PROXIMITY_REDIS_GROUPS") or GROUPS)
    return RedisStateStore(redis, prefix=prefix, ttl_s=ttl_s, max_retries=max_retries, cluster=cluster, groups=groups)


def open_store(url: str | None, **options: Any) -> StateStore:
    """``None`` or ``"memory"`` -> :class:`MemoryStore`; ``redis://...`` -> :func:`RedisStore`."""
    if url is None or url == "memory":
        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, **options)
    raise ValueError(f"state store must be 'memory' or a redis:// URL, not {url!r}")


__all__ = ["DeviceIds", "MemoryStore", "RedisStore", "Resolved", "StateStore", "open_store"]
