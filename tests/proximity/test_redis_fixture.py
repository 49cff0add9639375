"""The Redis fixture reaches a real server, and keys under a test's prefix are its own."""

import redis


def test_redis_fixture_reaches_a_real_server(redis_client: redis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}:{{dev-1}}:probe"
    assert redis_client.set(key, b"1", ex=30)
    assert redis_client.get(key) == b"1"
    info = redis_client.info("server")
    assert "redis_version" in info
    # a Lua script runs: the Redis state store and limiter depend on it
    assert redis_client.eval("return redis.call('GET', KEYS[1])", 1, key) == b"1"
