"""Hot loops of the Redis state codec (numba): byte ranges copied and compared, stored values parsed, and
the key layout's device groups of many ids.

A batch's states are a few hundred byte ranges of a few dozen bytes each. numpy moves them with an
index array per byte (``np.repeat`` + ``np.arange`` + a fancy index), several allocations and passes
over every byte, and a state's fields with one call per field; these loops copy each range straight
and write (read) a state's header and visit records from (into) the state table's columns, in one
pass (:mod:`proximity._redis.codec`).
"""

from __future__ import annotations

import numpy as np

from proxbase.jit import njit

#: :func:`parse_values`' answers: every value is ``<version>|<state>``; a value without ``|`` or with 0 or
#: more than 18 digits before it; a version with a character that is no digit
OK, NOT_VERSIONED, NOT_A_NUMBER = 0, 1, 2


@njit(_nrt=False)
def name_groups(buf, table, groups, group, length):  # pragma: no cover - compiled
    """Names joined by NUL in ``buf`` (as many as ``group`` has rows): each one's ``CRC16 mod groups`` (``table``:
    the CRC16-XMODEM byte table, as ``binascii.crc_hqx(name, 0)``) and its length."""
    i = 0
    crc = 0
    start = 0
    for j in range(len(buf)):
        b = buf[j]
        if b == 0:
            group[i] = crc % groups
            length[i] = j - start
            i += 1
            crc = 0
            start = j + 1
        else:
            crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    group[i] = crc % groups
    length[i] = len(buf) - start


@njit(_nrt=False)
def ranges_differ(a_buf, a_start, b_buf, b_start, length, out):  # pragma: no cover - compiled
    """``out[i]``: do ``a_buf[a_start[i]:][:length[i]]`` and ``b_buf[b_start[i]:][:length[i]]`` differ?"""
    for i in range(len(length)):
        a = a_start[i]
        b = b_start[i]
        differ = False
        for j in range(length[i]):
            if a_buf[a + j] != b_buf[b + j]:
                differ = True
                break
        out[i] = differ


@njit(_nrt=False)
def parse_values(sizes, buf, version, start, length):  # pragma: no cover - compiled
    """Values ``b"<version>|<state>"`` concatenated in ``buf`` (``sizes[i]`` bytes each, 0: none): each one's
    version and where its state is (a missing value: version 0, length 0, start where it would be). Returns
    :data:`OK`, else the first kind of problem found, :data:`NOT_VERSIONED` before :data:`NOT_A_NUMBER`."""
    problem = OK
    at = 0
    for i in range(len(sizes)):
        s = sizes[i]
        version[i] = 0
        start[i] = at
        length[i] = 0
        if s > 0:
            end = at + s
            sep = at
            while sep < end and buf[sep] != 124:  # '|'
                sep += 1
            digits = sep - at
            if sep >= end or digits < 1 or digits > 18:
                problem = NOT_VERSIONED
            else:
                v = 0
                for k in range(at, sep):
                    d = int(buf[k]) - 48
                    if d < 0 or d > 9:
                        if problem == OK:
                            problem = NOT_A_NUMBER
                        d = 0
                    v = v * 10 + d
                version[i] = v
                start[i] = sep + 1
                length[i] = end - sep - 1
        at += s
    return problem




# -- the byte layout of a state (``codec.HEADER``, ``codec.RECORD``) and of ``codec.SAVE_HEAD``, read and written
# as little-endian words. Every position and index below is unsigned: numba wraps a signed index that is
# negative (a compare and an add per access), which keeps a byte loop from being compiled into a copy.
_U1, _U2, _U3, _U4, _U5, _U6, _U7, _U8 = (np.uint64(k) for k in range(1, 9))
_B = np.uint64(255)
HEADER_SIZE = RECORD_SIZE = 44
SAVE_HEAD_SIZE = 29
_HEADER = np.uint64(HEADER_SIZE)
_RECORD = np.uint64(RECORD_SIZE)
_SAVE_HEAD = np.uint64(SAVE_HEAD_SIZE)


@njit(no_cpython_wrapper=True, _nrt=False)
def _get4(buf, p):  # pragma: no cover - compiled
    return (np.uint64(buf[p]) | (np.uint64(buf[p + _U1]) << np.uint64(8)) | (np.uint64(buf[p + _U2]) << np.uint64(16))
            | (np.uint64(buf[p + _U3]) << np.uint64(24)))


@njit(no_cpython_wrapper=True, _nrt=False)
def _get8(buf, p):  # pragma: no cover - compiled
    return _get4(buf, p) | (_get4(buf, p + _U4) << np.uint64(32))


@njit(no_cpython_wrapper=True, _nrt=False)
def _put4(buf, p, v):  # pragma: no cover - compiled
    buf[p] = np.uint8(v & _B)
    buf[p + _U1] = np.uint8((v >> np.uint64(8)) & _B)
    buf[p + _U2] = np.uint8((v >> np.uint64(16)) & _B)
    buf[p + _U3] = np.uint8((v >> np.uint64(24)) & _B)


@njit(no_cpython_wrapper=True, _nrt=False)
def _put8(buf, p, v):  # pragma: no cover - compiled
    _put4(buf, p, v)
    _put4(buf, p + _U4, v >> np.uint64(32))


@njit(no_cpython_wrapper=True, _nrt=False)
def _copy(src, a, dst, b, n):  # pragma: no cover - compiled
    """``dst[b : b + n] = src[a : a + n]`` (unsigned positions)."""
    j = np.uint64(0)
    while j < n:
        dst[b + j] = src[a + j]
        j += _U1


@njit(_nrt=False)
def gather_ranges(src, src_start, length, dst):  # pragma: no cover - compiled
    """``src[src_start[i] : src_start[i] + length[i]]`` of every ``i``, one after the other in ``dst``."""
    b = np.uint64(0)
    for i in range(len(length)):
        n = np.uint64(length[i])
        _copy(src, np.uint64(src_start[i]), dst, b, n)
        b += n


@njit(_nrt=False)
def count_records(buf, start, length):  # pragma: no cover - compiled
    """The number of visit records of the states ``buf[start[i]:][:length[i]]`` (length 0: none), or -1 when
    one's size is not its header's and its records' (as many as its header says)."""
    total = np.int64(0)
    for i in range(len(length)):
        m = length[i]
        if m == 0:
            continue
        if m < HEADER_SIZE:
            return -1
        n = np.int64(_get4(buf, np.uint64(start[i]) + _U8))
        if m != HEADER_SIZE + n * RECORD_SIZE:
            return -1
        total += n
    return total


@njit(_nrt=False)
def decode_into(buf, start, length, d_dev, last, d_head, r_place, r_dev, r_enter, r_gps, r_bcn, r_mask, r_src,
                r_conf, r_miss, r_tent, r_lo, r_next):  # pragma: no cover - compiled
    """Device ``i``'s state ``buf[start[i]:][:length[i]]`` (sizes checked by :func:`count_records`) into row ``i``
    of a fresh state table: its header into ``d_dev`` (the last time in column ``last``, the fix in the first
    four), its visits into the next records of the pool, from record 0 on, chained in stored order from
    ``d_head[i]`` (the caller takes them off the free list). Floats are copied as their bits."""
    dev = d_dev.view(np.uint64)
    enter, gps, bcn, lo = r_enter.view(np.uint64), r_gps.view(np.uint64), r_bcn.view(np.uint64), r_lo.view(np.uint64)
    col = np.uint64(last)
    s = np.uint64(0)
    for i in range(len(length)):
        if length[i] == 0:
            continue
        p = np.uint64(start[i])
        row = np.uint64(i)
        dev[row, col] = _get8(buf, p)
        n = _get4(buf, p + _U8)
        for k in range(4):
            dev[row, np.uint64(k)] = _get8(buf, p + np.uint64(12 + 8 * k))
        if n == 0:
            continue
        d_head[row] = s
        q = p + _HEADER
        end = s + n
        while s < end:
            r_place[s] = np.int32(_get4(buf, q))
            r_dev[s] = i
            enter[s] = _get8(buf, q + _U4)
            gps[s] = _get8(buf, q + np.uint64(12))
            bcn[s] = _get8(buf, q + np.uint64(20))
            r_mask[s] = np.uint32(_get4(buf, q + np.uint64(28)))
            r_src[s] = buf[q + np.uint64(32)]
            r_conf[s] = np.int8(buf[q + np.uint64(33)])
            r_miss[s] = buf[q + np.uint64(34)]
            r_tent[s] = buf[q + np.uint64(35)]
            lo[s] = _get8(buf, q + np.uint64(36))
            s += _U1
            r_next[s - _U1] = np.int32(s) if s < end else np.int32(-1)
            q += _RECORD


@njit
def encode_state(d_dev, last, r_dev, r_place, r_enter, r_gps, r_bcn, r_mask, r_src, r_conf, r_miss, r_tent,
                 r_lo):  # pragma: no cover - compiled
    """Every device's stored state (header, then its visits in record order), one after the other: the buffer,
    each one's start and length (0: no visit and no finite last time), and whether every record's device is in ``d_dev`` (else nothing
    is written)."""
    n = d_dev.shape[0]
    counts = np.zeros(n, np.int64)
    for s in range(len(r_dev)):
        o = r_dev[s]
        if o >= n:
            return np.zeros(0, np.uint8), counts, counts, False
        if o >= 0:
            counts[o] += 1
    dev = d_dev.view(np.uint64)
    col = np.uint64(last)
    start = np.empty(n, np.int64)
    length = np.empty(n, np.int64)
    at = np.empty(n, np.uint64)  # where each device's next record goes
    total = 0
    for i in range(n):
        c = counts[i]
        m = HEADER_SIZE + c * RECORD_SIZE if c > 0 or np.isfinite(d_dev[i, last]) else 0
        start[i] = total
        length[i] = m
        total += m
    buf = np.empty(total, np.uint8)
    for i in range(n):
        if length[i] == 0:
            continue
        p = np.uint64(start[i])
        row = np.uint64(i)
        _put8(buf, p, dev[row, col])
        _put4(buf, p + _U8, np.uint64(counts[i]))
        for k in range(4):
            _put8(buf, p + np.uint64(12 + 8 * k), dev[row, np.uint64(k)])
        at[i] = p + _HEADER
    enter, gps, bcn, lo = r_enter.view(np.uint64), r_gps.view(np.uint64), r_bcn.view(np.uint64), r_lo.view(np.uint64)
    for r in range(len(r_dev)):
        o = r_dev[r]
        if o < 0:
            continue
        u = np.uint64(r)
        q = at[o]
        at[o] = q + _RECORD
        _put4(buf, q, np.uint64(np.int64(r_place[u]) & 0xFFFFFFFF))
        _put8(buf, q + _U4, enter[u])
        _put8(buf, q + np.uint64(12), gps[u])
        _put8(buf, q + np.uint64(20), bcn[u])
        _put4(buf, q + np.uint64(28), np.uint64(r_mask[u]))
        buf[q + np.uint64(32)] = r_src[u]
        buf[q + np.uint64(33)] = np.uint8(np.int64(r_conf[u]) & 0xFF)
        buf[q + np.uint64(34)] = r_miss[u]
        buf[q + np.uint64(35)] = r_tent[u]
        _put8(buf, q + np.uint64(36), lo[u])
    return buf, start, length, True


@njit
def save_blobs(version, due, flags, write, s_buf, s_start, s_len, e_len, t_buf, t_start,
               t_len):  # pragma: no cover - compiled
    """``SAVE``'s records (``codec.SAVE_HEAD``, packed) of devices ``0 .. n - 1``: version (as a float), due time,
    flags, and the lengths of their state (``s_len``, 0 where not ``write``), entry and filter state; where each
    one's state, entry and filter state start in their blobs (3 rows of n + 1: the last is the end); the states
    and the filter states concatenated (``s_buf``/``t_buf`` at ``s_start``/``t_start``)."""
    n = len(flags)
    heads = np.empty(n * SAVE_HEAD_SIZE, np.uint8)
    offsets = np.zeros((3, n + 1), np.int64)
    f = np.empty(2, np.float64)
    bits = f.view(np.uint64)
    for i in range(n):
        sl = s_len[i] if write[i] else 0
        offsets[0, i + 1] = offsets[0, i] + sl
        offsets[1, i + 1] = offsets[1, i] + e_len[i]
        offsets[2, i + 1] = offsets[2, i] + t_len[i]
        p = np.uint64(i) * _SAVE_HEAD
        f[0] = version[i]
        f[1] = due[i]
        _put8(heads, p, bits[0])
        _put8(heads, p + _U8, bits[1])
        heads[p + np.uint64(16)] = flags[i]
        _put4(heads, p + np.uint64(17), np.uint64(sl & 0xFFFFFFFF))
        _put4(heads, p + np.uint64(21), np.uint64(e_len[i] & 0xFFFFFFFF))
        _put4(heads, p + np.uint64(25), np.uint64(t_len[i] & 0xFFFFFFFF))
    states = np.empty(offsets[0, n], np.uint8)
    tracks = np.empty(offsets[2, n], np.uint8)
    for i in range(n):
        if write[i]:
            _copy(s_buf, np.uint64(s_start[i]), states, np.uint64(offsets[0, i]), np.uint64(s_len[i]))
        _copy(t_buf, np.uint64(t_start[i]), tracks, np.uint64(offsets[2, i]), np.uint64(t_len[i]))
    return heads, offsets, states, tracks


__all__ = ["HEADER_SIZE", "NOT_A_NUMBER", "NOT_VERSIONED", "OK", "RECORD_SIZE", "SAVE_HEAD_SIZE", "count_records",
           "decode_into", "encode_state", "gather_ranges", "parse_values", "ranges_differ", "save_blobs"]
