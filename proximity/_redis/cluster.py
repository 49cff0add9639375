"""Redis Cluster plumbing for the state store: slots, due sets per slot, pipelines routed per node.

No script may touch keys of two slots, so with ``cluster=True`` the due set is
split by slot: ``P:due:{T}``, where the tag ``T`` (see :func:`slot_tags`) hashes
to the slot that the devices listed in it hash to. Commands are sent as
``(slot, packed command)`` pairs, pipelined per node when the client is a
:class:`redis.cluster.RedisCluster` (else all to the one server: the same code
runs on a single Redis, and the single-Redis mode is the one-slot case of it).
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import redis as redis_lib
from redis.cluster import RedisCluster
from redis.crc import key_slot

from proxbase.redis_cluster import close_cluster, seeded_cluster
from proximity._redis.scripts import pack
from proximity.errors import StoreUnavailable

SLOTS = 16384  # Redis Cluster hash slots
# error replies that mean the command did not run, so it can be sent again
NOT_RUN = (redis_lib.exceptions.AskError, redis_lib.exceptions.TryAgainError, redis_lib.exceptions.ClusterDownError)
# what says the store cannot be reached (a slot without a master raises the latter two)
UNAVAILABLE = (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.exceptions.ClusterError,
               redis_lib.exceptions.RedisClusterException)


@cache
def slot_tags() -> tuple[bytes, ...]:
    """``slot_tags()[s]``: the smallest decimal number (as bytes) whose Redis Cluster hash slot is ``s``
    (the tag of slot ``s``'s due set; at most 6 digits)."""
    tags: list[bytes | None] = [None] * SLOTS
    left, i = SLOTS, 0
    while left:
        tag = b"%d" % i
        s = crc_hqx(tag, 0) % SLOTS
        if tags[s] is None:
            tags[s] = tag
            left -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def connect(url: str, cluster: bool, **kw: Any) -> Any:
    """A client for ``url``: with ``cluster=True`` a :class:`redis.cluster.RedisCluster` when the server is a
    cluster node, else a plain client (cluster mode on one server)."""
    client = redis_lib.Redis.from_url(url, **kw)
    if not cluster:
        return client
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
        client.close()
        raise StoreUnavailable(f"Redis state store unavailable: {exc}", retry_after_s=1.0) from exc
    if not enabled:
        return client
    client.close()
    return seeded_cluster(url, **kw)


def close(client: Any) -> None:
    """Close ``client``, every cluster node connection included (see :mod:`proxbase.redis_cluster`)."""
    close_cluster(client)


class Router:
    """Sends packed commands to the node that holds their slot, pipelined, and knows the due sets.

    ``cluster=False``: one due set ``P:due`` (slot 0 stands for it) and every command to the one server.
    """

    def __init__(self, client: Any, prefix: str, cluster: bool) -> None:
        self.r = client
        self.cluster = cluster
        self.nodes = isinstance(client, RedisCluster)  # route each slot to its node
        self.prefix = prefix
        self._due_keys: list[bytes] | None = None  # slot -> its due set
        self._scan_heads: list[bytes] | None = None  # slot -> packed "ZRANGEBYSCORE <its due set> -inf"
        self._slot_clients: dict[int, Any] = {}  # slot -> its node's client, valid for one slot map:
        self._slot_map: Any = None  # the nodes manager's slots_cache they were read from (a new one: reread)

    @property
    def due_slots(self) -> Sequence[int]:
        """Every due set, as slots (one per hash slot in cluster mode, else the one set as slot 0)."""
        return range(SLOTS) if self.cluster else range(1)

    def due_key(self, slot: int) -> bytes:
        """The due set of ``slot``'s devices."""
        if not self.cluster:
            return b"%b:due" % self.prefix.encode()
        if self._due_keys is None:
            head = self.prefix.encode()
            self._due_keys = [b"%b:due:{%b}" % (head, tag) for tag in slot_tags()]
        return self._due_keys[slot]

    def journal_key(self, slot: int, key: str) -> bytes:
        """The journal of batch ``key`` for ``slot``'s devices (one hash per slot a batch touches)."""
        if not self.cluster:
            return b"%b:j:%b" % (self.prefix.encode(), key.encode())
        return b"%b:j:{%b}:%b" % (self.prefix.encode(), slot_tags()[slot], key.encode())

    def _client_of(self, slot: int) -> Any:
        if not self.nodes:
            return self.r
        manager = self.r.nodes_manager
        if manager.slots_cache is not self._slot_map:  # redis-py rebuilt its slot map: forget ours
            self._slot_clients, self._slot_map = {}, manager.slots_cache
        client = self._slot_clients.get(slot)
        if client is None:
            client = self._slot_clients[slot] = self.r.get_redis_connection(manager.get_node_from_slot(slot))
        return client

    def send(self, commands: Sequence[tuple[int, bytes]], script: str | None = None) -> list[Any]:
        """Run ``(slot, packed command)`` pairs, pipelined per node; replies in order, an error reply as its
        exception.

        A command refused without running (``NOSCRIPT``: ``script`` is loaded on that node;
        a redirection or ``TRYAGAIN``: the slot map is refreshed) is sent again, at most twice.
        """
        if not commands:
            return []
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        for attempt in range(3):
            by_node: dict[int, tuple[Any, list[int]]] = {}
            if self.nodes:
                for i in todo:
                    client = self._client_of(commands[i][0])
                    by_node.setdefault(id(client), (client, []))[1].append(i)
            else:
                by_node[0] = (self.r, todo)
            again: list[int] = []
            refresh = False
            for client, idx in by_node.values():
                pool = client.connection_pool
                conn = pool.get_connection()
                try:
                    conn.send_packed_command([b"".join([commands[i][1] for i in idx])])
                    for i in idx:
                        try:
                            replies[i] = conn.read_response()
                        except redis_lib.ResponseError as exc:
                            replies[i] = exc
                except BaseException:
                    conn.disconnect()  # a half-read pipeline must not be left on a pooled connection
                    self._slot_clients = {}  # the node may be gone: ask redis-py again next time
                    raise
                finally:
                    pool.release(conn)
                missing = [i for i in idx if isinstance(replies[i], redis_lib.exceptions.NoScriptError)]
                if missing and script is not None:
                    client.script_load(script)
                redirected = [i for i in idx if isinstance(replies[i], NOT_RUN)]
                refresh = refresh or bool(redirected)
                again += missing + redirected
            if not again or attempt == 2:
                break
            if refresh and self.nodes:
                self.r.nodes_manager.initialize()
                self._slot_clients = {}
            todo = sorted(again)
        return replies

    def group_by_slot(self, keys: Sequence[bytes], chunk: int) -> list[tuple[int, np.ndarray]]:
        """``(slot, indexes into keys)`` per slot, at most ``chunk`` indexes each."""
        slots = np.fromiter(map(key_slot, keys), np.int64, len(keys))
        order = np.argsort(slots, kind="stable")
        cuts = np.flatnonzero(np.diff(slots[order])) + 1
        out = []
        for idx in np.split(order, cuts) if len(keys) else []:
            for j in range(0, len(idx), chunk):
                out.append((int(slots[idx[0]]), idx[j : j + chunk]))
        return out

    def due_pages(self, now: float, slots: Sequence[int], chunk: int) -> tuple[list[bytes], list[int]]:
        """The first ``chunk`` devices due before ``now`` in each of these slots' due sets (one pipelined
        ``ZRANGEBYSCORE`` each), and the slots whose page was full."""
        if self._scan_heads is None:
            self._scan_heads = [pack((b"ZRANGEBYSCORE", self.due_key(s), b"-inf"))[4:]
                                for s in range(len(self.due_slots))]
        heads = self._scan_heads
        tail = pack((b"(%r" % float(now), b"LIMIT", b"0", b"%d" % chunk))[4:]  # the rest of the command
        replies = self.send([(s, b"*7\r\n" + heads[s] + tail) for s in slots])
        bad = [r for r in replies if isinstance(r, Exception)]
        if bad:
            raise StoreUnavailable(f"Redis state store unavailable: {bad[0]}", retry_after_s=1.0)
        full = [s for s, r in zip(slots, replies, strict=True) if len(r) >= chunk]
        return [x for r in replies for x in r], full

    def get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """``GET`` of each key, pipelined per node."""
        replies = self.send([(key_slot(k), pack((b"GET", k))) for k in keys])
        bad = [r for r in replies if isinstance(r, Exception)]
        if bad:
            raise StoreUnavailable(f"Redis state store unavailable: {bad[0]}", retry_after_s=1.0)
        return replies


__all__ = ["NOT_RUN", "SLOTS", "UNAVAILABLE", "Router", "close", "connect", "slot_tags"]
