"""The device-id table's small batches in numpy, with nothing to compile.

:class:`proximity.store.DeviceIds` interns a batch here while it is small (at most
``SMALL_BATCH`` ids, of which at most ``SMALL_NEW`` are not in the table yet): a first run
then does not compile ``intern_ids`` (:mod:`proximity._kernels_ids`). The table it leaves
is the kernel's, bit for bit (slots, keys, hashes, free stack, counters), and so are the
handles and the index it returns (``tests/proximity/test_ids_direct.py`` runs both on
random sequences of interns, lookups and removals, tombstones and growth included):

- the ids' FNV-1a hashes and the lookups of the ids already in the table are whole-array
  operations (one step per byte of the longest id, one per probe of the longest probe
  sequence). An id the table holds is found whatever this batch inserts before it:
  an insert fills an empty slot (none lies on that id's probe path before its slot) or
  a tombstone (which the probe passes anyway).
- the ids not in the table are inserted one after the other, in the batch's order, by
  the kernel's own steps (the probe sees the slots the ids before it took, a repeated
  new id finds its first occurrence; the insert is the kernel's ``_insert`` run as plain
  Python): a Python loop, which is why a batch with more new ids than ``SMALL_NEW`` goes
  to the kernel instead.
"""

from __future__ import annotations

import numpy as np

import proximity._kernels_ids as K
from proximity._kernels_ids import EMPTY, FNV_OFFSET, FNV_PRIME, LOW32, TOMB

#: batches of at most this many ids ...
SMALL_BATCH = 4096
#: ... with at most this many not in the table yet are interned in numpy
SMALL_NEW = 64


def fnv1a(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each id's 64-bit FNV-1a hash (the kernel's ``_hash_bytes``) and its bytes zero-padded to the longest id."""
    width = int(lens.max(initial=0))
    col = np.arange(width)
    inside = col[None, :] < lens[:, None]
    rows = np.zeros((len(lens), width), np.uint8)
    rows[inside] = buf[(starts[:, None] + col[None, :])[inside]]
    h = np.full(len(lens), FNV_OFFSET, np.uint64)
    for j in range(width):
        step = (h ^ rows[:, j].astype(np.uint64)) * FNV_PRIME
        h = np.where(inside[:, j], step, h)
    return h, rows


def _same_keys(rows: np.ndarray, lens: np.ndarray, keys: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """Per id: is it the key in row ``handles`` (the kernel's ``_same_key``: the id's bytes, then a zero unless
    the id fills the row)?"""
    w = keys.shape[1]
    fits = lens <= w
    k = keys[handles]
    cols = min(rows.shape[1], w)
    upto = np.arange(cols)[None, :] < lens[:, None]
    same = ((k[:, :cols] == rows[:, :cols]) | ~upto).all(axis=1)
    ends = k[np.arange(len(handles)), np.minimum(lens, w - 1)] == 0
    return fits & same & ((lens == w) | ends)


def _lookup(h: np.ndarray, rows: np.ndarray, lens: np.ndarray, slots: np.ndarray,
            keys: np.ndarray) -> np.ndarray:
    """The handle of each id in the table as it stands (-1: not there), by the kernel's linear probe."""
    mask = np.int64(len(slots) - 1)
    fp = (h >> np.uint64(33)).astype(np.int64)
    s = (h & np.uint64(mask)).astype(np.int64)
    found = np.full(len(h), -1, np.int64)
    todo = np.arange(len(h))
    while len(todo):
        v = slots[s[todo]]
        used = v >= 0
        cand = used & ((v >> 32) == fp[todo])
        hit = np.zeros(len(todo), bool)
        if cand.any():
            c = np.flatnonzero(cand)
            hit[c] = _same_keys(rows[todo[c]], lens[todo[c]], keys, v[c] & LOW32)
        found[todo[hit]] = v[hit] & LOW32
        go_on = (v != EMPTY) & ~hit
        todo = todo[go_on]
        s[todo] = (s[todo] + 1) & mask
    return found


def intern_ids_small(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, i0: int, insert: bool,
                     slots: np.ndarray, keys: np.ndarray, key_hash: np.ndarray, meta: np.ndarray,
                     free: np.ndarray, out: np.ndarray) -> int | None:
    """``intern_ids`` (:mod:`proximity._kernels_ids`, same arguments and result) in numpy, or None without
    touching anything when the batch is not small (then the caller runs the kernel)."""
    n = len(starts)
    if n - i0 > SMALL_BATCH:
        return None
    st, ln = starts[i0:], lens[i0:]
    h, rows = fnv1a(buf, st, ln)
    found = _lookup(h, rows, ln, slots, keys)
    new = np.flatnonzero(found < 0)
    if insert and len(new) > SMALL_NEW:
        return None
    out[i0:] = found
    if not insert:
        return n
    mask = len(slots) - 1
    for j in new.tolist():
        i = i0 + j
        a = int(starts[i])
        b = a + int(lens[i])
        hj = h[j]
        fp = int(hj >> np.uint64(33))
        s = int(hj & np.uint64(mask))
        tomb = -1
        hit = -1
        while True:
            v = int(slots[s])
            if v == EMPTY:
                break
            if v == TOMB:
                if tomb < 0:
                    tomb = s
            elif (v >> 32) == fp and _same_keys(rows[j:j + 1], ln[j:j + 1], keys, np.array([v & LOW32]))[0]:
                hit = v & int(LOW32)
                break
            s = (s + 1) & mask
        if hit < 0:
            if (meta[1] == 0 and meta[0] >= keys.shape[0]) or lens[i] > keys.shape[1] \
                    or (tomb < 0 and 2 * (meta[3] + 1) > slots.shape[0]):
                return i
            hit = int(K._insert.py_func(buf, a, b, hj, np.int64(fp), s, tomb, slots, keys, key_hash, meta, free))
        out[i] = hit
    return n
