"""Redis Cluster clients seeded from one node's URL, shared by every package's Redis adapter.

redis-py builds a cluster client from a URL with a seed node whose connection it never closes;
:func:`seeded_cluster` builds the seed itself and remembers it, :func:`close_cluster` closes the client
and every node connection it made (the seed's included). Import this module only where redis is used.
"""

from __future__ import annotations

from typing import Any

from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url

#: How often redis-py's cluster clients send a command again after a connection error, a timeout or a slot
#: without a master (reading the slot map again before each try). redis-py's default, 10 tries with backoff,
#: multiplies the socket timeout: against a master that hangs (or a black-holed address) until its replica
#: takes over, each try waits the whole timeout, so one command could wait 11 x 5 s. One more try is enough
#: to reach the replica once the map names it; past it the call fails and the service answers 503 with
#: Retry-After (a retry of the batch is safe).
CLUSTER_RETRIES = 1


def cluster_retry(asyncio: bool = False) -> Any:
    """The ``retry`` of a cluster client (``asyncio=True``: for ``redis.asyncio``): :data:`CLUSTER_RETRIES`
    tries more, at once."""
    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        return AsyncRetry(NoBackoff(), CLUSTER_RETRIES)
    from redis.retry import Retry

    return Retry(NoBackoff(), CLUSTER_RETRIES)


def cluster_seed(url: str) -> tuple[str, int, dict[str, Any]]:
    """The host, port and other client options of a node's ``redis://`` URL (a cluster has no ``db``)."""
    options = parse_url(url)
    options.pop("db", None)
    return options.pop("host", "127.0.0.1"), int(options.pop("port", 6379)), options


class SeededCluster(RedisCluster):
    """A cluster client that remembers the seed node built for it (closed with it by :func:`close_cluster`)."""

    seeds: list[ClusterNode]


def seeded_cluster(url: str, **kw: Any) -> SeededCluster:
    """A :class:`redis.cluster.RedisCluster` seeded with the node of ``url`` (``kw``: client options)."""
    host, port, options = cluster_seed(url)
    seed = ClusterNode(host, port)
    client = SeededCluster(startup_nodes=[seed], **{"retry": cluster_retry(), **options, **kw})
    client.seeds = [seed]
    return client


def close_cluster(client: Any) -> None:
    """Close ``client`` and, for a ``RedisCluster``, its nodes' connections (its ``close()`` leaves the
    startup nodes' open)."""
    nodes = []
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values(), *getattr(client, "seeds", [])]
    client.close()
    for node in nodes:
        if node.redis_connection is not None:
            node.redis_connection.close()


__all__ = ["CLUSTER_RETRIES", "SeededCluster", "close_cluster", "cluster_retry", "cluster_seed", "seeded_cluster"]
