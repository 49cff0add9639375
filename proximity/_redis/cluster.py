"""Redis Cluster plumbing for the state store: slots, due sets per slot, pipelines routed per node.

No script may touch keys of two slots, so with ``cluster=True`` the due set is
split by slot: ``P:due:{T}``, where the tag ``T`` (see :func:`slot_tags`) hashes
to the slot that the devices listed in it hash to. Commands are sent as
``(slot, packed command)`` pairs, pipelined per node when the client is a
:class:`redis.cluster.RedisCluster` (else all to the one server: the same code
runs on a single Redis, and the single-Redis mode is the one-slot case of it).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from binascii import crc_hqx
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import redis as redis_lib
from redis.cluster import RedisCluster

from proxbase.redis_cluster import close_cluster, seeded_cluster
from proximity._redis.resp import key_slots, read_replies
from proximity._redis.scripts import bulk, pack
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
    ``due_slots``: the slots whose due sets can list devices (cluster: every slot unless given; see
    :mod:`proximity._redis.layout`).
    """

    def __init__(self, client: Any, prefix: str, cluster: bool, due_slots: Sequence[int] | None = None) -> None:
        self.r = client
        self.cluster = cluster
        self._due_slots = due_slots if due_slots is not None else range(SLOTS if cluster else 1)
        self.nodes = isinstance(client, RedisCluster)  # route each slot to its node
        self.prefix = prefix
        self._due_keys: list[bytes] | None = None  # slot -> its due set
        self._due_bulk: list[bytes] | None = None  # slot -> its due set as a protocol bulk string
        self._scan_heads: list[bytes] | None = None  # slot -> packed "ZRANGEBYSCORE <its due set> -inf"
        self._slot_clients: dict[str, Any] = {}  # node name -> its client, valid for one slot map:
        self._slot_map: Any = None  # the nodes manager's slots_cache they were read from (a new one: reread)
        self._slot_node: np.ndarray | None = None  # slot -> index into _node_names (-1: none in the map)
        self._node_names: list[str] = []
        # one connection per node client kept between calls (redis-py's pool checks a connection out and in,
        # with a poll and a lock, each time): node client id -> (client, connection, process id)
        self._held: dict[int, tuple[Any, Any, int]] = {}
        self._hold = threading.Lock()  # held connections serve one thread at a time; others use the pool
        weakref.finalize(self, _give_back, self._held)  # a router dropped unclosed gives them back too

    @property
    def due_slots(self) -> Sequence[int]:
        """Every due set, as slots (in cluster mode the slots that hold devices, else the one set as slot 0)."""
        return self._due_slots

    def due_key(self, slot: int) -> bytes:
        """The due set of ``slot``'s devices."""
        if not self.cluster:
            return b"%b:due" % self.prefix.encode()
        if self._due_keys is None:
            head = self.prefix.encode()
            self._due_keys = [b"%b:due:{%b}" % (head, tag) for tag in slot_tags()]
        return self._due_keys[slot]

    def due_keys_bulk(self) -> list[bytes]:
        """Slot -> its due set (:meth:`due_key`) as a protocol bulk string."""
        if self._due_bulk is None:
            self._due_bulk = bulk([self.due_key(s) for s in range(SLOTS if self.cluster else 1)])
        return self._due_bulk

    def journal_key(self, slot: int, key: str) -> bytes:
        """The journal of batch ``key`` for ``slot``'s devices (one hash per slot a batch touches)."""
        if not self.cluster:
            return b"%b:j:%b" % (self.prefix.encode(), key.encode())
        return b"%b:j:{%b}:%b" % (self.prefix.encode(), slot_tags()[slot], key.encode())

    def _node_of(self, slots: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """Each slot's node (an index into the list of node clients), from redis-py's current slot map."""
        if not self.nodes:
            return np.zeros(len(slots), np.int64), [self.r]
        manager = self.r.nodes_manager
        if manager.slots_cache is not self._slot_map:  # redis-py rebuilt its slot map: forget ours
            self._slot_clients, self._slot_map, self._slot_node = {}, manager.slots_cache, None
        if self._slot_node is None:
            index: dict[str, int] = {}
            node = np.full(SLOTS, -1, np.int64)
            for slot, holders in manager.slots_cache.items():
                if holders:
                    node[slot] = index.setdefault(holders[0].name, len(index))
            self._slot_node = node
            self._node_names = list(index)
        node = self._slot_node[slots]
        clients = []
        for name in self._node_names:
            client = self._slot_clients.get(name)
            if client is None:
                client = self._slot_clients[name] = self.r.get_redis_connection(manager.get_node(node_name=name))
            clients.append(client)
        lost = np.flatnonzero(node < 0)
        for i in lost.tolist():  # a slot without a node in the map: ask redis-py (it raises if none)
            client = self.r.get_redis_connection(manager.get_node_from_slot(int(slots[i])))
            node[i] = len(clients)
            clients.append(client)
        return node, clients

    def send(self, commands: Sequence[tuple[int, bytes]], script: str | None = None,
             errors: list[int] | None = None) -> list[Any]:
        """Run ``(slot, packed command)`` pairs, pipelined per node; replies in order, an error reply as its
        exception (and its index appended to ``errors``).

        A command refused without running (``NOSCRIPT``: ``script`` is loaded on that node;
        a redirection or ``TRYAGAIN``: the slot map is refreshed) is sent again, at most twice.
        """
        if not commands:
            return []
        mine = self._hold.acquire(blocking=False)
        try:
            return self._send(commands, script, errors, mine)
        finally:
            if mine:
                self._hold.release()

    def _connection(self, client: Any, mine: bool) -> Any:
        """A connection to ``client``'s node: the one held for it (``mine``: this thread holds them), else the
        pool's."""
        if not mine:
            return client.connection_pool.get_connection()
        got = self._held.get(id(client))
        if got is not None and got[0] is client and got[2] == os.getpid():
            return got[1]
        conn = client.connection_pool.get_connection()
        self._held[id(client)] = (client, conn, os.getpid())
        return conn

    def release(self) -> None:
        """Give the held connections back to their pools (after an error, or when closing)."""
        _give_back(self._held)

    def _send(self, commands: Sequence[tuple[int, bytes]], script: str | None, errors: list[int] | None,
              mine: bool) -> list[Any]:
        replies: list[Any] = [None] * len(commands)
        any_failed = False
        slots = np.fromiter((c[0] for c in commands), np.int64, len(commands))
        todo = np.arange(len(commands))
        for attempt in range(3):
            node, clients = self._node_of(slots[todo])
            if len(clients) == 1:  # one server (or one node): every command in one pipeline, in order
                parts = [np.arange(len(todo))]
            else:
                order = np.argsort(node, kind="stable")
                parts = np.split(order, np.flatnonzero(np.diff(node[order])) + 1)
            again: list[int] = []
            refresh = False
            # every node's pipeline is sent before any reply is read: the nodes work at the same time
            sent: list[tuple[Any, Any, list[int]]] = []
            failed: list[int] = []  # the commands that got an error reply
            at: Any = None  # the node client being connected to, written to or read from
            try:
                for part in parts:
                    at = client = clients[int(node[part[0]])]
                    idx = todo[part].tolist()
                    conn = self._connection(client, mine)
                    sent.append((client, conn, idx))
                    conn.send_packed_command([b"".join([commands[i][1] for i in idx])])
                for client, conn, idx in sent:
                    at = client
                    bad: list[int] = []
                    for i, reply in zip(idx, read_replies(conn, len(idx), bad), strict=True):
                        replies[i] = reply
                    failed += [idx[j] for j in bad]
            except BaseException as exc:
                for _client, conn, _idx in sent:
                    conn.disconnect()  # a half-read pipeline must not be left on a pooled connection
                if mine:
                    self.release()
                self._slot_clients, self._slot_node = {}, None
                if isinstance(exc, redis_lib.ConnectionError | redis_lib.TimeoutError):
                    self._forget_node(at)
                raise
            finally:
                for client, conn, _idx in sent if not mine else ():
                    client.connection_pool.release(conn)
            any_failed = any_failed or bool(failed)
            for client, _conn, idx in sent if failed else ():
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
                self._slot_clients, self._slot_node = {}, None
            todo = np.array(sorted(again), np.int64)
        if errors is not None and any_failed:
            errors.extend(i for i, x in enumerate(replies) if isinstance(x, Exception))
        return replies

    def _forget_node(self, client: Any) -> None:
        """The node behind ``client`` did not answer: redis-py's slot map is read again, from the other nodes
        first, so the next call goes to whichever node holds each slot now (a failed-over master's replica).

        Without it the map kept naming the lost master after its failover: every later call touching its
        slots met it again (a refused connection: a 503 each time; a hung node or a black-holed address: the
        socket timeout each time, one after another on the engine thread). When no node answers the map is
        left as it was: the call that failed answers 503 all the same.
        """
        if not self.nodes:
            return
        name = None
        if client is not None:
            kw = client.connection_pool.connection_kwargs
            name = f"{kw.get('host')}:{kw.get('port')}"
        with contextlib.suppress(*UNAVAILABLE):
            self.r.nodes_manager.initialize(last_failed_node_name=name)

    def group_by_slot(self, slots: np.ndarray, chunk: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Indexes into ``slots`` in slot order, and per group ``(slot, a, b)``: ``order[a:b]`` are the indexes
        of one slot (``chunk`` at most a group). ``cluster=False``: every index in slot 0, ``chunk`` a group."""
        n = len(slots)
        if not self.cluster:
            return np.arange(n), [(0, i, min(i + chunk, n)) for i in range(0, n, chunk)]
        order = np.argsort(slots, kind="stable")
        if not n:
            return order, []
        ordered = slots[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], n].astype(np.int64)
        groups = list(zip(ordered[starts].tolist(), starts.tolist(), ends.tolist(), strict=True))
        if (ends - starts > chunk).any():
            groups = [(slot, i, min(i + chunk, b)) for slot, a, b in groups for i in range(a, b, chunk)]
        return order, groups

    def due_pages(self, now: float, slots: Sequence[int], chunk: int) -> tuple[list[bytes], list[int]]:
        """The first ``chunk`` devices due before ``now`` in each of these slots' due sets (one pipelined
        ``ZRANGEBYSCORE`` each), and the slots whose page was full."""
        if self._scan_heads is None:
            self._scan_heads = [pack((b"ZRANGEBYSCORE", self.due_key(s), b"-inf"))[4:]
                                for s in range(SLOTS if self.cluster else 1)]
        heads = self._scan_heads
        tail = pack((b"(%r" % float(now), b"LIMIT", b"0", b"%d" % chunk))[4:]  # the rest of the command
        replies = self.send([(s, b"*7\r\n" + heads[s] + tail) for s in slots])
        bad = [r for r in replies if isinstance(r, Exception)]
        if bad:
            raise StoreUnavailable(f"Redis state store unavailable: {bad[0]}", retry_after_s=1.0)
        full = [s for s, r in zip(slots, replies, strict=True) if len(r) >= chunk]
        return [x for r in replies for x in r], full

    def get(self, keys: Sequence[bytes], slots: np.ndarray | None = None) -> list[bytes | None]:
        """``GET`` of each key (its hash slot ``slots[i]``, computed when not given), pipelined per node."""
        slots = key_slots(keys) if slots is None else slots
        bad: list[int] = []
        replies = self.send(list(zip(slots.tolist(), [b"*2\r\n$3\r\nGET\r\n" + k for k in bulk(keys)],
                                     strict=True)), errors=bad)
        if bad:
            raise StoreUnavailable(f"Redis state store unavailable: {replies[bad[0]]}", retry_after_s=1.0)
        return replies


def _give_back(held: dict[int, tuple[Any, Any, int]]) -> None:
    """Give ``held`` connections back to their pools (this process's only) and forget them."""
    taken = list(held.values())
    held.clear()
    for client, conn, pid in taken:
        if pid == os.getpid():
            client.connection_pool.release(conn)


__all__ = ["NOT_RUN", "SLOTS", "UNAVAILABLE", "Router", "close", "connect", "slot_tags"]
