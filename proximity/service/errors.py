"""The service's error answer: one exception type that carries a status, a JSON body and headers.

Handlers and the codec raise :class:`ApiError`; the error middleware
(:mod:`proximity.service.middleware`) renders it, and renders the project's
located input errors (``source/line/col/field/row``, see :mod:`proxbase`) the
same way: ``{"error": ..., "field": ..., "row": ...}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from redis import exceptions as redis_errors

from proximity.errors import StoreUnavailable

#: what says a Redis server cannot be reached now (``BusyLoadingError`` is a ``ConnectionError``)
# a server away, or a cluster slot without a master / a cluster still failing over (redis-py gives up on these
# after its retries: see proxbase.redis_cluster.CLUSTER_RETRIES); the same as campaigns' adapters
REDIS_AWAY = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ClusterError,
              redis_errors.RedisClusterException, redis_errors.TryAgainError, redis_errors.ReadOnlyError)

class ApiError(Exception):
    """An error answer: status, JSON body (``{"error", "field", "row", ...}``) and headers."""

    def __init__(self, status: int, message: str, *, field: str | None = None, row: int | None = None,
                 headers: Mapping[str, str] | None = None, reason: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message}
        if field is not None:
            self.body["field"] = field
        if row is not None:
            self.body["row"] = row
        self.body.update(extra)
        self.headers = dict(headers or {})
        self.reason = reason or str(status)


# orjson where it writes what json.dumps(default=_json_default) would: dataclasses (which may have a


@contextlib.contextmanager
def redis_unavailable(what: str) -> Iterator[None]:
    """Inside an adapter: a Redis server away becomes :class:`StoreUnavailable` (the middleware's one 503)."""
    try:
        yield
    except REDIS_AWAY as exc:
        raise StoreUnavailable(f"{what} unavailable: {exc or type(exc).__name__}", retry_after_s=1.0) from exc


__all__ = ["REDIS_AWAY", "ApiError", "redis_unavailable"]
