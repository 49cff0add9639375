"""API keys (hashed, scoped, constant-time compare), the key file format, and the token bucket."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proximity.errors import ValidationError, describe
from proximity.service.auth import KeyRing, RateLimiter, generate_key, hash_key, retry_after_header


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("secret") == hashlib.sha256(b"secret").hexdigest()


def test_parse_and_authenticate(tmp_path) -> None:
    k1, k2 = generate_key(), generate_key()
    assert k1 != k2 and len(k1) > 40
    path = tmp_path / "keys.txt"
    path.write_text(f"# keys\n\nios:sdk:{hash_key(k1)}\n  ops : admin,sdk,gateway : {hash_key(k2)}\n")
    ring = KeyRing.from_file(path)
    assert len(ring) == 2
    a = ring.authenticate(k1)
    assert a is not None and a.name == "ios" and a.scopes == {"sdk"}
    b = ring.authenticate(k2)
    assert b is not None and b.name == "ops" and b.allows("admin") and b.allows("gateway")
    assert ring.authenticate(k1 + "x") is None
    assert ring.authenticate("") is None
    assert ring.authenticate(None) is None
    # the file never holds the key itself
    assert k1 not in path.read_text()


@pytest.mark.parametrize(
    ("text", "line", "col", "field", "match"),
    [
        ("ios:sdk", 1, 1, None, "expected name:scope"),
        ("\nios:root:" + "a" * 64, 2, 5, "scope", "unknown scope 'root'"),
        ("ios:sdk:abc", 1, 9, "sha256", "64 hex digits"),
        ("bad name:sdk:" + "a" * 64, 1, 1, "name", "key name"),
        (f"a:sdk:{'a' * 64}\na:admin:{'b' * 64}", 2, 1, "name", "duplicate key name 'a'"),
    ],
)
def test_key_file_errors_name_line_and_column(tmp_path, text, line, col, field, match) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    with pytest.raises(ValidationError, match=match) as info:
        KeyRing.from_file(path)
    exc = info.value
    assert (exc.source, exc.line, exc.col, exc.field) == (str(path), line, col, field)
    assert describe(exc).startswith(f"{path}:{line}:{col}: ")


def test_keys_from_environment() -> None:
    k = generate_key()
    env = {"PROXIMITY_API_KEYS": f"gw:gateway:{hash_key(k)};admin:admin:{hash_key('x')}"}
    ring = KeyRing.from_env(env)
    assert ring.authenticate(k).name == "gw"  # type: ignore[union-attr]
    assert len(KeyRing.from_env({})) == 0
    with pytest.raises(ValidationError) as info:
        KeyRing.from_env({"PROXIMITY_API_KEYS": "gw:gateway:nothex"})
    assert info.value.source == "$PROXIMITY_API_KEYS"


def test_merged_rejects_duplicate_names() -> None:
    a = KeyRing.parse(f"a:sdk:{hash_key('1')}")
    with pytest.raises(ValidationError, match="duplicate"):
        a.merged(KeyRing.parse(f"a:admin:{hash_key('2')}"))


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=6, unique=True), st.text(max_size=30))
def test_authenticate_finds_exactly_the_matching_key(keys: list[str], guess: str) -> None:
    ring = KeyRing.parse("\n".join(f"k{i}:sdk:{hash_key(k)}" for i, k in enumerate(keys)))
    found = ring.authenticate(guess)
    if guess in keys:
        assert found is not None and found.name == f"k{keys.index(guess)}"
    else:
        assert found is None


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_burst_then_rate() -> None:
    clock = FakeClock()
    rl = RateLimiter(rate=10, burst=3, clock=clock)
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.take("a")
    assert wait == pytest.approx(0.1)
    assert rl.take("b") == 0.0  # buckets are per key
    clock.t += 0.1
    assert rl.take("a") == 0.0
    assert rl.take("a") > 0
    clock.t += 100  # refills only up to the burst
    assert [rl.take("a") for _ in range(4)].count(0.0) == 3


@given(st.lists(st.floats(min_value=0, max_value=2), max_size=60))
def test_token_bucket_never_exceeds_rate_times_time_plus_burst(gaps: list[float]) -> None:
    clock = FakeClock()
    rate, burst = 5.0, 4.0
    rl = RateLimiter(rate=rate, burst=burst, clock=clock)
    allowed = 0
    for gap in gaps:
        clock.t += gap
        if rl.take("k") == 0.0:
            allowed += 1
    assert allowed <= burst + rate * sum(gaps) + 1e-9


def test_rate_zero_disables_and_retry_after_rounds_up() -> None:
    rl = RateLimiter(rate=0)
    assert all(rl.take("a") == 0.0 for _ in range(1000))
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"


@pytest.mark.redis
async def test_redis_bucket_is_shared_and_falls_back_to_the_local_one(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    from proximity.service.auth import RedisRateLimiter

    one, two = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    try:
        a, b = RedisRateLimiter(one, redis_prefix, 1.0, 2), RedisRateLimiter(two, redis_prefix, 1.0, 2)
        assert [await a.acquire("k"), await b.acquire("k")] == [0.0, 0.0]
        wait = await a.acquire("k")
        assert 0 < wait <= 1.0
        assert await b.acquire("other") == 0.0
        assert await RedisRateLimiter(one, redis_prefix, 0, 1).acquire("k") == 0.0  # 0: no limit
    finally:
        await one.aclose()
        await two.aclose()
    away = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    limiter = RedisRateLimiter(away, redis_prefix, 1.0, 1)
    assert await limiter.acquire("k") == 0.0  # Redis unreachable: the worker's own bucket decides
    assert await limiter.acquire("k") > 0
    await away.aclose()
