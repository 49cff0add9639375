"""The two-process worker of ``_workers.py`` with its Redis store in cluster mode (``RedisStore(cluster=True)``):
same arguments, same protocol. Used by ``test_store_presence.py``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workers


def engine(redis_url: str, prefix: str) -> object:
    from geofence import FenceIndex
    from proximity.engine import Engine, EngineConfig
    from proximity.store import RedisStore

    return Engine(FenceIndex(_workers.fences()), store=RedisStore(redis_url, prefix=prefix, ttl_s=3600, cluster=True),
                  config=EngineConfig(max_future_skew_s=None, profile="crossing"))


if __name__ == "__main__":
    _workers.engine = engine  # type: ignore[assignment]
    sys.exit(_workers.main())
