"""The Redis state store's own reply reader and vectorised hash slots: :func:`key_slots` equals redis-py's
``key_slot`` on any key (hash tags, empty tags, unclosed braces, non-ASCII), and :func:`read_replies` gives
what redis-py's parser gives for the same pipelined replies of a real Redis (every type our commands get,
error replies as their exceptions, values larger than one socket read)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from proximity._redis.resp import key_slots, read_replies
from proximity._redis.scripts import pack

_PART = st.one_of(st.binary(max_size=8), st.sampled_from([b"{", b"}", b"{}", b"p:{", b"}:st", "é".encode()]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_PART, max_size=6).map(b"".join), max_size=40))
def test_key_slots_equal_redis_py(keys: list[bytes]) -> None:
    assert key_slots(keys).tolist() == [key_slot(k) for k in keys]


def _commands(prefix: str) -> list[tuple[bytes, ...]]:
    big = bytes(range(256)) * 3000  # 768 kB: several reads of the socket
    k = prefix.encode()
    return [(b"SET", k + b":a", b"x\r\ny"), (b"GET", k + b":a"), (b"GET", k + b":missing"), (b"SET", k + b":big", big),
            (b"GET", k + b":big"), (b"ZADD", k + b":z", b"1.5", b"m1", b"2", b"m2"),
            (b"ZRANGEBYSCORE", k + b":z", b"-inf", b"+inf"), (b"HSET", k + b":h", b"f", b"v"),
            (b"HMGET", k + b":h", b"f", b"nope"), (b"INCR", k + b":a"), (b"EVALSHA", b"0" * 40, b"0"),
            (b"EVAL", b"return {1, 'two', {false}}", b"0"), (b"GET", k + b":empty"), (b"SET", k + b":empty", b""),
            (b"GET", k + b":empty"), (b"PING",)]


@pytest.mark.redis
@pytest.mark.parametrize("protocol", [2, 3])
def test_read_replies_equals_redis_py(redis_url: str, redis_prefix: str, protocol: int) -> None:
    def run(reader: Any, suffix: str) -> list[Any]:
        client = redis.Redis.from_url(redis_url, protocol=protocol)
        try:
            conn = client.connection_pool.get_connection()
            cmds = _commands(redis_prefix + suffix)
            conn.send_packed_command([b"".join(pack(c) for c in cmds)])
            return reader(conn, len(cmds))
        finally:
            client.close()

    def redis_py(conn: Any, n: int) -> list[Any]:
        out: list[Any] = []
        for _ in range(n):
            try:
                out.append(conn.read_response())
            except redis.ResponseError as exc:
                out.append(exc)
        return out

    def plain(x: Any) -> Any:  # exceptions compared by type and text; simple strings as bytes
        if isinstance(x, Exception):
            return (type(x), str(x))
        if isinstance(x, list):
            return [plain(v) for v in x]
        return x.encode() if isinstance(x, str) else x

    ours, theirs = run(read_replies, ":ours"), run(redis_py, ":theirs")
    assert [plain(x) for x in ours] == [plain(x) for x in theirs]
    assert isinstance(ours[10], redis.exceptions.NoScriptError)
    assert ours[4] == bytes(range(256)) * 3000 and ours[2] is None
