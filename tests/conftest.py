"""Fixtures shared by every package's tests.

Redis: tests that need it take the ``redis_url`` fixture (plus ``redis_prefix``,
a key prefix of their own, deleted afterwards, so tests never see each other's
keys on a shared server). The server is, in order:

1. ``REDIS_URL`` when set;
2. a Redis answering on 127.0.0.1:6379;
3. a ``redis-server`` from PATH, started on a free port for this session and stopped after.

With none, the tests skip with a loud reason, except when ``PROXIMITY_REQUIRE_REDIS=1``
(set by ``.ci/run``), where they fail.

Redis Cluster: ``redis_cluster_url`` is a real 3-master cluster started once for the session
(``tests/_redis_cluster.py``, from redis-server and redis-cli on PATH); ``redis_cluster_factory``
starts private clusters (with replicas) for tests that break them. Where no cluster can start,
these skip loudly, or fail under ``PROXIMITY_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers: _redis_cluster, _faultproxy
import _redis_cluster

DISTRIBUTION = "proximity-engine"
INSTALL = "python -m pip install -e '.[test]'"


def _missing_requirements() -> list[str]:
    """What the installed project needs for its tests (its own requirements and the ``test`` extra, as
    pip recorded them) and this Python lacks; the project itself when it is not installed."""
    import importlib.metadata as md
    import re

    try:
        requirements = md.requires(DISTRIBUTION) or []
    except md.PackageNotFoundError:
        return [DISTRIBUTION]
    missing = []
    for req in requirements:
        name, _, marker = req.partition(";")
        if "extra" in marker and not re.search(r"""extra\s*==\s*["']test["']""", marker):
            continue
        dist = re.split(r"[\s\[<>=!~(]", name.strip(), maxsplit=1)[0]
        try:
            md.version(dist)
        except md.PackageNotFoundError:
            missing.append(dist)
    return missing


def pytest_configure(config: pytest.Config) -> None:
    # a first compile's "proximity: compiling ..." line on stderr depends on the kernel cache, not on the
    # code under test: off in tests (and their subprocesses) unless a test turns it on
    os.environ.setdefault("PROXIMITY_SLOW_COMPILE_S", "inf")
    missing = _missing_requirements()
    if missing:  # one clear line, not an error per test module (or an unknown-option error from the ini)
        pytest.exit(f"not installed in this Python: {', '.join(missing)}. Run the README's test command: "
                    f"{INSTALL} && python -m pytest -q", returncode=4)
    from hypothesis import settings

    # Machines running the tests are shared and busy: a slow example is not a failure (no timing is
    # ever asserted), so hypothesis' per-example deadline is off for every test.
    settings.register_profile("proximity", deadline=None)
    settings.load_profile("proximity")

DEFAULT_REDIS = ("127.0.0.1", 6379)


def _answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis_server(binary: str) -> tuple[subprocess.Popen[bytes], str, str]:
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="proximity-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _answers_ping("127.0.0.1", port):
            return proc, f"redis://127.0.0.1:{port}/0", workdir
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server ({binary}) did not start on port {port}")


def _no_redis(reason: str) -> None:
    if os.environ.get("PROXIMITY_REQUIRE_REDIS") == "1":
        pytest.fail(f"PROXIMITY_REQUIRE_REDIS=1 but {reason}", pytrace=False)
    pytest.skip(f"NO REDIS: {reason}; these tests did NOT run (set REDIS_URL or install redis-server)")


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The URL of a live Redis server for this test session (see the module docstring)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _answers_ping(*DEFAULT_REDIS):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        _no_redis("no REDIS_URL, nothing answers on 127.0.0.1:6379 and no redis-server on PATH")
    try:
        proc, url, workdir = _start_redis_server(binary)  # type: ignore[arg-type]
    except RuntimeError as exc:
        _no_redis(str(exc))
        raise
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    return redis_server_url


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    import redis

    prefix = f"pxtest:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_server_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_server_url: str) -> Iterator[object]:
    """A synchronous redis-py client on the test server."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A real 3-master Redis Cluster started for this test process (see the module docstring)."""
    try:
        url = _redis_cluster.acquire()
    except RuntimeError as exc:
        _no_redis(f"no Redis Cluster could start: {exc}")
        raise
    yield url
    _redis_cluster.release()


@pytest.fixture
def redis_cluster_factory() -> Iterator[Callable[..., Any]]:
    """``start(masters=3, replicas=1)``: a private cluster for this test, stopped and removed after it."""
    started: list[Any] = []

    def start(masters: int = 3, replicas: int = 1, **kw: Any) -> Any:
        try:
            cluster = _redis_cluster.start(masters, replicas, **kw)
        except RuntimeError as exc:
            _no_redis(f"no Redis Cluster could start: {exc}")
            raise
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture(autouse=True)
def _no_compile_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests compare stderr exactly; whether a kernel compiles first (and so prints its
    one "compiling ..." line) depends on the kernel cache, not on the code under test.
    tests/proxbase/test_jit.py sets the threshold back where it checks those lines."""
    import proxbase.jit

    monkeypatch.setattr(proxbase.jit, "SLOW_COMPILE_S", 1e9)
