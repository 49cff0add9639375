"""Stopping background tasks without eating the caller's own cancellation.

``task.cancel(); with suppress(CancelledError): await task`` is a trap: when the *caller* is cancelled
while it awaits the child, the ``CancelledError`` meant for the caller is suppressed as if it were the
child's, the caller carries on, and whoever cancelled it waits forever (a worker's delivery loop did this
and held the service's shutdown). :func:`cancel_and_wait` waits with :func:`asyncio.wait`, which never
raises the child's outcome, so a cancellation of the caller always propagates."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any] | None], timeout: float | None = None
                          ) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and wait until they end (at most ``timeout`` seconds); returns the ones still
    running then. Their exceptions are retrieved (no "never retrieved" warnings); report them before, where
    they happen. The caller's own cancellation is never swallowed."""
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    if not pending:
        return set()
    done, still = await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()
    return still


__all__ = ["cancel_and_wait"]
