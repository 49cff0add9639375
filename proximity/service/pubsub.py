"""Fire-and-forget messages between workers: Redis pub/sub, sharded on a Redis Cluster.

On one Redis: ``PUBLISH`` / ``SUBSCRIBE``. On a Redis Cluster classic pub/sub would
broadcast every message to every node over the cluster bus; sharded pub/sub
(``SPUBLISH`` / ``SSUBSCRIBE``, Redis 7) keeps a channel on the shard that owns its
hash slot, and redis-py's cluster pub/sub follows the slot when it moves (slot
migration, failover: it resubscribes on the new owner). Channels that go through
a cluster carry a hash tag (``{<prefix>:config}``), so a script that writes keys
of the same tag and the channel stay in one slot.

Callers catch up by polling what the messages announce (config versions); a lost
message is a delay, never a lost change. The live feed is best effort by design.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


def tagged(prefix: str, name: str, cluster: bool) -> str:
    """The channel (or key root) ``name`` under ``prefix``: ``{prefix:name}`` on a cluster."""
    return f"{{{prefix}:{name}}}" if cluster else f"{prefix}:{name}"


async def publish(client: Any, channel: str, data: bytes | str, cluster: bool) -> None:
    if cluster:
        await client.spublish(channel, data)
    else:
        await client.publish(channel, data)


async def messages(client: Any, channel: str, cluster: bool) -> AsyncIterator[bytes]:
    """Every message's payload on ``channel``, until cancelled (connection errors are raised)."""
    if cluster:
        await client.initialize()  # the slot map: a cluster client built unconnected learns it here (once)
    pubsub = client.pubsub()
    try:
        if cluster:
            await pubsub.ssubscribe(channel)
        else:
            await pubsub.subscribe(channel)
        while True:
            if cluster:
                msg = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:  # with no subscription open it returns at once: don't spin
                    await asyncio.sleep(0.05)
            else:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None and msg.get("type") in ("message", "smessage"):
                yield msg["data"]
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


__all__ = ["messages", "publish", "tagged"]
