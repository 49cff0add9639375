"""Fixtures of the campaigns tests: the limiter and outbox suites run against memory, one Redis (one
script per offer, and the cluster protocol on one server) and a real 3-master Redis Cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from campaigns import MemoryLimiter, MemoryOutbox

REDIS = pytest.mark.redis


def cluster_prefix() -> str:
    return f"pxtest-{uuid.uuid4().hex[:12]}"  # no braces: a prefix must not change the keys' slots


def drop_cluster_keys(client: Any, prefix: str) -> None:
    """Delete every key under ``prefix`` on every master of a cluster client."""
    for node in client.get_primaries():
        conn = client.get_redis_connection(node)
        for key in list(conn.scan_iter(match=f"{prefix}*", count=1000)):
            conn.delete(key)


@pytest.fixture(params=["memory", pytest.param("redis", marks=REDIS), pytest.param("redis-cluster-mode", marks=REDIS),
                        pytest.param("redis-cluster", marks=REDIS)])
def limiter(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    from campaigns import RedisLimiter

    if request.param == "redis-cluster":
        prefix = cluster_prefix()
        lim = RedisLimiter(request.getfixturevalue("redis_cluster_url"), prefix)
        assert lim.cluster
        yield lim
        drop_cluster_keys(lim.client, prefix)
        lim.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    lim = RedisLimiter(url, prefix, cluster=request.param == "redis-cluster-mode")
    yield lim
    lim.close()


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=REDIS), pytest.param("redis-sharded", marks=REDIS),
                        pytest.param("redis-cluster", marks=REDIS)])
def outbox(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryOutbox(claim_idle_s=5.0, clock=clock)
        return
    from campaigns import RedisOutbox

    if request.param == "redis-cluster":
        prefix = cluster_prefix()
        box = RedisOutbox(request.getfixturevalue("redis_cluster_url"), prefix, claim_idle_s=0.3, clock=clock)
        assert box.shards == 16
        yield box
        drop_cluster_keys(box.client, prefix)
        box.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    box = RedisOutbox(url, prefix, claim_idle_s=0.3, clock=clock, shards=4 if request.param == "redis-sharded" else None)
    yield box
    box.close()
