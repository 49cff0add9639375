"""The hot loop of :mod:`proximity.plain_json` (numba): a ``POST /v1/pings`` body of plain pings read straight
into columns, with no Python object per ping.

:func:`scan_pings` accepts a strict subset of JSON and answers -1 ("not plain": the caller parses the body
the general way) for anything outside it, so it never has to judge a body, only to recognise the common
one: ``{"pings": [...]}`` (optionally with ``"batch_id"``: a string or null) or a bare list of pings, each
ping an object of exactly the five members ``device_id`` (a string of printable ASCII, no escapes),
``lon``, ``lat``, ``accuracy_m`` and ``ts`` (JSON numbers), in any order, with JSON whitespace anywhere.

Numbers are converted exactly as a correctly rounded parser does (the way ``orjson`` and ``float`` do) when
their digits, trailing zeros dropped, make an integer of at most 2**53 and their decimal exponent is within
+-22: that integer and the power of ten are then both exact doubles, and one multiplication or division
rounds once (Clinger's fast path). Any other number is listed for the caller to convert with ``float``.
"""

from __future__ import annotations

import numpy as np

from proxbase.jit import njit

NOT_PLAIN = -1
#: the names the scanner knows, as rows of bytes padded with 0 (``NAME_LEN`` their lengths): the five
#: members of a ping (codes 0-4, its column order), then the body's ``pings`` and ``batch_id``
NAMES = (b"device_id", b"lon", b"lat", b"accuracy_m", b"ts", b"pings", b"batch_id")
NAME_BYTES = np.zeros((len(NAMES), max(map(len, NAMES))), np.uint8)
for _k, _name in enumerate(NAMES):
    NAME_BYTES[_k, : len(_name)] = np.frombuffer(_name, np.uint8)
NAME_LEN = np.array([len(n) for n in NAMES], np.int64)
PINGS, BATCH_ID = 5, 6
ALL_MEMBERS = 31  # the five members' bits
POW10 = np.array([10.0**k for k in range(23)])
EXACT = 2**53  # the largest integer below which every integer is an exact double

_SPACE, _TAB, _LF, _CR = 32, 9, 10, 13
_QUOTE, _BACKSLASH = 34, 92
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET, _COMMA, _COLON = 123, 125, 91, 93, 44, 58
_MINUS, _PLUS, _DOT, _ZERO, _NINE, _E, _LOWER_E = 45, 43, 46, 48, 57, 69, 101
_N, _U, _L = 110, 117, 108


@njit(no_cpython_wrapper=True, _nrt=False)
def _skip(buf, i):  # pragma: no cover - compiled
    """The first index at or after ``i`` that is not JSON whitespace."""
    n = len(buf)
    while i < n:
        c = buf[i]
        if c != _SPACE and c != _LF and c != _CR and c != _TAB:
            return i
        i += 1
    return i


@njit(no_cpython_wrapper=True, _nrt=False)
def _string_end(buf, i):  # pragma: no cover - compiled
    """``buf[i]`` opens a string: the index of its closing quote, or -1 when it holds anything but printable
    ASCII without escapes (or does not end)."""
    n = len(buf)
    j = i + 1
    while j < n:
        c = buf[j]
        if c == _QUOTE:
            return j
        if c < 0x20 or c > 0x7E or c == _BACKSLASH:
            return -1
        j += 1
    return -1


@njit(no_cpython_wrapper=True, _nrt=False)
def _name_code(buf, a, b, names, lengths):  # pragma: no cover - compiled
    """The code of the name ``buf[a:b]`` (its row in ``names``), or -1. The names differ in length or in
    their second byte ("lon", "lat"), so those pick the one candidate that is then compared."""
    size = b - a
    for k in range(len(lengths)):
        if lengths[k] == size and (size < 2 or names[k, 1] == buf[a + 1]):
            for j in range(size):
                if names[k, j] != buf[a + j]:
                    return -1
            return k
    return -1


@njit(no_cpython_wrapper=True, _nrt=False)
def _number(buf, i, out, at, slow, n_slow):  # pragma: no cover - compiled
    """Read the JSON number at ``buf[i]`` into ``out[at]`` (or list ``(at, start, end)`` as ``slow[n_slow]``
    when it needs ``float``); returns ``(end index, n_slow)``, the end -1 when it is no JSON number."""
    n = len(buf)
    start = i
    neg = False
    if i < n and buf[i] == _MINUS:
        neg = True
        i += 1
    if i >= n or buf[i] < _ZERO or buf[i] > _NINE:
        return -1, n_slow
    m = np.uint64(0)
    digits = 0  # significant digits kept in m
    exp10 = 0
    exact = True  # every significant digit is in m
    if buf[i] == _ZERO:
        i += 1
    else:
        while i < n and _ZERO <= buf[i] <= _NINE:
            if digits < 19:
                m = m * np.uint64(10) + np.uint64(buf[i] - _ZERO)
                digits += 1
            else:
                exp10 += 1
                if buf[i] != _ZERO:
                    exact = False
            i += 1
    integer = True
    if i < n and buf[i] == _DOT:
        integer = False
        i += 1
        if i >= n or buf[i] < _ZERO or buf[i] > _NINE:
            return -1, n_slow
        while i < n and _ZERO <= buf[i] <= _NINE:
            d = buf[i] - _ZERO
            if digits < 19 and (digits > 0 or d != 0):
                m = m * np.uint64(10) + np.uint64(d)
                digits += 1
                exp10 -= 1
            elif digits == 0:  # a leading zero of the fraction
                exp10 -= 1
            elif d != 0:
                exact = False
            i += 1
    if i < n and (buf[i] == _E or buf[i] == _LOWER_E):
        integer = False
        i += 1
        sign = 1
        if i < n and (buf[i] == _PLUS or buf[i] == _MINUS):
            if buf[i] == _MINUS:
                sign = -1
            i += 1
        if i >= n or buf[i] < _ZERO or buf[i] > _NINE:
            return -1, n_slow
        e = 0
        while i < n and _ZERO <= buf[i] <= _NINE:
            if e < 100000:
                e = e * 10 + (buf[i] - _ZERO)
            i += 1
        exp10 += sign * e
    if m == np.uint64(0) and exact:
        out[at] = -0.0 if neg and not integer else 0.0  # "-0" is the integer 0, "-0.0" the float
        return i, n_slow
    if m > np.uint64(EXACT) or exp10 < -22:
        while m % np.uint64(10) == np.uint64(0):  # trailing zeros: a smaller integer, the same value
            m = m // np.uint64(10)
            exp10 += 1
    if exact and m <= np.uint64(EXACT) and -22 <= exp10 <= 22:
        v = float(m)
        v = v * POW10[exp10] if exp10 >= 0 else v / POW10[-exp10]
        out[at] = -v if neg else v
    else:
        slow[n_slow, 0] = at
        slow[n_slow, 1] = start
        slow[n_slow, 2] = i
        n_slow += 1
    return i, n_slow


@njit(no_cpython_wrapper=True, _nrt=False)
def _member(buf, i, names, lengths, lo, hi, seen):  # pragma: no cover - compiled
    """The object member whose name starts at ``buf[i]`` (a quote): ``(its code, the index of its value)``,
    the code -1 when the name is not one of codes ``lo..hi-1`` or is in ``seen`` (a bit per code) already."""
    n = len(buf)
    if i >= n or buf[i] != _QUOTE:
        return -1, i
    end = _string_end(buf, i)
    if end < 0:
        return -1, i
    code = _name_code(buf, i + 1, end, names, lengths)
    if code < lo or code >= hi or seen & (1 << code):
        return -1, i
    i = _skip(buf, end + 1)
    if i >= n or buf[i] != _COLON:
        return -1, i
    return code, _skip(buf, i + 1)


@njit(no_cpython_wrapper=True, _nrt=False)
def _after(buf, i, close):  # pragma: no cover - compiled
    """After a value at ``buf[i]``: ``(index of the next value, False)`` past a comma, ``(index after it, True)``
    past the ``close`` byte that ends its object or list, ``(-1, False)`` for anything else."""
    i = _skip(buf, i)
    if i < len(buf) and buf[i] == _COMMA:
        return _skip(buf, i + 1), False
    if i < len(buf) and buf[i] == close:
        return i + 1, True
    return -1, False


@njit(no_cpython_wrapper=True, _nrt=False)
def _rows(buf, i, names, lengths, max_rows, max_id, nums, slow, ids, id_end):  # pragma: no cover - compiled
    """Read the list of pings that ``buf[i]`` opens (see :func:`scan_pings`); returns ``(index after it,
    rows, slow numbers)``, the index -1 when it is not plain."""
    n = len(buf)
    i = _skip(buf, i + 1)
    rows = 0
    n_slow = 0
    at_id = 0
    if i < n and buf[i] == _RBRACKET:  # no pings: the general path says what is wrong
        return -1, 0, 0
    while True:
        if i >= n or buf[i] != _LBRACE or rows >= max_rows:
            return -1, 0, 0
        seen = 0
        i = _skip(buf, i + 1)
        while True:
            code, i = _member(buf, i, names, lengths, 0, PINGS, seen)
            if code < 0:
                return -1, 0, 0
            seen |= 1 << code
            if code == 0:
                if i >= n or buf[i] != _QUOTE:
                    return -1, 0, 0
                end = _string_end(buf, i)
                if end < 0 or end == i + 1 or end - i - 1 > max_id:
                    return -1, 0, 0
                blank = True
                for j in range(i + 1, end):
                    c = buf[j]
                    ids[at_id] = c
                    at_id += 1
                    if c != _SPACE:
                        blank = False
                if blank:
                    return -1, 0, 0
                ids[at_id] = 0  # ids hold no NUL (printable ASCII): it cuts them apart
                at_id += 1
                id_end[rows] = at_id
                i = end + 1
            else:
                i, n_slow = _number(buf, i, nums, rows * 4 + code - 1, slow, n_slow)
                if i < 0:
                    return -1, 0, 0
            i, closed = _after(buf, i, _RBRACE)
            if i < 0:
                return -1, 0, 0
            if closed:
                break
        if seen != ALL_MEMBERS:
            return -1, 0, 0
        rows += 1
        i, closed = _after(buf, i, _RBRACKET)
        if i < 0:
            return -1, 0, 0
        if closed:
            return i, rows, n_slow


@njit(_nrt=False)
def scan_pings(buf, names, lengths, max_rows, max_id, nums, slow, ids, id_end, batch_id):  # pragma: no cover - compiled
    """Read a plain pings body (see the module docstring) into ``nums`` (four per ping: lon, lat, accuracy_m,
    ts), ``ids`` (the device ids' bytes, each followed by a NUL; ``id_end[r]``: where row ``r``'s ends) and
    ``slow`` (numbers left to ``float``: flat index into ``nums``, start, end). ``batch_id[0:2]``: the batch
    id's span in ``buf`` (-1, -1: none or null). Returns ``(rows, slow numbers)``, rows -1 (``NOT_PLAIN``)
    for a body that is not plain or has more than ``max_rows`` pings or a device id longer than ``max_id``.

    The arrays must hold the worst case: ``id_end`` a row per ping it may read (``max_rows``, or fewer when
    the body has fewer ``{``), ``nums`` and ``slow`` four per row, ``ids`` the body's length."""
    n = len(buf)
    batch_id[0] = -1
    batch_id[1] = -1
    i = _skip(buf, 0)
    if i >= n:
        return NOT_PLAIN, 0
    rows, n_slow = -1, 0
    if buf[i] == _LBRACKET:
        i, rows, n_slow = _rows(buf, i, names, lengths, max_rows, max_id, nums, slow, ids, id_end)
        if i < 0:
            return NOT_PLAIN, 0
    elif buf[i] == _LBRACE:
        seen = 0
        i = _skip(buf, i + 1)
        while True:
            code, i = _member(buf, i, names, lengths, PINGS, BATCH_ID + 1, seen)
            if code < 0 or i >= n:
                return NOT_PLAIN, 0
            seen |= 1 << code
            if code == PINGS:
                if buf[i] != _LBRACKET:
                    return NOT_PLAIN, 0
                i, rows, n_slow = _rows(buf, i, names, lengths, max_rows, max_id, nums, slow, ids, id_end)
                if i < 0:
                    return NOT_PLAIN, 0
            elif buf[i] == _QUOTE:
                end = _string_end(buf, i)
                if end < 0:
                    return NOT_PLAIN, 0
                batch_id[0] = i + 1
                batch_id[1] = end
                i = end + 1
            elif i + 4 <= n and buf[i] == _N and buf[i + 1] == _U and buf[i + 2] == _L and buf[i + 3] == _L:
                i += 4
            else:
                return NOT_PLAIN, 0
            i, closed = _after(buf, i, _RBRACE)
            if i < 0:
                return NOT_PLAIN, 0
            if closed:
                break
        if rows < 0:
            return NOT_PLAIN, 0
    else:
        return NOT_PLAIN, 0
    if _skip(buf, i) < n:  # something after the body
        return NOT_PLAIN, 0
    return rows, n_slow
