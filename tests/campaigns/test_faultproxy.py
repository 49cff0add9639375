"""The fault proxy (tests/_faultproxy.py) in front of a real Redis does what each fault says."""

from __future__ import annotations

import pytest
import redis
from _faultproxy import FaultProxy
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry


@pytest.mark.redis
def test_refuse_blackhole_cut_and_restore(redis_url: str, redis_prefix: str) -> None:
    target = parse_url(redis_url)
    with FaultProxy(target.get("host", "127.0.0.1"), int(target.get("port", 6379))) as proxy:
        client = redis.Redis.from_url(proxy.url(int(target.get("db", 0))), socket_timeout=0.3,
                                      socket_connect_timeout=0.3, retry=Retry(NoBackoff(), 0))
        key = f"{redis_prefix}:probe"
        assert client.set(key, "x" * 100_000) and proxy.stats["connections"] == 1
        proxy.refuse()
        with pytest.raises(redis.ConnectionError):  # the open connection reset, a new one refused
            client.get(key)
        proxy.restore()
        assert client.get(key) == b"x" * 100_000
        proxy.blackhole()
        with pytest.raises(redis.TimeoutError):  # accepted, never answered
            client.get(key)
        proxy.restore()
        assert client.ping()
        before = proxy.stats["connections"]
        proxy.cut()  # the idle connection is reset: the client notices and reconnects (new connections pass)
        assert client.ping() and proxy.stats["connections"] == before + 1
        proxy.cut_after(1000)  # the 100 kB reply is cut after 1000 bytes
        with pytest.raises(redis.ConnectionError):
            client.get(key)
        assert client.get(key) == b"x" * 100_000
        assert proxy.stats["resets"] >= 3
        client.close()
