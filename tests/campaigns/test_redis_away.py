"""A Redis that cannot be reached is StoreUnavailable from every campaign adapter (the service's one 503)."""

from __future__ import annotations

import socket

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from campaigns import CapCheck, RedisLimiter, RedisOutbox
from proxbase import StoreUnavailable


def dead_client() -> redis.Redis:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def test_caps_and_outbox_with_redis_away_raise_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="shared state unavailable \\(offer outbox"):
        RedisOutbox(dead_client(), prefix="away")
    limiter = RedisLimiter(dead_client(), prefix="away")
    check = CapCheck(name="c", scope="device", scope_id="d1", limit=1, since=0.0, ttl_s=60.0, label="c")
    with pytest.raises(StoreUnavailable, match="shared state unavailable \\(frequency caps"):
        limiter.acquire("t1", [check], 10.0)
    with pytest.raises(StoreUnavailable):
        limiter.forget("d1")
