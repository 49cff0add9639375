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

from proxbase.redis_route import key_slots_vectorised
from proximity._redis.resp import key_slots, read_replies
from proximity._redis.scripts import pack

_PART = st.one_of(st.binary(max_size=8), st.sampled_from([b"{", b"}", b"{}", b"p:{", b"}:st", "é".encode()]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_PART, max_size=6).map(b"".join), max_size=40))
def test_key_slots_equal_redis_py(keys: list[bytes]) -> None:
    assert key_slots(keys).tolist() == [key_slot(k) for k in keys]
    assert key_slots_vectorised(keys).tolist() == [key_slot(k) for k in keys]


def _one_by_one(keys: list[bytes]) -> int:
    """How many of ``keys`` :func:`key_slots` sends through redis-py's ``key_slot`` one by one (0: the vectorised
    way), checking that its slots are redis-py's."""
    import proxbase.redis_route as route

    calls = []

    def counted(key: bytes) -> int:
        calls.append(key)
        return key_slot(key)

    real, route.key_slot = route.key_slot, counted
    try:
        assert key_slots(keys).tolist() == [key_slot(k) for k in keys]
    finally:
        route.key_slot = real
    return len(calls)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(_PART, max_size=3).map(b"".join), min_size=128, max_size=700))
def test_many_keys_with_short_tags_take_the_vectorised_way_and_equal_redis_py(keys: list[bytes]) -> None:
    """Hundreds of keys with short hash tags go the vectorised way (a mutant that always goes one by one is
    caught by the count of ``key_slot`` calls); the slots are redis-py's either way."""
    sent = _one_by_one(keys)
    longest = max((len(k) for k in keys), default=0)  # a bound of the longest hashed part
    if len(keys) >= 16 * longest + 64:
        assert sent == 0


def test_which_way_key_slots_go() -> None:
    """A few keys, or keys whose hash tags are long for their number, go one by one through redis-py's
    ``key_slot`` (its C call is cheaper than numpy's passes then); many keys with short tags go the vectorised
    way. Both give redis-py's slots."""
    import uuid

    assert _one_by_one([b"p:{outbox:%d}:stream" % k for k in range(16)]) == 16  # an outbox claim's shards
    assert _one_by_one([f"p:{{{uuid.uuid4()}}}:cap".encode() for _ in range(500)]) == 500  # 36-byte tags
    assert _one_by_one([b"p:{d%d}:c" % k for k in range(300)]) == 0  # tags of 2-4 bytes


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
