"""Fixtures of the campaigns tests: the limiter and outbox suites run against memory and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from campaigns import MemoryLimiter, MemoryOutbox


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis), pytest.param("redis-cluster-mode", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    from campaigns import RedisLimiter

    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    lim = RedisLimiter(url, prefix, cluster=request.param == "redis-cluster-mode")
    yield lim
    lim.client.close()


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def outbox(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryOutbox(claim_idle_s=5.0, clock=clock)
        return
    from campaigns import RedisOutbox

    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    box = RedisOutbox(url, prefix, claim_idle_s=0.3, clock=clock)
    yield box
    box.client.close()
