"""proxbase.tasks.cancel_and_wait: a cancel aimed at the caller is never swallowed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from proxbase.tasks import cancel_and_wait


async def _cancel_caller_while_child_cleans_up(stop_child: Callable[[asyncio.Task[None]], Awaitable[None]]) -> str:
    """Cancel a caller while it waits for its cancelled child; the child takes a moment to clean up."""
    cleaned = asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await cleaned.wait()
            raise

    async def caller() -> str:
        task = asyncio.create_task(child())
        await asyncio.sleep(0)
        await stop_child(task)
        return "carried on"

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0.01)  # the caller now waits for its child's cleanup
    outer.cancel()
    cleaned.set()
    try:
        return await outer
    except asyncio.CancelledError:
        return "cancelled"


async def test_the_suppress_pattern_swallows_the_callers_cancel_and_cancel_and_wait_does_not() -> None:
    async def suppressing(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def waiting(task: asyncio.Task[None]) -> None:
        await cancel_and_wait([task])

    assert await _cancel_caller_while_child_cleans_up(suppressing) == "carried on"  # the trap
    assert await _cancel_caller_while_child_cleans_up(waiting) == "cancelled"


async def test_returns_the_tasks_still_running_after_the_timeout_and_retrieves_errors() -> None:
    release = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await release.wait()

    async def failed() -> None:
        raise RuntimeError("boom")

    slow = asyncio.create_task(slow_to_end())
    bad = asyncio.create_task(failed())
    await asyncio.sleep(0)
    pending = await cancel_and_wait([slow, bad, None], timeout=0.05)
    assert pending == {slow}
    assert bad.done() and isinstance(bad.exception(), RuntimeError)
    release.set()
    assert await cancel_and_wait([slow]) == set()
    assert slow.cancelled()


@pytest.mark.parametrize("tasks", [[], [None]])
async def test_nothing_to_wait_for(tasks: list[None]) -> None:
    assert await cancel_and_wait(tasks) == set()
