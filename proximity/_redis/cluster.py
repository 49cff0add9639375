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

from proxbase.redis_cluster import close_cluster, seeded_cluster
from proxbase.redis_route import NOT_RUN, SLOTS, UNAVAILABLE, NodeRouter, key_slots
from proximity._redis.scripts import bulk, pack
from proximity.errors import StoreUnavailable


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


class Router(NodeRouter):
    """Sends packed commands to the node that holds their slot, pipelined (:class:`proxbase.redis_route.NodeRouter`),
    and knows the due sets.

    ``cluster=False``: one due set ``P:due`` (slot 0 stands for it) and every command to the one server.
    ``due_slots``: the slots whose due sets can list devices (cluster: every slot unless given; see
    :mod:`proximity._redis.layout`).
    """

    def __init__(self, client: Any, prefix: str, cluster: bool, due_slots: Sequence[int] | None = None) -> None:
        super().__init__(client)
        self.cluster = cluster
        self._due_slots = due_slots if due_slots is not None else range(SLOTS if cluster else 1)
        self.prefix = prefix
        self._due_keys: list[bytes] | None = None  # slot -> its due set
        self._due_bulk: list[bytes] | None = None  # slot -> its due set as a protocol bulk string
        self._scan_heads: list[bytes] | None = None  # slot -> packed "ZRANGEBYSCORE <its due set> -inf"

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
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))  # (np.r_ costs ~20 us)
        ends = np.append(starts[1:], n).astype(np.int64)
        groups = list(zip(ordered[starts].tolist(), starts.tolist(), ends.tolist(), strict=True))
        if (ends - starts > chunk).any():
            groups = [(slot, i, min(i + chunk, b)) for slot, a, b in groups for i in range(a, b, chunk)]
        return order, groups

    def due_pages(self, now: float, slots: Sequence[int], chunk: int) -> tuple[list[bytes], list[int], list[int]]:
        """The first ``chunk`` devices due before ``now`` in each of these slots' due sets (one pipelined
        ``ZRANGEBYSCORE`` each), the slots whose page was full and those with any device due."""
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
        return [x for r in replies for x in r], full, [s for s, r in zip(slots, replies, strict=True) if r]

    def get(self, keys: Sequence[bytes], slots: np.ndarray | None = None) -> list[bytes | None]:
        """``GET`` of each key (its hash slot ``slots[i]``, computed when not given), pipelined per node."""
        slots = key_slots(keys) if slots is None else slots
        bad: list[int] = []
        replies = self.send(list(zip(slots.tolist(), [b"*2\r\n$3\r\nGET\r\n" + k for k in bulk(keys)],
                                     strict=True)), errors=bad)
        if bad:
            raise StoreUnavailable(f"Redis state store unavailable: {replies[bad[0]]}", retry_after_s=1.0)
        return replies


__all__ = ["NOT_RUN", "SLOTS", "UNAVAILABLE", "Router", "close", "connect", "slot_tags"]
