"""The Redis state store: presence state shared by any number of engine processes.

Keys (``P`` is the configurable prefix, ``D`` the device id; where a device's state keys
are, and their hash tag, is the key layout of :mod:`proximity._redis.layout`):

- ``P:{D}:st`` (cluster: ``P:{T}:D:st``, ``T`` the tag of the device's group): the device's presence
  state, ``b"<version>|" + binary`` (see :mod:`proximity._redis.codec`); expires after ``ttl_s`` of
  wall-clock idleness;
- the same key ending in ``:tr``: the device's beacon filter state (:data:`proximity._redis.codec.TRACK`
  rows), loaded with ``:st`` when a batch of sightings is applied and written by the same ``SAVE`` call
  (see :mod:`proximity.tracked`); deleted with ``:st``;
- ``P:{D}:info``: hash of ``a`` (attrs JSON), ``z`` (time zone), ``o`` (opt-out) (:mod:`proximity._redis.info`);
- ``P:{places}``, ``P:{places}:seq``: place key -> integer id, shared by all processes;
- ``P:due``: sorted set, device id -> the earliest time ``advance`` has work for it
  (a debounce exit or the event-time TTL); cluster: ``P:due:{T}``, one per device group;
- ``P:layout`` (cluster): the key layout's marker.

One transition function for both stores, by optimistic concurrency: load the batch's devices (one ``LOAD`` script
call: ``MGET`` inside), run :func:`proximity.presence.apply_evidence`, then save every changed device with one Lua
script call (``SAVE`` in :mod:`proximity._redis.scripts`) that compare-and-sets each device on its version and
updates its due time in the same atomic step. The worker's side of a batch is numpy plus a few Python calls:
``SAVE`` takes the whole batch as a few blobs (:class:`proximity._redis.codec.SaveBlobs`), each state key is
encoded into the protocol once per batch, and replies are read by :mod:`proximity._redis.resp`, not by redis-py's
parser. Devices whose version moved (another process won) are reloaded and recomputed from their fresh state;
their events from the lost attempt are discarded, so each event is produced exactly once across processes. A batch
of at most ``chunk`` devices is saved all-or-nothing; a lost connection raises
:class:`proximity.errors.StoreUnavailable` (the request can be retried: evidence already applied is dropped as
late or re-applied idempotently).

Redis Cluster (``cluster=True``). Devices are hash-tagged by device group, so a batch is
one ``LOAD`` and one ``SAVE`` call per group it touches (its devices plus its group's due set,
its blobs cut from the batch's), pipelined per node when the client is a
``redis.cluster.RedisCluster``, every node's pipeline sent before any reply is read.
``advance`` reads the groups' due sets (one pipelined ``ZRANGEBYSCORE`` each; then only those
whose page was full). Semantics and events are those of the single-Redis mode; what changes
is the unit of atomicity: one group, not the whole chunk (a lost connection mid-batch can
leave some groups saved: the retried request then drops their evidence as already applied,
without their events). Redirections (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``)
refresh the slot map and resend what did not run; a load that still fails raises
:class:`proximity.errors.StoreUnavailable`, a save group that still fails counts as a lost
compare-and-set and is recomputed. The mode runs on a single Redis too (every slot on one
server), which is how the shared presence suite tests it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import count
from typing import Any, TypeVar

import numpy as np
import redis as redis_lib
from redis.crc import key_slot

import proximity._redis.cluster as C
import proximity._redis.codec as codec
from proxbase.redis_script import register_script
from proximity._redis.info import DeviceInfo
from proximity._redis.layout import GROUPS, Layout
from proximity._redis.scripts import (
    DROP,
    LOAD_SCRIPT,
    PLACES_SCRIPT,
    SAVE_SCRIPT,
    SET_DUE,
    TOUCH,
    WON,
    bulk,
    pack,
)
from proximity.errors import StateError, StoreUnavailable
from proximity.journal import Journal
from proximity.journal import encode as journal_encode
from proximity.journal import replay as journal_replay
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
from proximity.tracked import Built, Tracked, remap

T = TypeVar("T")
Step = Callable[[PresenceState, np.ndarray, Any], tuple[Transitions, np.ndarray, Any]]


class RedisStateStore(DeviceInfo):
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
        groups: int = GROUPS,
    ) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(f"with cluster=True the key prefix must not contain '{{' or '}}' (it would change "
                             f"the keys' hash slots): {prefix!r}")
        self._own = isinstance(client, str)
        self.r = C.connect(client, cluster) if isinstance(client, str) else client
        self.cluster = cluster
        self.layout = Layout(prefix, cluster, groups)
        self._layout_checked = False
        self.router = C.Router(self.r, prefix, cluster, self.layout.due_slots)
        if self.router.nodes and not cluster:
            raise ValueError("a RedisCluster client needs RedisStore(..., cluster=True)")
        self.prefix = prefix
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.max_retries = max_retries
        self.chunk = chunk
        self.due_key = f"{prefix}:due"  # single-Redis mode; cluster mode: due_key_of(device)
        kwargs = self.r.get_connection_kwargs() if self.router.nodes else self.r.connection_pool.connection_kwargs
        if kwargs.get("decode_responses"):
            raise ValueError("the Redis state store needs a client without decode_responses (states are binary)")
        self._places_script = register_script(self.r, PLACES_SCRIPT.src)
        self._prefetched = {}
        self.retries = 0  # compare-and-set conflicts seen (for tests and metrics)
        self.saved = 0  # device states written
        self.due_left = False  # (see proximity.store.StateStore.advance)
        self._due_slots: Sequence[int] = ()  # the due sets where the last advance found devices

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; Redis errors become :class:`StoreUnavailable` (unreachable) or :class:`StateError`."""
        try:
            return fn()
        except C.UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis state store unavailable: {exc}", retry_after_s=1.0) from exc
        except redis_lib.RedisError as exc:
            raise StateError(f"Redis state store error: {exc}") from exc

    def _send(self, commands: list[tuple[int, bytes]], script: str | None = None) -> list[Any]:
        """``(slot, packed command)`` pairs through the router (``script``: the Lua source their ``EVALSHA``
        runs); an error reply raises (unavailable when the command did not run, else :class:`StateError`)."""
        bad: list[int] = []
        replies = self._call(lambda: self.router.send(commands, script=script, errors=bad))
        if bad:
            if isinstance(replies[bad[0]], C.NOT_RUN):
                raise StoreUnavailable(f"Redis state store unavailable: {replies[bad[0]]}", retry_after_s=1.0)
            raise StateError(f"Redis state store error: {replies[bad[0]]}")
        return replies

    def check_layout(self) -> None:
        """Refuse a key prefix written in another key layout (see :mod:`proximity._redis.layout`); done once,
        before the first load."""
        if self._layout_checked:
            return

        def exists(keys: Sequence[bytes]) -> int:
            replies = self.router.send([(key_slot(k), pack((b"EXISTS", k))) for k in keys])
            bad = [r for r in replies if isinstance(r, Exception)]
            if bad:
                raise StoreUnavailable(f"Redis state store unavailable: {bad[0]}", retry_after_s=1.0)
            return sum(replies)

        self._call(lambda: self.layout.check(self.r, exists))
        self._layout_checked = True

    @staticmethod
    def _tr_keys(st_keys: Sequence[bytes]) -> list[bytes]:
        """The filter state keys of these state keys (both as protocol bulk strings: ``...:st\\r\\n``)."""
        return [k[:-4] + b"tr\r\n" for k in st_keys]

    def due_key_of(self, device_id: str) -> str:
        """The due set that lists ``device_id`` (one per hash slot with ``cluster=True``)."""
        if not self.cluster:
            return self.due_key
        return self.router.due_key(int(self.layout.state_keys([device_id])[1][0])).decode()

    # -- places ---------------------------------------------------------------------------

    def place_ids(self, keys: Sequence[str]) -> list[int]:
        keys = list(keys)
        out: list[int] = []
        for i in range(0, len(keys), 1000):
            part = keys[i : i + 1000]
            out.extend(int(x) for x in self._call(partial(
                self._places_script, keys=[f"{self.prefix}:{{places}}", f"{self.prefix}:{{places}}:seq"], args=part)))
        return out

    def _known_places(self, places: PlaceTable, ids: np.ndarray) -> None:
        """Make sure ``places`` knows every id found in loaded state (another process may have made it)."""
        if not len(ids):
            return
        # (an array lookup: scanning ``places.keys`` for a missing key cost ~0.5 ms a batch with 10k places)
        if int(ids.min()) >= 0 and int(ids.max()) < len(places) and places.known[ids].all():
            return
        table = self._call(lambda: self.r.hgetall(f"{self.prefix}:{{places}}"))
        new = [(k.decode(), int(v)) for k, v in table.items() if k.decode() not in places.ids]
        if new:
            places.add_keys([k for k, _ in new], [v for _, v in new])

    # -- devices: load, decode, save ----------------------------------------------------------

    def resolve(self, device_ids: np.ndarray) -> Resolved:
        local = dict(zip(dict.fromkeys(device_ids), count()))
        codes = np.fromiter(map(local.__getitem__, device_ids), np.int64, len(device_ids))
        names = np.empty(len(local), dtype=object)
        names[:] = list(local)
        return Resolved(codes, names)

    def _load(self, keys: Sequence[bytes], slots: np.ndarray, track: bool = False) -> tuple[codec.Stored, Any]:
        """The stored state of each device (state keys ``keys`` as protocol bulk strings, hash slots ``slots``),
        and with ``track`` its beacon filter state (else ``None``), in one round trip: one ``LOAD`` call per
        ``chunk`` devices (cluster: per slot group), pipelined per node."""
        self.check_layout()
        n = len(keys)
        if not n:
            none = np.zeros(0, np.int64)
            return codec.Stored.parse(none, b""), codec.track_decode(none, b"") if track else None
        order, groups = self.router.group_by_slot(slots, self.chunk)
        ident = not self.cluster  # (one Redis: the order is the batch's own)
        enc = keys if ident else [keys[i] for i in order.tolist()]
        tr = self._tr_keys(enc) if track else []
        commands = [(slot, LOAD_SCRIPT.evalsha_encoded(2 * (b - a) if track else b - a,
                                                       b"".join([*enc[a:b], *tr[a:b]]), ()))
                    for slot, a, b in groups]
        replies = self._send(commands, LOAD_SCRIPT.src)
        # per group: its devices' state sizes, then (with track) their filter states' sizes, then the values
        m = np.array([b - a for _slot, a, b in groups], np.int64)
        per = 2 * m if track else m
        head = (4 * per).tolist()
        all_sizes = np.frombuffer(b"".join([r[:h] for r, h in zip(replies, head, strict=True)]), "<u4").astype(np.int64)
        first = np.zeros(len(per), np.int64)
        np.cumsum(per[:-1], out=first[1:])
        is_st = np.arange(len(all_sizes)) - np.repeat(first, per) < np.repeat(m, per)
        sizes, t_sizes = all_sizes[is_st], all_sizes[~is_st]
        g_st = (np.add.reduceat(np.where(is_st, all_sizes, 0), first) + 4 * per).tolist()
        blobs = [r[h:cut] for r, h, cut in zip(replies, head, g_st, strict=True)]
        t_blobs = [r[cut:] for r, cut in zip(replies, g_st, strict=True)] if track else []
        got = codec.Stored.parse(sizes, b"".join(blobs))
        if ident:
            stored = got
        else:
            inv = np.empty(n, np.int64)
            inv[order] = np.arange(n)
            stored = codec.Stored(got.version[inv], got.buf, got.start[inv], got.length[inv])
        tracked = None
        if track:
            rows = codec.track_decode(t_sizes, b"".join(t_blobs))
            dev = order[rows.dev]
            at = np.argsort(dev, kind="stable")
            tracked = type(rows)(dev[at], rows.pair[at], rows.ts[at], rows.value[at])
        return stored, tracked

    def _decode(self, stored: codec.Stored, places: PlaceTable, spare: int) -> PresenceState:
        state, place_ids = codec.decode(stored, spare)
        self._known_places(places, place_ids)
        return state

    def _save(self, encoded: Sequence[bytes], slots: np.ndarray, flags: np.ndarray,
              version: np.ndarray, due: np.ndarray, states: codec.Stored, entries: Sequence[bytes] | None = None,
              journal: Journal | None = None, tracks: codec.Stored | None = None,
              extra: Sequence[tuple[int, bytes]] = ()) -> tuple[np.ndarray, list[Any]]:
        """Compare-and-set devices on their version with ``SAVE``; returns which ones won.

        Device ``i``: state key ``encoded[i]`` (a protocol bulk string; hash slot ``slots[i]``),
        ``flags[i]`` (:data:`DROP`, :data:`SET_DUE`, :data:`TOUCH`; else its state is written), the
        ``version`` loaded, its ``due`` time and new state (body ``i`` of ``states``). One script call per
        ``chunk`` devices (cluster: per slot group, ``chunk`` at most), pipelined (per node); each call is
        all-or-nothing, and its arguments are a few blobs (:class:`proximity._redis.codec.SaveBlobs`) cut
        from one set built for the whole save. A call that was not run counts as lost (it is recomputed).
        With a ``journal``, each device that wins also gets its journal entry (``entries``) in that call;
        with ``tracks``, its beacon filter state (else it is left as it is, or deleted with the state).
        ``extra`` commands go in the same round trip; their replies (errors in their places) come back with the
        winners.
        """
        jttl = max(1, int(journal.ttl_s * 1000)) if journal is not None else 0
        order, groups = self.router.group_by_slot(slots, self.chunk)
        o = order.tolist()
        write = (flags & (DROP | TOUCH)) == 0
        o_states = codec.Stored(states.version, states.buf, states.start[order], states.length[order])
        o_tracks = (None if tracks is None else
                    codec.Stored(tracks.version, tracks.buf, tracks.start[order], tracks.length[order]))
        blobs = codec.SaveBlobs.build(version[order], due[order], flags[order], write[order], o_states,
                                      None if entries is None else [entries[i] for i in o], o_tracks)
        enc = encoded if not self.cluster else [encoded[i] for i in o]  # (one Redis: the order is the batch's own)
        # the filter state keys: every device's with tracks, else a dropped device's (it goes with the state)
        with_tr = np.ones(len(encoded), bool) if tracks is not None else (flags & DROP)[order] != 0
        trs: list[bytes] = [b""] * len(encoded)
        at_tr = np.flatnonzero(with_tr).tolist()
        for k, key in zip(at_tr, self._tr_keys([enc[k] for k in at_tr]), strict=True):
            trs[k] = key
        cum_tr = np.zeros(len(with_tr) + 1, np.int64)
        np.cumsum(with_tr, out=cum_tr[1:])
        n_tr = cum_tr.tolist()
        # the command of one group in one format: its keys, then the constant and blob arguments (ARGV[2]: per slot)
        ttl_b, jttl_b, track_b = bulk([b"%d" % self.ttl_ms, b"%d" % jttl, b"0" if tracks is None else b"1"])
        fmt = (b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n" + SAVE_SCRIPT.sha + b"\r\n$%d\r\n%d\r\n%b%b%b%b" + ttl_b + b"%b"
               + jttl_b + track_b + b"$%d\r\n%b\r\n" * 4)
        due_keys = self.router.due_keys_bulk()
        j_keys: Sequence[bytes] | dict[int, bytes] = due_keys  # no journal: not used by the script
        if journal is not None:
            j_keys = dict(zip(uniq := sorted({g[0] for g in groups}),
                              bulk([self.router.journal_key(slot, journal.key) for slot in uniq]), strict=True))
        w = codec.SAVE_HEAD.itemsize
        span = self.layout.span
        hb, sb, eb, tb = blobs.part(0, len(o))
        s_at, e_at, t_at = blobs.offsets
        commands = [(slot, fmt % (13 + b - a + n_tr[b] - n_tr[a], len(b"%d" % (2 + b - a + n_tr[b] - n_tr[a])),
                                  2 + b - a + n_tr[b] - n_tr[a], due_keys[slot], j_keys[slot], b"".join(enc[a:b]),
                                  b"".join(trs[a:b]), span(slot), (b - a) * w, hb[a * w : b * w], s_at[b] - s_at[a],
                                  sb[s_at[a] : s_at[b]], e_at[b] - e_at[a], eb[e_at[a] : e_at[b]], t_at[b] - t_at[a],
                                  tb[t_at[a] : t_at[b]]))
                    for slot, a, b in groups]
        bad: list[int] = []
        replies = self._call(lambda: self.router.send([*commands, *extra], script=SAVE_SCRIPT.src, errors=bad))
        replies, extra_replies = replies[: len(commands)], replies[len(commands) :]
        for i in bad:
            if i >= len(commands):
                continue
            if not isinstance(replies[i], C.NOT_RUN):
                raise StateError(f"Redis state store error: {replies[i]}")
            # not run: its devices lost (recomputed from a fresh load, like a lost compare-and-set)
            replies[i] = b"0" * (groups[i][2] - groups[i][1])
        flat = b"".join(replies)
        won = np.zeros(len(encoded), bool)
        won[order] = np.frombuffer(flat, np.uint8) == WON
        return won, extra_replies

    def _journaled(self, slots: np.ndarray, names: Sequence[str], journal: Journal) -> list[bytes | None]:
        """Each device's entry in the batch's journal (``None``: not committed by this batch yet). Read after
        the devices' states: a state saved by this batch is always seen with its entry."""
        order, groups = self.router.group_by_slot(slots, self.chunk)
        o = order.tolist()
        commands = [(slot, pack((b"HMGET", self.router.journal_key(slot, journal.key),
                                 *[names[i].encode("utf-8", "surrogatepass") for i in o[a:b]])))
                    for slot, a, b in groups]
        replies = self._call(lambda: self.router.send(commands))
        out: list[bytes | None] = [None] * len(names)
        for (_slot, a, b), reply in zip(groups, replies, strict=True):
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"Redis state store unavailable: {reply}", retry_after_s=1.0)
            for i, v in zip(o[a:b], reply, strict=True):
                out[i] = v
        return out

    def _run(self, names: np.ndarray, step: Step, places: PlaceTable, params: PresenceParams, spare: int,
             *, refresh_due: bool = False, journal: Journal | None = None, n_evidence: int = 0,
             track: bool = False, prefetch_info: bool = False) -> Transitions:
        """Load ``names``, run ``step(state, pending, filter state)`` (-> events, which devices to delete, the new
        filter state), save by CAS; retry losers. The beacon filter state is loaded and saved only with ``track``
        (else ``None``; rows keyed by index into ``pending``).

        ``pending`` are the indexes into ``names`` of the devices in the state table
        (state device i is ``names[pending[i]]``). Event ``dev`` fields come back
        as indexes into ``names``.

        The due set holds, per device, a time *at or before* the first one at which
        ``advance`` has work for it. A save moves it only when that comes earlier
        (a new visit): a ping that merely pushes a debounce or the TTL later leaves it,
        and ``advance`` (``refresh_due``) sets the exact time on the devices it finds
        with nothing to do yet. So the common save is one ``GET`` and one ``SET``.

        ``prefetch_info``: the info of the devices with events is read with the save, for the batch's
        campaign decisions (:meth:`~proximity._redis.info.DeviceInfo.devices`).
        """
        pending = np.arange(len(names))
        parts: list[Transitions] = []
        if prefetch_info:
            self._forget_prefetched()
        # each state key in the protocol, and its hash slot: once for every attempt
        all_encoded, all_slots = self.layout.bulk_keys(names.tolist())
        for _attempt in range(self.max_retries + 1):
            sub = pending.tolist()
            encoded = all_encoded if len(sub) == len(names) else [all_encoded[i] for i in sub]
            slots = all_slots[pending]
            old, t_old = self._load(encoded, slots, track)
            done = np.zeros(len(sub), bool)
            if journal is not None:
                found = self._journaled(slots, [names[i] for i in sub], journal)
                done = np.fromiter((v is not None for v in found), bool, len(sub))
                if done.any():
                    at = np.flatnonzero(done)
                    parts.append(journal_replay(pending[at], [found[i] or b"" for i in at.tolist()], n_evidence,
                                                journal))
            state = self._decode(old, places, spare)
            local = np.arange(len(sub))
            due_before = next_due(state, local, params)
            tr, delete, t_new = step(state, pending, t_old)
            if done.any():  # committed by an earlier try of this batch: its events are the journal's
                tr = tr.where(~done[tr.dev])
            new = codec.encode(state)
            due = next_due(state, local, params)
            has_old = old.version > 0
            gone = delete | (new.length == 0)
            changed = codec.changed(new, old)
            if t_new is not None:
                t_enc = codec.track_encode(t_new, len(sub))
                changed |= codec.changed(t_enc, codec.track_encode(t_old, len(sub)))
            drop = gone & (has_old | delete | refresh_due)
            write = ~gone & changed
            set_due = write & (~has_old | (due < due_before) | refresh_due)
            touch = ~gone & ~changed & refresh_due
            save = np.flatnonzero((drop | write | touch) & ~done)
            won = np.ones(len(sub), bool)
            self.saved += len(save)
            if len(save):
                flags = (drop * DROP + set_due * SET_DUE + touch * TOUCH).astype(np.uint8)
                entries = None
                if journal is not None:
                    per_device = journal_encode(tr, len(sub), journal)
                    entries = [per_device[i] for i in save.tolist()]
                tracks = None
                if t_new is not None:
                    tracks = codec.Stored(t_enc.version, t_enc.buf, t_enc.start[save], t_enc.length[save])
                saved = codec.Stored(new.version, new.buf, new.start[save], new.length[save])
                with_events = [names[sub[i]] for i in np.unique(tr.dev).tolist()] if prefetch_info else []
                res, info = self._save(encoded if len(save) == len(sub) else [encoded[i] for i in save.tolist()],
                                       slots[save], flags[save],
                                       old.version[save], due[save], saved, entries, journal, tracks,
                                       self._info_commands(with_events))
                self._keep_info(with_events, info)
                won[save[~res]] = False
                gone_ids = [names[sub[i]] for i in save[res & delete[save]].tolist()]
                if gone_ids:
                    self._call(partial(self.r.delete, *[self._info(x) for x in gone_ids]))
            if won.all() and not parts and len(sub) == len(names):  # the common case: all saved at the first try
                return tr  # (its devices' indexes are those of names already)
            keep = won[tr.dev] if len(tr) else np.zeros(0, bool)
            kept = Transitions.from_buffers((a[keep] for a in tr._buffers()), tr.status)
            kept.dev = pending[kept.dev]
            parts.append(kept)
            if won.all():
                return Transitions.concat(parts)
            self.retries += int((~won).sum())
            pending = pending[~won]
        raise StateError(f"gave up after {self.max_retries} conflicting updates of {len(pending)} device(s)")

    # -- the store interface ---------------------------------------------------------------

    @staticmethod
    def _apply_pending(names: np.ndarray, ev: Evidence, status: np.ndarray, state: PresenceState,
                       pending: np.ndarray, places: PlaceTable, params: PresenceParams) -> Transitions:
        """Apply the evidence of the ``pending`` devices (``ev.dev`` indexes ``names``) to their loaded
        ``state``; their rows' status goes into ``status``, events' ``ev`` index ``ev``."""
        if len(pending) == len(names):  # every device (a first try): pending is 0..n-1, the evidence is as it is
            tr = apply_evidence(state, ev, places, params)
            status[:] = tr.status
            return tr
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
        return tr

    def apply(self, resolved: Resolved, ev: Evidence, places: PlaceTable, params: PresenceParams,
              journal: Journal | None = None) -> Transitions:
        names = np.asarray(resolved.names)  # this store's own: an object array (see resolve)
        status = np.zeros(len(ev), np.int8)

        def step(state: PresenceState, pending: np.ndarray, _track: Any) -> tuple[Transitions, np.ndarray, Any]:
            tr = self._apply_pending(names, ev, status, state, pending, places, params)
            return tr, np.zeros(len(pending), bool), None

        tr = self._run(names, step, places, params, 64, journal=journal, n_evidence=len(ev), prefetch_info=True)
        tr.status = status
        return tr

    def apply_tracked(self, resolved: Resolved, tracked: Tracked, places: PlaceTable, params: PresenceParams,
                      journal: Journal | None = None) -> tuple[Transitions, Built]:
        """:meth:`apply` for a beacon batch: each device's filter state (``P:{D}:tr``) is loaded with its
        state, ``tracked.build`` runs on it, and the new one is saved by the same compare-and-set. Devices
        that lose are reloaded and built again (see :mod:`proximity.tracked`)."""
        from beacons.ranging import FilterState

        names = np.asarray(resolved.names)
        n_rows = tracked.n_rows
        status = np.zeros(n_rows, np.int8)  # per batch row
        prox, dist = np.zeros(n_rows, np.int8), np.full(n_rows, np.nan)  # per batch row, for the journal
        loaded = [FilterState()]  # the filter state each device was last loaded with (dev: index into names)
        last: list[Built] = []

        def step(state: PresenceState, pending: np.ndarray, t_old: Any) -> tuple[Transitions, np.ndarray, Any]:
            fresh = FilterState(pending[t_old.dev], t_old.pair, t_old.ts, t_old.value)
            loaded[0] = FilterState.concat([loaded[0].take(~np.isin(loaded[0].dev, pending)), fresh])
            built = tracked.build(loaded[0])
            last[:] = [built]
            ev_status = np.zeros(len(built.ev), np.int8)
            tr = self._apply_pending(names, built.ev, ev_status, state, pending, places, params)
            mine = np.isin(built.ev.dev, pending)
            status[built.zrow[mine]] = ev_status[mine]
            named = tr.ev >= 0
            tr.ev[named] = built.zrow[tr.ev[named]]  # batch rows: the same in every attempt
            prox[built.zrow], dist[built.zrow] = built.prox, built.dist
            if journal is not None:
                journal.proximity, journal.distance = prox, dist
            pos = np.full(len(names), -1, np.int64)
            pos[pending] = np.arange(len(pending))
            new = built.state
            keep = pos[new.dev] >= 0
            t_new = FilterState(pos[new.dev[keep]], new.pair[keep], new.ts[keep], new.value[keep])
            return tr, np.zeros(len(pending), bool), t_new

        tr = self._run(names, step, places, params, 64, journal=journal, n_evidence=n_rows, track=True,
                       prefetch_info=True)
        final = last[0]
        remap(tr, final, n_rows)
        tr.status = status[final.zrow]
        if journal is not None:
            journal.proximity, journal.distance = final.prox, final.dist
        return tr, final

    def advance(self, now: float, places: PlaceTable, params: PresenceParams,
                limit: int | None = None) -> tuple[Transitions, np.ndarray]:
        """Run every device due before ``now``: a round reads a page of each due set (in cluster mode the
        first round reads all 16384 slots', later rounds only those whose page was full) and runs the due
        devices ``chunk`` at a time, until no page is full or a round saved nothing. With ``limit``: one round
        of pages of at most ``limit``, at most ``limit`` devices run (``due_left``: more were due, and this
        call saved some), and the next call given a limit reads only the due sets this one found devices in."""
        parts: list[Transitions] = []
        all_names: list[np.ndarray] = []
        offset = 0
        slots: Sequence[int] = self._due_slots if limit is not None and self.due_left else self.router.due_slots
        page = self.chunk if limit is None else max(1, min(limit, self.chunk))
        self.due_left = False

        def step(state: PresenceState, pending: np.ndarray, _track: Any) -> tuple[Transitions, np.ndarray, Any]:
            return (*advance_state(state, np.arange(state.n_devices), now, params, places=places), None)

        self.check_layout()
        for _round in range(10_000):
            due, full, self._due_slots = self._call(partial(self.router.due_pages, now, slots, page))
            more = limit is not None and (len(due) > page or bool(full))
            saved, due = self.saved, (due if limit is None else due[:page])
            if not due:
                break
            for i in range(0, len(due), self.chunk):
                names = np.empty(len(due[i : i + self.chunk]), dtype=object)
                names[:] = [x.decode() for x in due[i : i + self.chunk]]
                tr = self._run(names, step, places, params, 16, refresh_due=True)
                tr.dev = tr.dev + offset
                offset += len(names)
                parts.append(tr)
                all_names.append(names)
            self.due_left = more and self.saved > saved
            if limit is not None or not full or self.saved == saved:
                break
            slots = full
        names_all = np.concatenate(all_names) if all_names else np.empty(0, dtype=object)
        return Transitions.concat(parts), names_all

    def forget(self, device_id: str, places: PlaceTable, params: PresenceParams) -> tuple[Transitions, np.ndarray]:
        names = np.empty(1, dtype=object)
        names[0] = device_id

        def step(state: PresenceState, pending: np.ndarray, _track: Any) -> tuple[Transitions, np.ndarray, Any]:
            return (*advance_state(state, np.arange(state.n_devices), 0.0, params, forget=True, places=places), None)

        tr = self._run(names, step, places, params, 16)
        self._forget_prefetched([device_id])
        st = self.layout.state_keys([device_id])[0][0]
        self._call(lambda: self.r.delete(self._info(device_id), st, st[:-2] + b"tr"))
        return tr, names

    def snapshot(self, device_id: str, places: PlaceTable,
                 params: PresenceParams | None = None) -> dict[str, Any] | None:
        stored, _ = self._load(*self.layout.bulk_keys([device_id]))
        if not stored.version[0]:
            return None
        state = self._decode(stored, places, 0)
        out = visit_snapshot(state, 0, places, params)
        out["version"] = int(stored.version[0])
        return out

    def compile(self, params: PresenceParams) -> None:
        """The codec's loops (:func:`proximity._redis.codec.compile_kernels`), the key layout's
        (:meth:`~proximity._redis.layout.Layout.compile_kernels`) and ``next_due``."""
        codec.compile_kernels()
        self.layout.compile_kernels()
        next_due(PresenceState(1, 0), np.zeros(1, np.int64), params)

    def close(self) -> None:
        self.router.release()
        if self._own:
            C.close(self.r)


__all__ = ["RedisStateStore"]
