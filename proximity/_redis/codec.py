"""The binary form of presence state in Redis: numpy and a few numba loops (``_kernels_codec``), no Redis.

A device's stored value is ``b"<version>|" + body``. The body is a 44-byte
:data:`HEADER` (last evidence time, visit count, the last accepted GPS fix's time,
lon and lat and the log-accuracy baseline) followed by one 44-byte :data:`RECORD`
per visit (with ``lo``, the log-odds of the visit probability's filter); a device with no visits and no evidence time has an
empty body (and no key). :class:`Stored` holds many devices' values in one
buffer; :func:`encode` and :func:`decode` turn a :class:`PresenceState` into
bodies and back, every device at once.

A device's beacon filter state (``P:{D}:tr``, beside its presence state) is its
rows of :data:`TRACK` (24 bytes each: pair code, time, value; see
``beacons.ranging.FilterState``), :func:`track_encode`/:func:`track_decode`.

A save is sent as a few blobs whatever the number of devices (:class:`SaveBlobs`,
read by the ``SAVE`` script of :mod:`proximity._redis.scripts`): one
:data:`SAVE_HEAD` record per device, and the new states, journal entries and
filter states each concatenated; :func:`read_save_blobs` reads them back the way
the script does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass
from typing import TYPE_CHECKING

import numpy as np

import proximity._kernels as K
import proximity._redis._kernels_codec as KC
from proximity._redis._kernels_codec import NOT_A_NUMBER, NOT_VERSIONED, parse_values, ranges_differ
from proximity.errors import StateError
from proximity.presence import PresenceState

if TYPE_CHECKING:
    from beacons.ranging import FilterState

#: one row of a device's beacon filter state (``P:{D}:tr``): its (observer, key) pair code, a time, a value
TRACK = np.dtype([("pair", "<i8"), ("ts", "<f8"), ("value", "<f8")])

HEADER = np.dtype([("last", "<f8"), ("n", "<u4"), ("fix", "<f8", (4,))])
RECORD = np.dtype([("place", "<i4"), ("enter", "<f8"), ("gps", "<f8"), ("bcn", "<f8"), ("mask", "<u4"),
                   ("src", "u1"), ("conf", "i1"), ("miss", "u1"), ("tent", "u1"), ("lo", "<f8")])
#: SAVE's record per device (packed, 29 bytes: its Lua ``HEAD``; ``struct.unpack('<ddBI4I4I4')``): the
#: expected version, the due time, the flags (``DROP``, ``SET_DUE``, ``TOUCH``) and the byte lengths of
#: its new state, journal entry and filter state in the concatenated blobs
SAVE_HEAD = np.dtype([("version", "<f8"), ("due", "<f8"), ("flags", "u1"), ("state", "<u4"), ("entry", "<u4"),
                      ("track", "<u4")])


def _i64(a: np.ndarray) -> np.ndarray:
    """``a`` as the loops take it: contiguous int64 (itself when it is)."""
    return np.ascontiguousarray(a, np.int64)


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
        version, start, length = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        problem = parse_values(np.asarray(sizes, np.int64), buf, version, start, length)
        if problem == NOT_VERSIONED:
            raise StateError("a presence state in Redis is not '<version>|<state>': was it written by this version?")
        if problem == NOT_A_NUMBER:
            raise StateError("a presence state in Redis has a version that is not a number: "
                             "was it written by this version?")
        return cls(version, buf, start, length)

    def body(self, i: int) -> bytes:
        return self.buf[self.start[i] : self.start[i] + self.length[i]].tobytes()


def changed(a: Stored, b: Stored) -> np.ndarray:
    """Per device: do the binary states of ``a`` and ``b`` differ? (Compared byte by byte up to the first
    difference: a presence state starts with its last evidence time, which nearly every applied ping moves.)"""
    out = a.length != b.length
    same = np.flatnonzero(~out & (a.length > 0))
    if len(same):
        differ = np.empty(len(same), bool)
        ranges_differ(a.buf, a.start[same], b.buf, b.start[same], a.length[same], differ)
        out[same] = differ
    return out


def decode(stored: Stored, spare: int) -> tuple[PresenceState, np.ndarray]:
    """A state table for the loaded devices (index i = device i of ``stored``) with ``spare`` free records,
    and the place id of every loaded visit (the caller makes sure its place table knows them)."""
    n_rec = int(KC.count_records(stored.buf, stored.start, stored.length))
    if n_rec < 0:
        raise StateError("a presence state in Redis has the wrong size for its visit count: it was written "
                         "by another version of proximity; use a new key prefix (or flush the old one)")
    state = PresenceState(len(stored), 0)
    state.grow_records(n_rec + spare)
    # the first n_rec records of the fresh pool (its free list runs 0, 1, 2 ...) become the loaded visits
    KC.decode_into(stored.buf, stored.start, stored.length, state.d_dev, K.DEV_LAST, state.d_head, state.r_place,
                   state.r_dev, state.r_enter, state.r_gps, state.r_bcn, state.r_mask, state.r_src, state.r_conf,
                   state.r_miss, state.r_tent, state.r_lo, state.r_next)
    if n_rec:
        state.meta[0] = n_rec if n_rec < len(state.r_place) else -1
        state.meta[1] -= n_rec
    return state, state.r_place[:n_rec].copy()


def encode(state: PresenceState) -> Stored:
    """The binary state (without version) of every device of ``state``; length 0 for a device with nothing."""
    buf, start, length, ok = KC.encode_state(
        state.d_dev, K.DEV_LAST, state.r_dev, state.r_place, state.r_enter, state.r_gps, state.r_bcn, state.r_mask,
        state.r_src, state.r_conf, state.r_miss, state.r_tent, state.r_lo)
    if not ok:
        raise ValueError("a visit record belongs to a device the state table does not have")
    return Stored(np.zeros(len(start), np.int64), buf, start, length)


def track_decode(sizes: np.ndarray, blob: bytes) -> FilterState:
    """The filter state of devices whose ``:tr`` values (``sizes`` bytes each, 0: none) are concatenated in
    ``blob``; its ``dev`` is the device's index."""
    from beacons.ranging import FilterState

    if (sizes % TRACK.itemsize).any() or int(sizes.sum()) != len(blob):
        raise StateError("a beacon filter state in Redis has the wrong size: was it written by this version?")
    rows = np.frombuffer(blob, TRACK)
    dev = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes // TRACK.itemsize)
    return FilterState(dev, rows["pair"].copy(), rows["ts"].copy(), rows["value"].copy())


def track_encode(state: FilterState, n: int) -> Stored:
    """Each device's ``:tr`` value (devices ``0 .. n - 1``, ``state.dev``); length 0: no state."""
    order = np.argsort(state.dev, kind="stable")
    rows = np.empty(len(order), TRACK)
    rows["pair"], rows["ts"], rows["value"] = state.pair[order], state.ts[order], state.value[order]
    length = np.bincount(state.dev, minlength=n).astype(np.int64)[:n] * TRACK.itemsize
    start = np.zeros(n, np.int64)
    np.cumsum(length[:-1], out=start[1:])
    return Stored(np.zeros(n, np.int64), rows.view(np.uint8), start, length)


def gather(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> bytes:
    """``buf[start[i] : start[i] + length[i]]`` of every ``i``, concatenated."""
    length = np.asarray(length, np.int64)
    total = int(length.sum())
    if not total:
        return b""
    out = np.empty(total, np.uint8)
    KC.gather_ranges(buf, np.asarray(start, np.int64), length, out)
    return out.tobytes()


@dataclass
class SaveBlobs:
    """The arguments of a ``SAVE`` call for many devices: a :data:`SAVE_HEAD` record each (``heads``) and
    their states, entries and filter states concatenated in the same order; :meth:`part` cuts the blobs of
    devices ``a .. b - 1`` (one call per slot group on a cluster)."""

    heads: np.ndarray
    states: bytes
    entries: bytes
    tracks: bytes
    #: where each device's state, entry and filter state start in their blobs, as 3 rows of n + 1 (the last:
    #: the end); computed from ``heads`` when not given
    at: InitVar[np.ndarray | None] = None

    def __post_init__(self, at: np.ndarray | None) -> None:
        m = len(self.heads) + 1
        if at is None:
            at = np.zeros((3, m), np.int64)
            for row, f in zip(at, ("state", "entry", "track"), strict=True):
                np.cumsum(self.heads[f], dtype=np.int64, out=row[1:])
        flat = np.ascontiguousarray(at, np.int64).reshape(-1).data
        #: the same rows, as sequences of ints (read one at a time, per slot group, by the store)
        self.offsets = [flat[:m], flat[m : 2 * m], flat[2 * m :]]
        self._heads = self.heads.tobytes()

    @classmethod
    def build(cls, version: np.ndarray, due: np.ndarray, flags: np.ndarray, write: np.ndarray, states: Stored,
              entries: Sequence[bytes] | None, tracks: Stored | None) -> SaveBlobs:
        """Device ``i``: its loaded ``version``, ``due`` time, ``flags``, and where ``write[i]`` its new state
        ``states`` body ``i``; its journal entry ``entries[i]`` (``None``: none); its new filter state
        ``tracks`` body ``i`` (``None``: left as it is)."""
        n = len(flags)
        none = np.zeros(n, np.int64)
        entry, e_len = b"", none
        if entries is not None:
            e_len = np.fromiter(map(len, entries), np.int64, n)
            entry = b"".join(entries)
        t_buf, t_start, t_len = np.zeros(0, np.uint8), none, none
        if tracks is not None:
            t_buf, t_start, t_len = tracks.buf, _i64(tracks.start), _i64(tracks.length)
        heads, offsets, s_out, t_out = KC.save_blobs(
            _i64(version), np.ascontiguousarray(due, np.float64), np.ascontiguousarray(flags, np.uint8),
            np.ascontiguousarray(write, np.bool_), states.buf, _i64(states.start), _i64(states.length), e_len,
            t_buf, t_start, t_len)
        return cls(heads.view(SAVE_HEAD), s_out.tobytes(), entry, t_out.tobytes(), offsets)

    def part(self, a: int, b: int) -> tuple[bytes, bytes, bytes, bytes]:
        """The heads, states, entries and filter states of devices ``a .. b - 1``."""
        s, e, t = self.offsets
        w = SAVE_HEAD.itemsize
        return (self._heads[a * w : b * w], self.states[s[a] : s[b]], self.entries[e[a] : e[b]],
                self.tracks[t[a] : t[b]])


def compile_kernels() -> None:
    """Compile, or load from the kernel cache, the codec's loops for the buffers a store passes them: one
    device's state encoded, stored, parsed (a read-only buffer, as a Redis reply is), decoded, compared and
    gathered, and a save's blobs built from it and a filter state (a server's warm-up, before it says it is
    ready)."""
    state = PresenceState(1, 0)
    state.d_last[:] = 0.0
    new = encode(state)
    blob = b"1|" + new.buf.tobytes()
    old = Stored.parse(np.array([len(blob)], np.int64), blob)
    decode(old, 0)
    changed(new, old)  # the same bytes: compared in full
    gather(new.buf, new.start, new.length)
    gather(old.buf, old.start, old.length)
    one = np.ones(1, bool)
    tracks = track_encode(track_decode(np.zeros(1, np.int64), b""), 1)
    SaveBlobs.build(old.version, np.zeros(1), np.zeros(1, np.uint8), one, new, [b""], tracks)


def read_save_blobs(heads: bytes, states: bytes, entries: bytes,
                    tracks: bytes) -> list[tuple[int, float, int, bytes, bytes, bytes]]:
    """Per device, as ``SAVE`` reads it: version, due time, flags, state, entry, filter state."""
    import struct

    out = []
    s = e = t = 0
    for at in range(0, len(heads), SAVE_HEAD.itemsize):
        version, due, flags, s_len, e_len, t_len = struct.unpack_from("<ddBIII", heads, at)
        out.append((int(version), due, flags, states[s : s + s_len], entries[e : e + e_len], tracks[t : t + t_len]))
        s, e, t = s + s_len, e + e_len, t + t_len
    if (s, e, t) != (len(states), len(entries), len(tracks)) or len(heads) % SAVE_HEAD.itemsize:
        raise StateError("SAVE blobs whose lengths do not add up")
    return out


__all__ = ["HEADER", "RECORD", "SAVE_HEAD", "TRACK", "SaveBlobs", "Stored", "changed", "compile_kernels", "decode",
           "encode", "gather",
           "read_save_blobs", "track_decode", "track_encode"]
