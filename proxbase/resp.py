"""The Redis protocol (RESP) without redis-py's per-command Python: commands packed in one join, many
pipelined replies parsed in one small function.

redis-py packs a command argument by argument and parses a reply in about twenty Python calls; a batch
of hundreds of commands (the presence store's state keys, the campaign decisions' script calls) paid
more for that than for the rest of its work. :func:`pack` / :func:`bulk` build commands,
:func:`read_replies` reads the socket of a redis-py connection in large chunks and parses the RESP2/RESP3
types our commands get back (bulk and simple strings, nil, integers, arrays, errors); an error reply
becomes the exception redis-py would raise for it (``MOVED``, ``ASK``, ``NOSCRIPT``, ...), returned in
its place, not raised. :func:`arg` encodes an argument as redis-py's default encoder does.

In ``proxbase`` so that the presence store (:mod:`proximity._redis`) and the campaign adapters
(:mod:`campaigns._redis`) share one implementation. Importing it imports redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis as redis_lib
from redis._parsers.base import BaseParser


def arg(value: Any) -> bytes:
    """One command argument as redis-py's encoder (``decode_responses`` off, utf-8) writes it: bytes as they
    are, str in utf-8, int and float by ``repr``; anything else (bool, None, ...) raises ``DataError``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise redis_lib.DataError(f"Invalid input of type: {type(value).__name__!r}. Convert to a bytes, string, "
                              "int or float first.")


def bulk(parts: Sequence[bytes]) -> list[bytes]:
    """Each of ``parts`` as a protocol bulk string."""
    return [b"$%d\r\n%b\r\n" % (len(x), x) for x in parts]


def pack(parts: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol."""
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%b\r\n" % (len(x), x) for x in parts])


_CHUNK = 1 << 18


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


__all__ = ["arg", "bulk", "pack", "read_replies"]
