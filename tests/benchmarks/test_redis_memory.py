"""The Redis memory benchmark runs on a real Redis, leaves no key behind and reports every figure."""

from __future__ import annotations

import pytest


@pytest.mark.redis
def test_redis_memory_measures_real_keys_and_cleans_up(redis_url: str, redis_client: object) -> None:
    from benchmarks.redis_memory import measure

    before = set(redis_client.scan_iter(match="pxmem-*", count=1000))  # type: ignore[attr-defined]
    out = measure(redis_url, devices=40, offers=2)
    assert out["devices"] == 40
    for key, value in out.items():
        assert isinstance(value, int), key
        # used_memory is the whole server's: another client of a shared Redis freeing keys meanwhile can make
        # its growth negative; the figures measured on the benchmark's own keys must be positive
        assert value > 0 or key.startswith("used_memory"), (key, value)
    assert set(redis_client.scan_iter(match="pxmem-*", count=1000)) == before  # type: ignore[attr-defined]
