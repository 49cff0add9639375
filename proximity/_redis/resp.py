"""Redis Cluster hash slots of many keys at once; the pipelined reply parser is :mod:`proxbase.resp`'s
(re-exported here as :func:`read_replies`).

:func:`key_slots` computes ``CRC16(hash tag) mod 16384`` for many keys with numpy
(one pass per byte position of the longest tag), as ``redis.crc.key_slot`` does
for one key.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence

import numpy as np
from redis.crc import key_slot

from proxbase.resp import read_replies

_CRC = np.array([crc_hqx(bytes([b]), 0) for b in range(256)], np.int64)  # CRC16-XMODEM of one byte from 0


def key_slots(keys: Sequence[bytes]) -> np.ndarray:
    """The Redis Cluster hash slot of each key (``redis.crc.key_slot`` of each, vectorised)."""
    n = len(keys)
    if n < 16:
        return np.fromiter(map(key_slot, keys), np.int64, n)
    lengths = np.fromiter(map(len, keys), np.int64, n)
    start = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=start[1:])
    end = start + lengths
    buf = np.frombuffer(b"".join(keys), np.uint8)
    # the hash tag: between the first "{" and the first "}" after it, when that is not empty
    lo, hi = start.copy(), end.copy()
    opens = np.flatnonzero(buf == ord("{"))
    closes = np.flatnonzero(buf == ord("}"))
    if len(opens) and len(closes):
        o = opens[np.minimum(np.searchsorted(opens, start), len(opens) - 1)]
        has_open = (o >= start) & (o < end)
        c = closes[np.minimum(np.searchsorted(closes, o + 1), len(closes) - 1)]
        tagged = has_open & (c > o + 1) & (c < end)
        lo[tagged], hi[tagged] = o[tagged] + 1, c[tagged]
    width = hi - lo
    crc = np.zeros(n, np.int64)
    for j in range(int(width.max()) if n else 0):
        on = j < width
        byte = buf[np.minimum(lo + j, len(buf) - 1)].astype(np.int64)
        step = ((crc << 8) & 0xFFFF) ^ _CRC[((crc >> 8) ^ byte) & 0xFF]
        crc = np.where(on, step, crc)
    return crc % 16384


__all__ = ["key_slots", "read_replies"]
