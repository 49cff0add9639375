"""Hot loops of the Redis state codec (numba): byte ranges copied and compared, stored values parsed.

A batch's states are a few hundred byte ranges of a few dozen bytes each. numpy moves them with an
index array per byte (``np.repeat`` + ``np.arange`` + a fancy index), several allocations and passes
over every byte; these loops copy each range straight, in one pass (:mod:`proximity._redis.codec`).
"""

from __future__ import annotations

from proxbase.jit import njit

#: :func:`parse_values`' answers: every value is ``<version>|<state>``; a value without ``|`` or with 0 or
#: more than 18 digits before it; a version with a character that is no digit
OK, NOT_VERSIONED, NOT_A_NUMBER = 0, 1, 2


@njit
def copy_ranges(src, src_start, length, dst, dst_start):  # pragma: no cover - compiled
    """``dst[dst_start[i] : dst_start[i] + length[i]] = src[src_start[i] : src_start[i] + length[i]]``, every ``i``
    (as slices: twice as fast as a byte loop on ranges of a few dozen bytes)."""
    for i in range(len(length)):
        a = src_start[i]
        b = dst_start[i]
        n = length[i]
        dst[b : b + n] = src[a : a + n]


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


__all__ = ["NOT_A_NUMBER", "NOT_VERSIONED", "OK", "copy_ranges", "parse_values", "ranges_differ"]
