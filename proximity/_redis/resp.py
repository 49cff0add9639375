"""Reading many pipelined replies at once, and Redis Cluster hash slots of many keys at once.

redis-py parses a reply in about twenty Python calls; a cluster batch of 500
devices waits for about a thousand replies (a ``GET`` and a ``SAVE`` call per
device: nearly every device is its own hash slot), so its parser cost more than
the rest of the batch. :func:`read_replies` reads the socket in large chunks and
parses the RESP2/RESP3 types our commands get back (bulk and simple strings,
nil, integers, arrays, errors) in one small function; an error reply becomes the
exception redis-py would raise for it (``MOVED``, ``ASK``, ``NOSCRIPT``, ...),
returned in its place, not raised.

:func:`key_slots` computes ``CRC16(hash tag) mod 16384`` for many keys with numpy
(one pass per byte position of the longest tag), as ``redis.crc.key_slot`` does
for one key.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis as redis_lib
from redis._parsers.base import BaseParser
from redis.crc import key_slot

_CHUNK = 1 << 18
_CRC = np.array([crc_hqx(bytes([b]), 0) for b in range(256)], np.int64)  # CRC16-XMODEM of one byte from 0


class _Short(Exception):
    """The buffer ends inside a reply: read more."""


def _error(text: bytes) -> Exception:
    return BaseParser.parse_error(text.decode("utf-8", "replace"))


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """The reply starting at ``buf[pos]`` and where the next one starts (raises :class:`_Short`)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Short
    kind = buf[pos]
    if kind == 36 or kind == 33:  # "$" bulk string, "!" bulk error
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if stop + 2 > len(buf):
            raise _Short
        return (buf[end + 2 : stop] if kind == 36 else _error(buf[end + 2 : stop])), stop + 2
    if kind == 42 or kind == 126:  # "*" array, "~" set
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        items = []
        at = end + 2
        for _ in range(n):
            item, at = _parse(buf, at)
            items.append(item)
        return items, at
    if kind == 95:  # "_" RESP3 nil
        return None, end + 2
    if kind == 58:  # ":" integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # "+" simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # "-" error
        return _error(buf[pos + 1 : end]), end + 2
    raise redis_lib.exceptions.InvalidResponse(f"unexpected reply type {chr(kind)!r}")


def read_replies(conn: Any, n: int, errors: list[int] | None = None) -> list[Any]:
    """The next ``n`` replies on redis-py connection ``conn`` (error replies as their exceptions; their
    positions are appended to ``errors``)."""
    sock = conn._sock
    # redis-py's pure-Python parsers keep a SocketBuffer: when it is empty the socket is ours to read; any
    # other parser (hiredis) or bytes already buffered: redis-py reads
    unread = getattr(getattr(conn._parser, "_buffer", None), "unread_bytes", None)
    out: list[Any] = []
    if sock is None or unread is None or unread():
        for _ in range(n):
            try:
                out.append(conn.read_response())
            except redis_lib.ResponseError as exc:
                out.append(exc)
    else:
        data, pos, size, k = b"", 0, 0, 0
        append, find = out.append, data.find
        while k < n:
            try:
                while k < n:
                    end = find(b"\r\n", pos)
                    if end < 0:
                        raise _Short
                    if data[pos] == 36 and data[pos + 1] != 45:  # the common reply, a bulk string: inline
                        stop = end + 2 + int(data[pos + 1 : end])
                        if stop + 2 > size:
                            raise _Short
                        append(data[end + 2 : stop])
                        pos = stop + 2
                    else:
                        reply, pos = _parse(data, pos)
                        if isinstance(reply, Exception) and errors is not None:
                            errors.append(k)
                        append(reply)
                    k += 1
            except _Short:
                try:
                    chunk = sock.recv(_CHUNK)
                except TimeoutError as exc:
                    raise redis_lib.TimeoutError("Timeout reading from the Redis server") from exc
                except OSError as exc:
                    raise redis_lib.ConnectionError(f"Error while reading from the Redis server: {exc}") from exc
                if not chunk:
                    raise redis_lib.ConnectionError("Connection closed by server.") from None
                data = data[pos:] + chunk
                pos, size, find = 0, len(data), data.find
        if pos != len(data):
            raise redis_lib.exceptions.InvalidResponse("more replies than commands")
        return out
    if errors is not None:
        errors.extend(i for i, x in enumerate(out) if isinstance(x, Exception))
    return out


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
