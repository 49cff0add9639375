"""Lua scripts that run on whichever node holds their keys, whether or not that node has them cached.

redis-py's ``register_script`` answers ``NOSCRIPT`` by ``SCRIPT LOAD`` and a second ``EVALSHA``. On a
cluster ``SCRIPT LOAD`` goes to the masters of the client's slot map, and ``EVALSHA`` follows ``MOVED`` to
the slot's master now: after a failover (a promoted replica starts with an empty script cache; Redis 7 does
not replicate it) the two can be different nodes, and the second ``EVALSHA`` fails with ``NoScriptError``
again. It did, once in a CI run of the cluster fault suite: a limiter call failed with it instead of
succeeding or raising ``StoreUnavailable``.

:func:`register_script` returns a script that answers ``NOSCRIPT`` with ``EVAL`` of its source instead:
``EVAL`` is routed by its keys like ``EVALSHA`` (redirections followed), runs on the node that holds them
and caches the script there, in one command. ``NOSCRIPT`` means nothing ran, so running it then is not a
second run. Same interface as redis-py's (``sha``, ``script``, ``__call__(keys=, args=)``), sync or async
after the client. Import this module only where redis is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError


class Script:
    """A Lua script of a synchronous client (``redis.Redis`` or ``redis.cluster.RedisCluster``)."""

    def __init__(self, client: Any, script: str | bytes) -> None:
        self.registered_client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode() if isinstance(script, str) else script).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        c = self.registered_client if client is None else client
        try:
            return c.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return c.eval(self.script, len(keys), *keys, *args)


class AsyncScript(Script):
    """A Lua script of a ``redis.asyncio`` client (one Redis or a cluster)."""

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (),
                       client: Any = None) -> Any:
        c = self.registered_client if client is None else client
        try:
            return await c.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await c.eval(self.script, len(keys), *keys, *args)


def register_script(client: Any, script: str | bytes) -> Script:
    """``client.register_script(script)``, with ``NOSCRIPT`` answered by ``EVAL`` (see the module)."""
    import redis.asyncio as aredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    if isinstance(client, aredis.Redis | AsyncRedisCluster):
        return AsyncScript(client, script)
    return Script(client, script)


__all__ = ["AsyncScript", "Script", "register_script"]
