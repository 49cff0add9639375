"""Scripts that answer NOSCRIPT by EVAL of their source (proxbase.redis_script), on a real Redis and a real
3-master cluster.

The failure they mend: after a failover the node that holds a slot may not hold the script, and redis-py's
answer (SCRIPT LOAD to the masters of its slot map, then EVALSHA again) can load it on other nodes than the
one the call reaches. Modelled deterministically: a user that may not run SCRIPT LOAD at all. redis-py's own
script fails for it; ours runs, on every node, and runs exactly once per call.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from campaigns import _redis
from proxbase.redis_cluster import cluster_seed
from proxbase.redis_script import AsyncScript, Script, register_script

pytestmark = pytest.mark.redis

# counts its runs: a second run of a call (after a NOSCRIPT that did run it) would show as 2
SRC = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def _with_user(url: str, user: str, password: str) -> str:
    host, port, _ = cluster_seed(url)
    return f"redis://{user}:{password}@{host}:{port}/0"


@contextlib.contextmanager
def no_script_load(url: str) -> Iterator[tuple[list[Any], str]]:
    """(admin clients of every node, the URL of a user that may run anything but SCRIPT LOAD and SCRIPT
    FLUSH on each node); every node's script cache is flushed first."""
    admins = _admins(url)
    user, password = f"px-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    try:
        for admin in admins:
            admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                              commands=["+@all", "-script|load", "-script|flush"])
            admin.script_flush()
        yield admins, _with_user(url, user, password)
    finally:
        for admin in admins:
            admin.acl_deluser(user)
            admin.close()


def _admins(url: str) -> list[Any]:
    host, port, options = cluster_seed(url)  # options: the URL's credentials, if any
    first = redis.Redis(host=host, port=port, **options)
    if not first.info("cluster").get("cluster_enabled"):
        return [first]
    nodes = first.cluster("nodes")
    first.close()
    return [redis.Redis(host=addr.split(":")[0], port=int(addr.split(":")[1].split("@")[0]), **options)
            for addr in nodes]


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url"))


def test_a_node_without_the_script_runs_it_once_by_eval(url: str) -> None:
    with no_script_load(url) as (admins, mine):
        client = _redis.connect(mine)  # a RedisCluster on the cluster
        keys = [f"pxs:{uuid.uuid4().hex[:6]}:{{{i}}}" for i in range(12)]  # on a cluster: slots on every master
        try:
            theirs = client.register_script(SRC)
            with pytest.raises(redis.exceptions.NoPermissionError):  # redis-py's answer needs SCRIPT LOAD
                theirs(keys=keys[:1], args=[1])
            ours = register_script(client, SRC)
            assert type(ours) is Script and ours.sha == theirs.sha
            assert [ours(keys=[k], args=[5]) for k in keys] == [5] * 12  # by EVAL: once each
            holders = [admin for admin in admins if _holds_a_key(admin, keys)]
            assert holders and all(admin.script_exists(ours.sha) == [True] for admin in holders)  # cached there
            assert [ours(keys=[k], args=[1]) for k in keys] == [6] * 12  # by EVALSHA
        finally:
            for k in keys:
                client.delete(k)
            _redis.close(client)


def _holds_a_key(admin: Any, keys: list[str]) -> bool:
    for k in keys:
        try:
            if admin.exists(k):
                return True
        except redis.exceptions.ResponseError:  # MOVED: another node's slot (or a replica)
            pass
    return False


async def test_the_async_script_does_the_same(url: str) -> None:
    with no_script_load(url) as (_admins, mine):
        client = await _redis.connect_async(mine)
        keys = [f"pxs:{uuid.uuid4().hex[:6]}:{{{i}}}" for i in range(12)]
        try:
            ours = register_script(client, SRC)
            assert type(ours) is AsyncScript
            assert [await ours(keys=[k], args=[2]) for k in keys] == [2] * 12
            assert [await ours(keys=[k], args=[2]) for k in keys] == [4] * 12
        finally:
            for k in keys:
                await client.delete(k)
            await _redis.aclose(client)


def test_other_errors_are_not_retried(redis_url: str, redis_prefix: str) -> None:
    """Only NOSCRIPT (nothing ran) leads to EVAL: an error of the script itself is raised after one run."""
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"{redis_prefix}:n"
        fails = register_script(client, "redis.call('INCR', KEYS[1]); return redis.error_reply('no')")
        with pytest.raises(redis.exceptions.ResponseError, match="no"):
            fails(keys=[key])
        assert client.get(key) == b"1"
    finally:
        client.close()
