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


def test_the_cluster_fixture_skips_loudly_or_fails_under_require_redis(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Where no Redis Cluster can start (here: no redis-server on PATH), a test that needs one is skipped
    with the reason, and fails instead under PROXIMITY_REQUIRE_REDIS=1 (as in .ci/run)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    shared = Path(__file__).resolve().parents[1] / "conftest.py"
    (tmp_path / "conftest.py").write_text(
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(shared.parent)!r})\n"
        f"spec = importlib.util.spec_from_file_location('shared_conftest', {str(shared)!r})\n"
        "shared = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(shared)\n"
        "redis_cluster_url = shared.redis_cluster_url\n")
    (tmp_path / "test_probe.py").write_text("def test_probe(redis_cluster_url):\n    assert redis_cluster_url\n")
    outcomes = {}
    for require in ("0", "1"):
        env = {**os.environ, "PATH": str(tmp_path), "PROXIMITY_REQUIRE_REDIS": require}
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:randomly", "-p", "no:cacheprovider",
                              str(tmp_path / "test_probe.py")], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=120, check=False)
        outcomes[require] = run.stdout
    assert "1 skipped" in outcomes["0"] and "NO REDIS: no Redis Cluster could start" in outcomes["0"]
    assert "1 error" in outcomes["1"] and "PROXIMITY_REQUIRE_REDIS=1 but no Redis Cluster could start" in outcomes["1"]
