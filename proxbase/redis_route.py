"""Packed commands sent to the Redis Cluster node that holds their slot, pipelined per node, without redis-py's
per-command Python; also the one-server case of it.

redis-py's cluster pipeline looks up a node, builds a command object and encodes arguments for every
command; a batch of hundreds of small calls (the presence store's state keys, the campaign decisions'
cap scripts, outbox puts and counters) paid more for that than for its own work. :class:`NodeRouter`
takes ``(slot, packed command)`` pairs (see :mod:`proxbase.resp` for packing), reads the node of each
slot from redis-py's own slot map (so MOVED, a failover and a new node are followed where redis-py
follows them), writes every node's pipeline before reading any reply, and sends again what a node
refused without running (a redirection, ``TRYAGAIN``, ``CLUSTERDOWN``, ``NOSCRIPT``).
:func:`key_slots` computes many keys' hash slots with numpy.

In ``proxbase`` so that the presence store (:mod:`proximity._redis.cluster`) and the campaign adapters
(:mod:`campaigns._redis`) share one implementation. Importing it imports redis.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from binascii import crc_hqx
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis as redis_lib
from redis.cluster import RedisCluster
from redis.crc import key_slot

from proxbase.resp import read_replies

SLOTS = 16384  # Redis Cluster hash slots
# error replies that mean the command did not run, so it can be sent again (MovedError is an AskError)
NOT_RUN = (redis_lib.exceptions.AskError, redis_lib.exceptions.TryAgainError, redis_lib.exceptions.ClusterDownError)
# what says the store cannot be reached (a slot without a master raises the latter two)
UNAVAILABLE = (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.exceptions.ClusterError,
               redis_lib.exceptions.RedisClusterException)

#: CRC16-XMODEM of one byte from 0 (the table of Redis Cluster's key hash)
CRC16_TABLE = np.array([crc_hqx(bytes([b]), 0) for b in range(256)], np.int64)


def key_slots(keys: Sequence[bytes]) -> np.ndarray:
    """The Redis Cluster hash slot of each key (``redis.crc.key_slot`` of each).

    ``key_slot`` is one C call a key (~0.5 us); the vectorised form (:func:`key_slots_vectorised`) costs a few
    numpy calls per byte of the longest hash tag whatever the number of keys. So keys go one by one unless
    there are many more of them than that tag has bytes: the 16 shard keys of an outbox claim took 93 us the
    vectorised way and 12 us one by one; 512 keys tagged with a UUID 406 against 273 us; 512 short tags 102
    against 244 us."""
    n = len(keys)
    if n < 128:
        return np.fromiter(map(key_slot, keys), np.int64, n)
    buf, lo, width = _hash_tags(keys)
    if n < 16 * int(width.max()) + 64:
        return np.fromiter(map(key_slot, keys), np.int64, n)
    return _crc_slots(buf, lo, width)


def key_slots_vectorised(keys: Sequence[bytes]) -> np.ndarray:
    """:func:`key_slots` computed with numpy alone: one pass per byte position of the longest hash tag."""
    if not keys:
        return np.zeros(0, np.int64)
    return _crc_slots(*_hash_tags(keys))


def _hash_tags(keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The keys joined (bytes), and where each key's hashed part starts in them and its length: between the
    first "{" and the first "}" after it when that is not empty, else the whole key."""
    n = len(keys)
    lengths = np.fromiter(map(len, keys), np.int64, n)
    start = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=start[1:])
    end = start + lengths
    buf = np.frombuffer(b"".join(keys), np.uint8)
    lo, hi = start.copy(), end.copy()
    opens = np.flatnonzero(buf == ord("{"))
    closes = np.flatnonzero(buf == ord("}"))
    if len(opens) and len(closes):
        o = opens[np.minimum(np.searchsorted(opens, start), len(opens) - 1)]
        has_open = (o >= start) & (o < end)
        c = closes[np.minimum(np.searchsorted(closes, o + 1), len(closes) - 1)]
        tagged = has_open & (c > o + 1) & (c < end)
        lo[tagged], hi[tagged] = o[tagged] + 1, c[tagged]
    return buf, lo, hi - lo


def _crc_slots(buf: np.ndarray, lo: np.ndarray, width: np.ndarray) -> np.ndarray:
    """CRC16-XMODEM of each ``buf[lo:lo + width]``, modulo the slots."""
    crc = np.zeros(len(lo), np.int64)
    for j in range(int(width.max()) if len(lo) else 0):
        on = j < width
        byte = buf[np.minimum(lo + j, len(buf) - 1)].astype(np.int64)
        step = ((crc << 8) & 0xFFFF) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
        crc = np.where(on, step, crc)
    return crc % SLOTS


class NodeRouter:
    """Sends ``(slot, packed command)`` pairs to the node that holds each slot, pipelined per node (``client``:
    a :class:`redis.cluster.RedisCluster`, else one server gets every command, in order).

    With ``hold`` it keeps one connection per node between calls for the thread that holds them (redis-py's
    pool checks a connection out and in, with a poll and a lock, each time); another thread meanwhile uses the
    pool's. Held connections refer to the cluster client (redis-py gives them its ``on_connect``): whoever
    holds the router must :meth:`release` them before dropping the client, else neither is ever freed.
    """

    def __init__(self, client: Any, hold: bool = True) -> None:
        self.r = client
        self.hold = hold
        self.nodes = isinstance(client, RedisCluster)  # route each slot to its node
        self._slot_clients: dict[str, Any] = {}  # node name -> its client, valid for one slot map:
        self._slot_map: Any = None  # the nodes manager's slots_cache they were read from (a new one: reread)
        self._slot_node: np.ndarray | None = None  # slot -> index into _node_names (-1: none in the map)
        self._node_names: list[str] = []
        # one connection per node client kept between calls: node client id -> (client, connection, process id)
        self._held: dict[int, tuple[Any, Any, int]] = {}
        self._hold = threading.Lock()  # held connections serve one thread at a time; others use the pool
        weakref.finalize(self, _give_back, self._held)  # a router dropped unclosed gives them back too

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
        mine = self.hold and self._hold.acquire(blocking=False)
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
                if missing and script is None:
                    missing = []  # no script to load: returned as it is (the caller loads it)
                elif missing:
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


def _give_back(held: dict[int, tuple[Any, Any, int]]) -> None:
    """Give ``held`` connections back to their pools (this process's only) and forget them."""
    taken = list(held.values())
    held.clear()
    for client, conn, pid in taken:
        if pid == os.getpid():
            client.connection_pool.release(conn)


__all__ = ["CRC16_TABLE", "NOT_RUN", "SLOTS", "UNAVAILABLE", "NodeRouter", "key_slots", "key_slots_vectorised"]
