"""Hot loops of the memory store's device-id table (numba): an open-addressing hash table over the ids' UTF-8 bytes.

The table (:class:`proximity.store.DeviceIds`) maps device ids to small integer
handles, the rows of the presence state's device table: ``slots`` (the hash
table), ``keys`` (each handle's id, zero-padded), ``key_hash``, ``meta`` and the
``free`` stack of handles to reuse.
"""

from __future__ import annotations

import numpy as np

from proxbase.jit import njit

EMPTY, TOMB = -1, -2
#: a used slot holds ``fingerprint << 32 | handle`` (fingerprint: the top 31 bits of the id's hash),
#: so a probe only reads an id's bytes when the fingerprints agree
LOW32 = np.int64(0xFFFFFFFF)
FNV_OFFSET = np.uint64(14695981039346656037)
FNV_PRIME = np.uint64(1099511628211)


@njit(no_cpython_wrapper=True, _nrt=False)
def _hash_bytes(buf, a, b):
    h = FNV_OFFSET
    for j in range(a, b):
        h = (h ^ np.uint64(buf[j])) * FNV_PRIME
    return h


@njit(no_cpython_wrapper=True, _nrt=False)
def _same_key(buf, a, b, keys, k):
    """Is ``buf[a:b]`` the key in row ``k`` (zero-padded)?"""
    n = b - a
    w = keys.shape[1]
    if n > w:
        return False
    for j in range(n):
        if keys[k, j] != buf[a + j]:
            return False
    return n == w or keys[k, n] == 0


@njit(no_cpython_wrapper=True, _nrt=False)
def _insert(buf, a, b, h, fp, s, tomb, slots, keys, key_hash, meta, free):
    """Give the new id ``buf[a:b]`` (hash ``h``, fingerprint ``fp``; the room checked) a handle and a slot: the
    first tombstone ``tomb`` on its probe path, else the empty slot ``s`` that ended it. Returns the handle.

    :mod:`proximity._ids_direct` runs it as plain Python (``_insert.py_func``), so both paths insert alike.
    """
    if meta[1] > 0:
        meta[1] -= 1
        found = free[meta[1]]
    else:
        found = meta[0]
        meta[0] += 1
    for j in range(keys.shape[1]):
        keys[found, j] = buf[a + j] if j < b - a else 0
    key_hash[found] = h
    if tomb >= 0:
        slots[tomb] = (fp << 32) | found
    else:
        slots[s] = (fp << 32) | found
        meta[3] += 1
    meta[2] += 1
    return found


@njit(_nrt=False)
def intern_ids(buf, starts, lens, i0, insert, slots, keys, key_hash, meta, free, out):
    """Handles for the ids ``buf[starts[i]:starts[i] + lens[i]]`` (UTF-8, no NUL) from ``i0`` on.

    New ids get a handle when ``insert`` (unknown ones give -1 otherwise). ``meta`` =
    [next fresh handle, free-stack size, live ids, used slots]. Returns where it
    stopped: ``len(starts)`` when done, or the index of the first id that needs more
    room (a free handle, a wider key row, or slots kept below half full); the caller
    grows the table and calls again from there.
    """
    mask = slots.shape[0] - 1
    n = starts.shape[0]
    for i in range(i0, n):
        a = starts[i]
        b = a + lens[i]
        h = _hash_bytes(buf, a, b)
        fp = np.int64(h >> np.uint64(33))
        s = np.int64(h & np.uint64(mask))
        tomb = np.int64(-1)
        found = -1
        while True:
            v = slots[s]
            if v == EMPTY:
                break
            if v == TOMB:
                if tomb < 0:
                    tomb = s
            elif (v >> 32) == fp and _same_key(buf, a, b, keys, v & LOW32):
                found = v & LOW32
                break
            s = (s + 1) & mask
        if found < 0 and insert:
            if (meta[1] == 0 and meta[0] >= keys.shape[0]) or lens[i] > keys.shape[1] \
                    or (tomb < 0 and 2 * (meta[3] + 1) > slots.shape[0]):
                return i
            found = _insert(buf, a, b, h, fp, s, tomb, slots, keys, key_hash, meta, free)
        out[i] = found
    return n


@njit(_nrt=False)
def remove_ids(handles, slots, keys, key_hash, meta, free):
    """Forget these handles: tombstone their slots, clear their keys, push them on the free stack."""
    mask = slots.shape[0] - 1
    for i in range(handles.shape[0]):
        hd = handles[i]
        s = np.int64(key_hash[hd] & np.uint64(mask))
        while slots[s] != EMPTY:
            if slots[s] >= 0 and (slots[s] & LOW32) == hd:
                slots[s] = TOMB
                keys[hd, :] = 0
                free[meta[1]] = hd
                meta[1] += 1
                meta[2] -= 1
                break
            s = (s + 1) & mask


@njit(_nrt=False)
def rehash_ids(old, new, key_hash):
    """Move every live handle of ``old`` slots into the empty table ``new``; returns the used slot count."""
    mask = new.shape[0] - 1
    used = 0
    for s in range(old.shape[0]):
        v = old[s]
        if v >= 0:
            t = np.int64(key_hash[v & LOW32] & np.uint64(mask))
            while new[t] != EMPTY:
                t = (t + 1) & mask
            new[t] = v
            used += 1
    return used
