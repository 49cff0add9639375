"""The campaign adapters' pipelines in the protocol (:func:`campaigns._redis.run_commands` and
:func:`~campaigns._redis.run_scripts` on a plain client: packed by :mod:`proxbase.resp`, replies parsed there)
answer what redis-py's pipeline answers for the same commands on a real Redis: every argument type encoded
alike, every reply type alike, error replies in their place, a script the server does not hold loaded."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import _redis
from proxbase.resp import arg

pytestmark = pytest.mark.redis

_ARG = st.one_of(st.text(max_size=12), st.binary(max_size=12), st.integers(-(2**62), 2**62),
                 st.floats(allow_nan=False, allow_infinity=False), st.just(0.1), st.just(-0.0))


def _pipeline(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """redis-py's own pipeline of these commands (the path ``run_commands`` takes on other clients)."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


def _same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, Exception) or isinstance(y, Exception):
            assert type(x) is type(y) and str(x) == str(y)
        else:
            assert x == y


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(_ARG, max_size=8))
def test_arguments_reach_redis_as_redis_py_sends_them(redis_url: str, args: list[Any]) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert _redis.raw(client)
        command = ("EVAL", "return ARGV", 0, *args)  # the server hands the arguments back as it got them
        _same(_redis.run_commands(client, [command]), _pipeline(client, [command]))
    finally:
        client.close()


@pytest.mark.parametrize("bad", [True, None, 1j, [1]])
def test_an_argument_redis_py_refuses_is_refused(bad: Any) -> None:
    with pytest.raises(redis.DataError):
        arg(bad)


def test_commands_and_replies_equal_redis_py(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        def commands(k: str) -> list[tuple[Any, ...]]:
            return [("HSET", k + ":h", "tok", '{"a": 1}', "é", b"\x00\xff"), ("PEXPIRE", k + ":h", 60_000, "GT"),
                    ("PEXPIRE", k + ":h", 60_000, "NX"), ("HGET", k + ":h", "é"), ("GET", k + ":none"),
                    ("EVAL", "return {1, 'two', {3, false}, redis.status_reply('OK')}", 0),
                    ("INCRBYFLOAT", k + ":f", 1.5), ("EVAL", "return redis.error_reply('MINE bad')", 0),
                    ("GET", k + ":h"),  # WRONGTYPE, in its place
                    ("EVALSHA", "0" * 40, 0), ("SET", k + ":big", b"x" * 700_000), ("GET", k + ":big"),
                    ("PTTL", k + ":h")]

        ours = _redis.run_commands(client, commands(redis_prefix + ":ours"))
        theirs = _pipeline(client, commands(redis_prefix + ":theirs"))
        theirs[1], theirs[2] = int(theirs[1]), int(theirs[2])  # redis-py's PEXPIRE callback makes a bool
        theirs[6] = str(theirs[6]).encode()  # INCRBYFLOAT's a float
        theirs[10] = b"OK" if theirs[10] is True else theirs[10]  # and SET's a bool
        ours[-1] = theirs[-1] = ours[-1] > 0  # a TTL moves between the two
        _same(ours, theirs)
        assert isinstance(ours[7], redis.ResponseError) and isinstance(ours[9], redis.exceptions.NoScriptError)
        # the connection went back to the pool clean: the next call reads its own replies
        assert _redis.run_commands(client, [("ECHO", "next")]) == [b"next"]
    finally:
        client.close()


def test_run_scripts_loads_a_script_the_server_does_not_hold(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        # a script no server has seen (its own SHA): the first EVALSHA gets NOSCRIPT, then it is loaded
        script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
        key = redis_prefix + ":n"
        calls = [(script, [key], [2]), (script, [key], [3]), (script, [key], [-1])]
        assert _redis.run_scripts(client, calls) == [2, 5, 4]  # in order, each once
        assert client.get(key) == b"4"
        assert _redis.run_scripts(client, calls) == [6, 9, 8]  # loaded now: one round trip
    finally:
        client.close()


def test_run_scripts_on_a_cluster_pipelines_per_node_and_loads_missing_scripts(redis_cluster_url: str,
                                                                               redis_prefix: str) -> None:
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    try:
        script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
        keys = [f"{redis_prefix}:{{{tag}}}:n" for tag in ("a", "b", "c", "d", "e", "f")]  # slots on every node
        assert len({client.get_node_from_key(k).name for k in keys}) > 1
        calls = [(script, [k], [i + 1]) for i, k in enumerate(keys)] + [(script, [keys[0]], [10])]
        # a script no node holds: NOSCRIPT on each, then loaded and run again, in order per key
        assert _redis.run_scripts(client, calls) == [1, 2, 3, 4, 5, 6, 11]
        assert _redis.run_scripts(client, calls) == [12, 4, 6, 8, 10, 12, 22]  # loaded now
        bad = client.register_script("return redis.error_reply('NOPE ' .. ARGV[1])")
        with pytest.raises(redis.ResponseError, match="NOPE x"):
            _redis.run_scripts(client, [(script, [keys[1]], [1]), (bad, [keys[2]], ["x"])])
        assert client.get(keys[1]) == b"5"  # the call before the error ran
    finally:
        client.close()


def test_run_scripts_raises_the_first_error(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        script = client.register_script("return redis.error_reply('NOPE ' .. ARGV[1])")
        with pytest.raises(redis.ResponseError, match="NOPE a"):
            _redis.run_scripts(client, [(script, [], ["a"]), (script, [], ["b"])])
        assert _redis.run_commands(client, [("ECHO", "ok")]) == [b"ok"]
    finally:
        client.close()


@pytest.mark.parametrize("options", [{"decode_responses": True}, {"protocol": 3}])
def test_other_clients_take_redis_py_pipeline(redis_url: str, redis_prefix: str, options: dict[str, Any]) -> None:
    """A client that decodes replies or speaks RESP3 gets redis-py's own answers (its types), not ours."""
    client = redis.Redis.from_url(redis_url, **options)
    try:
        assert not _redis.raw(client)
        commands = [("SET", redis_prefix + ":k", "v"), ("GET", redis_prefix + ":k")]
        _same(_redis.run_commands(client, commands), _pipeline(client, commands))
    finally:
        client.close()


def test_a_lost_connection_is_raised_and_not_pooled(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        conn = client.connection_pool.get_connection()
        client.connection_pool.release(conn)
        conn._sock.close()  # the pooled connection dies under us
        with contextlib.suppress(redis.ConnectionError):  # (the pool may notice first and reconnect)
            _redis.run_commands(client, [("ECHO", "x")])
        assert _redis.run_commands(client, [("ECHO", "y")]) == [b"y"]  # a fresh connection after
    finally:
        client.close()


def test_outbox_scripts_run_in_the_protocol_and_remake_a_lost_group(redis_url: str, redis_prefix: str) -> None:
    """The Redis outbox's scripts go through ``run_scripts``: a stream deleted under it (its consumer group
    gone: NOGROUP) is made again and the call runs, as with redis-py's script call."""
    from campaigns import Offer, RedisOutbox

    box = RedisOutbox(redis_url, redis_prefix)
    try:
        offer = Offer(offer_id="of_1", campaign_id="c", device_id="d1", fence_id="f", ts=1000.0, title="t")
        assert box.put(offer)
        redis.Redis.from_url(redis_url).delete(box._k(0, "stream"))  # the stream and its group are gone
        assert box.claim("w", 10) == []  # NOGROUP: the group is made again, then the claim runs
        assert box.put(Offer(offer_id="of_2", campaign_id="c", device_id="d2", fence_id="f", ts=1001.0, title="t"))
        (entry,) = box.claim("w", 10)
        assert entry.offer.offer_id == "of_2"
        assert box.ack(entry) is True and box.ack(entry) is False
    finally:
        box.close()


def _cluster_commands(k: str) -> list[tuple[Any, ...]]:
    """Commands over keys of several slots (on every node of a 3-master cluster), an error reply among them."""
    out: list[tuple[Any, ...]] = []
    for tag in "abcdef":
        key = f"{k}:{{{tag}}}"
        out += [("HSET", key + ":h", "tok", "é"), ("PEXPIRE", key + ":h", 60_000, "NX"), ("HGET", key + ":h", "tok"),
                ("ZADD", key + ":z", 1.5, "m"), ("ZREM", key + ":z", "m", "x"), ("GET", key + ":h"),  # WRONGTYPE
                ("EVAL", "return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, key + ":n", 7)]
    return out


def test_run_commands_on_a_cluster_answer_what_redis_py_answers(redis_cluster_url: str, redis_prefix: str) -> None:
    """On a cluster client the commands go to each key's node, one pipeline per node, and the replies come back
    in the callers' order, each as redis-py's cluster pipeline answers it (error replies in their places)."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    try:
        assert _redis.raw(client)
        ours = _redis.run_commands(client, _cluster_commands(redis_prefix + ":ours"))
        theirs = _pipeline(client, _cluster_commands(redis_prefix + ":theirs"))
        for i in range(1, len(theirs), 7):  # redis-py's PEXPIRE callback makes a bool
            theirs[i] = int(theirs[i])
        _same(ours, theirs)
        assert sum(isinstance(x, redis.ResponseError) for x in ours) == 6
        assert _redis.raw(RedisCluster.from_url(redis_cluster_url, decode_responses=True)) is False
    finally:
        client.close()


def test_run_commands_on_a_cluster_follow_a_key_moved_to_another_node(redis_cluster_url: str,
                                                                      redis_prefix: str) -> None:
    """A slot in migration whose key has already moved: its node answers ASK, and the command is run where the
    key is now (redis-py sends ASKING there), in its place among the others; after the move, MOVED is followed."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    key, other = f"{redis_prefix}:{{mig}}:n", f"{redis_prefix}:{{oth}}:n"
    slot = redis.crc.key_slot(key.encode())
    masters = {n.name: client.get_redis_connection(n) for n in client.get_primaries()}
    ids = {name: c.execute_command("CLUSTER", "MYID").decode() for name, c in masters.items()}
    src = client.nodes_manager.get_node_from_slot(slot).name
    dst = next(name for name in masters if name != src)
    host, port = dst.split(":")
    try:
        assert _redis.run_commands(client, [("INCRBY", key, 1), ("INCRBY", other, 1)]) == [1, 1]
        masters[dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
        masters[src].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
        masters[src].execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", key)
        assert _redis.run_commands(client, [("INCRBY", other, 1), ("INCRBY", key, 2), ("GET", key)]) == [2, 3, b"3"]
        with pytest.raises(redis.exceptions.AskError):  # the key is gone from its slot's node
            masters[src].execute_command("GET", key)
    finally:
        for c in [masters[dst], *(c for n, c in masters.items() if n != dst)]:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
    try:
        # the slot map redis-py holds still names the old node: MOVED, the map read again, then the new node
        assert _redis.run_commands(client, [("INCRBY", key, 4), ("INCRBY", other, 1)]) == [7, 3]
    finally:
        client.delete(key, other)
        client.close()


def test_a_cluster_client_and_its_router_are_freed_together(redis_cluster_url: str) -> None:
    """The router :func:`run_commands` makes for a cluster client lives on the client: a client dropped by its
    user is collected with its router (a weak map keyed by the client would keep both forever)."""
    import gc
    import weakref

    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    assert _redis.run_commands(client, [("ECHO", "x")]) == [b"x"]
    gone = weakref.ref(client)
    _redis.close(client)
    del client
    gc.collect()
    assert gone() is None
