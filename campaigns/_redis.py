"""Plumbing shared by the Redis adapters: clients for one Redis or a Redis Cluster, error mapping.

redis is imported here, lazily by the adapters, so ``import campaigns`` works without it.

- :func:`connect` / :func:`connect_async`: a URL becomes a ``redis.Redis`` (one server) or, when the
  server is a cluster node, a ``redis.cluster.RedisCluster`` seeded with that node (MOVED, ASK and
  TRYAGAIN are followed by redis-py; every script of the adapters touches one hash slot);
- :func:`run_scripts`: several script calls in one round trip (on a cluster, one pipeline per node);
  :func:`run_commands`: several commands in one round trip; :func:`run_together`: both in one. All pack
  and parse the protocol themselves (:mod:`proxbase.resp`, and on a cluster
  :class:`proxbase.redis_route.NodeRouter`) on a client without ``decode_responses`` speaking RESP2
  (redis-py's pipeline, on a cluster above all, costs more per command than a campaign decision's own
  work); other clients get redis-py's pipeline;
- :func:`unavailable`: which redis errors mean "the store cannot be reached now" (connection refused or
  lost, timeouts, a cluster slot without a master, a cluster that is down or still failing over);
  the adapters raise :class:`campaigns.errors.StoreUnavailable` for them, without the server's address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from campaigns.errors import StoreUnavailable
from proxbase.redis_cluster import close_cluster, cluster_retry, cluster_seed, seeded_cluster
from proxbase.redis_route import NOT_RUN, NodeRouter, key_slots
from proxbase.resp import arg, pack, read_replies

UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError: a slot without a master
    redis.exceptions.RedisClusterException,  # SlotNotCoveredError, no node reachable
    redis.exceptions.TryAgainError,  # a multi-key call during a slot migration, past redis-py's retries
    redis.exceptions.ReadOnlyError,  # a master demoted to replica under our connection
)


def unavailable(exc: BaseException, what: str) -> StoreUnavailable:
    """The :class:`StoreUnavailable` for a redis error (the message names the reason, not the address)."""
    reason = type(exc).__name__
    text = str(exc)
    if isinstance(exc, redis.exceptions.ClusterError | redis.exceptions.RedisClusterException):
        reason = f"{reason}: {text.split(':')[0][:80]}" if text else reason
    return StoreUnavailable(f"shared state unavailable ({what}: {reason}); retry", retry_after_s=1.0)


def connect(url: str, *, timeout_s: float = 5.0) -> Any:
    """A client for ``url``: a ``RedisCluster`` when the server is a cluster node, else a ``Redis``."""
    kw: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": min(timeout_s, 2.0)}
    client = redis.Redis.from_url(url, **kw)
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except UNAVAILABLE as exc:
        client.close()
        raise unavailable(exc, "connect") from exc
    if not enabled:
        return client
    client.close()
    return seeded_cluster(url, **kw)


async def connect_async(url: str, *, timeout_s: float = 5.0) -> Any:
    """:func:`connect` for ``redis.asyncio``."""
    kw: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": min(timeout_s, 2.0)}
    client = aredis.Redis.from_url(url, **kw)
    try:
        enabled = (await client.info("cluster")).get("cluster_enabled")
    except UNAVAILABLE as exc:
        await client.aclose()
        raise unavailable(exc, "connect") from exc
    if not enabled:
        return client
    await client.aclose()
    host, port, options = cluster_seed(url)
    cluster = AsyncRedisCluster(startup_nodes=[AsyncClusterNode(host, port)], retry=cluster_retry(asyncio=True),
                                **options, **kw)
    try:
        await cluster.initialize()
    except UNAVAILABLE as exc:
        await cluster.aclose()
        raise unavailable(exc, "connect") from exc
    return cluster


def raw(client: Any) -> bool:
    """Whether :func:`run_commands` packs and parses the protocol itself for ``client``: a single Redis or a
    cluster client whose replies are plain bytes (no ``decode_responses``, RESP2), as the service's clients
    are."""
    if isinstance(client, RedisCluster):
        kw = client.get_connection_kwargs()
    elif isinstance(client, redis.Redis):
        kw = client.connection_pool.connection_kwargs
    else:
        return False
    return not kw.get("decode_responses") and str(kw.get("protocol") or 2) == "2"


#: the attribute of a cluster client that holds its router (:func:`run_commands`), made on first use: kept on
#: the client, not in a weak map keyed by it (the router refers to its client: such an entry would never die),
#: and holding no connection between calls (a held connection refers to the client: the two would never be
#: freed unless closed)
_ROUTER = "_campaigns_node_router"


def _key(command: Sequence[Any]) -> bytes:
    """The key that routes ``command`` on a cluster: a script's first key, else the first argument (every
    command the adapters pipeline names its key first); a script without keys goes to any node."""
    if str(command[0]).upper() in ("EVALSHA", "EVAL"):
        return arg(command[3]) if int(command[2]) else b""
    return arg(command[1])


def _run_on_nodes(client: Any, commands: Sequence[Sequence[Any]], blobs: list[bytes]) -> list[Any]:
    """:func:`run_commands` on a cluster: each packed command to its slot's node, one pipeline per node (a
    node's commands in their order; commands in different slots share no key). A command still refused
    without running after the router's tries (``ASK`` during a slot migration needs ``ASKING``, which
    redis-py sends) is run alone through redis-py, which follows the redirection."""
    router = getattr(client, _ROUTER, None)
    if router is None:
        router = NodeRouter(client, hold=False)
        setattr(client, _ROUTER, router)
    slots = key_slots([_key(c) for c in commands])
    failed: list[int] = []
    replies = router.send(list(zip(slots.tolist(), blobs, strict=True)), errors=failed)
    for i in failed:
        if isinstance(replies[i], NOT_RUN):
            try:
                replies[i] = client.execute_command(*commands[i])
            except redis.ResponseError as exc:
                replies[i] = exc
    return replies


def run_commands(client: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """The replies of ``commands`` (each a command name and its arguments) in one round trip (pipelined, not a
    transaction; on a cluster one pipeline per node, see :func:`_run_on_nodes`); an error reply is returned as
    its exception, in its place. On a client that :func:`raw` accepts the commands are packed in one join and
    the replies parsed by :func:`proxbase.resp.read_replies`, else they go through a redis-py pipeline. A
    connection or time-out error is raised (the connection is dropped: a half-read pipeline must not go back
    to the pool)."""
    if not commands:
        return []
    if not raw(client):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))
    blobs = [pack([arg(x) for x in command]) for command in commands]
    if isinstance(client, RedisCluster):
        return _run_on_nodes(client, commands, blobs)
    blob = b"".join(blobs)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([blob])
        return read_replies(conn, len(commands))
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def raise_first(replies: Sequence[Any]) -> None:
    """Raise the first error reply of ``replies`` (from :func:`run_commands`), if any."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def run_scripts(client: Any, calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]], *,
                raise_errors: bool = True) -> list[Any]:
    """The replies of ``(script, keys, args)`` calls (``Script`` objects of ``client.register_script``), run in
    order. They go in one round trip (``EVALSHA`` pipelined by :func:`run_commands`, each script still atomic;
    on a cluster, where each call's keys share a slot, one pipeline per node, a node's calls in their order:
    calls in different slots share no key); the calls of a script the server does not hold (restarted,
    flushed, a node new since) are run again once it is loaded, in their order. Redis errors are raised (the
    first one), or with ``raise_errors=False`` returned in their calls' places; a lost connection is raised
    either way."""
    return run_together(client, (), calls, raise_errors=raise_errors)[1]


def run_together(client: Any, commands: Sequence[Sequence[Any]],
                 calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]], *,
                 raise_errors: bool = True) -> tuple[list[Any], list[Any]]:
    """``commands`` (as :func:`run_commands`: error replies in their places), then the script ``calls`` (as
    :func:`run_scripts`), in one round trip; returns the replies of each."""
    if not commands and not calls:
        return [], []
    out = run_commands(client, [*commands,
                                *(("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in calls)])
    plain, scripted = out[: len(commands)], out[len(commands):]
    for i, reply in enumerate(scripted):
        if isinstance(reply, redis.exceptions.NoScriptError):
            script, keys, args = calls[i]
            try:
                scripted[i] = script(keys=keys, args=args)  # loads it
            except redis.ResponseError as exc:
                if raise_errors:
                    raise
                scripted[i] = exc
    for reply in scripted if raise_errors else ():
        if isinstance(reply, Exception):
            raise reply
    return plain, scripted


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def close(client: Any) -> None:
    """Close a client from :func:`connect`, every cluster node connection included."""
    close_cluster(client)


async def aclose(client: Any) -> None:
    await client.aclose()
