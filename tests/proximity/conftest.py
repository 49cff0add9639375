"""Fixtures of the presence tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _redis_cluster


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A real 3-master Redis Cluster started for this test process (skipped when it cannot start)."""
    try:
        url = _redis_cluster.acquire()
    except RuntimeError as exc:
        pytest.skip(f"no Redis Cluster: {exc}")
    yield url
    _redis_cluster.release()
