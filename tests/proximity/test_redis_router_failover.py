"""The state store's cluster router after a master stops answering and its replica takes over.

A hung master (SIGSTOP: the kernel still accepts connections, nobody answers; a paused VM or a
black-holed address does the same) is the case where each call that meets it waits the whole socket
timeout. The router routes by redis-py's slot map; before it read that map again after a failure, the map
kept naming the lost master after the failover, so every later call touching its slots waited the timeout
and failed, one after another on the engine thread (measured: answers of 10 s in a 5 s-timeout worker).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import redis

from proxbase.redis_cluster import close_cluster, seeded_cluster
from proximity._redis.cluster import SLOTS, Router, slot_tags

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _master_of(seed_port: int, replica_port: int) -> bool:
    """Whether the seed node sees ``replica_port`` as a master that holds slots now."""
    from _redis_cluster import cli

    for line in cli(seed_port, "cluster", "nodes").splitlines():
        parts = line.split()
        if len(parts) > 8 and parts[1].split("@")[0].endswith(f":{replica_port}") and "master" in parts[2]:
            return True
    return False


def test_router_follows_the_failover_of_a_hung_master(redis_cluster_factory: Any, redis_prefix: str) -> None:
    cluster = redis_cluster_factory(masters=3, replicas=1)
    client = seeded_cluster(cluster.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    router = Router(client, redis_prefix, cluster=True)
    # one key in every 64th slot: every master holds some of them
    keys = [b"%b:{%b}:k" % (redis_prefix.encode(), slot_tags()[s]) for s in range(0, SLOTS, 64)]
    victim = next(m for m in cluster.masters() if m["port"] != cluster.ports[0])
    replica = cluster.replica_of(victim["port"])
    try:
        assert router.get(keys) == [None] * len(keys)
        os.kill(cluster.procs[victim["port"]].pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while not _master_of(cluster.ports[0], replica):
            assert time.monotonic() < deadline, "the replica never took over"
            time.sleep(0.1)
        outcomes: list[str] = []
        for _ in range(3):  # the first call may still meet the hung master: the map is read after it
            try:
                outcomes.append(repr(router.get(keys) == [None] * len(keys)))
            except (redis.RedisError, OSError) as exc:
                outcomes.append(type(exc).__name__)
        print(f"calls after the failover: {outcomes}")
        assert "True" in outcomes, outcomes
        assert outcomes[-1] == "True", outcomes
    finally:
        os.kill(cluster.procs[victim["port"]].pid, signal.SIGCONT)
        close_cluster(client)
