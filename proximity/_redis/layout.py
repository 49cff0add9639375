"""Where the state store keeps a device's keys (the key layout), the layout's marker, and the migration.

``P`` is the key prefix, ``D`` the device id.

- Single Redis (``cluster=False``): ``P:{D}:st``, ``P:{D}:tr`` and one due set ``P:due``.
- Redis Cluster (``cluster=True``), the *grouped* layout: each device belongs to one of ``groups``
  device groups, ``g = CRC16(D) mod groups`` (the whole id, as bytes); group ``g``'s keys carry the
  hash tag ``T`` of slot ``g * 16384 // groups`` (:func:`proximity._redis.cluster.slot_tags`):
  ``P:{T}:D:st``, ``P:{T}:D:tr``, and the group's due set ``P:due:{T}`` and batch journals
  ``P:j:{T}:<batch>`` share that slot. A batch of 500 devices is then at most ``groups`` script calls
  (one per group it touches, pipelined per node), where one hash tag per device made it ~500. The
  groups' slots are spread evenly over the 16384, so the masters of an evenly split cluster hold
  about as many groups each; a slot migration moves a whole group (1/``groups`` of the devices).
  ``P:{D}:info`` (attributes, time zone, opt-out: no script reads it) keeps its own tag.

The layout is recorded in ``P:layout`` (``b"grouped <groups>"``), written by the first cluster-mode
store that runs on a prefix holding no presence state. A store refuses (:class:`StateError`, with
what to do) a prefix whose marker says another layout or number of groups, and a prefix without a
marker that holds state of the per-device layout that cluster mode used before (``P:{D}:st`` with
due sets on every slot): :func:`proximity._redis.migrate.migrate` moves such state to the grouped
layout in place (``python -m proximity._redis.migrate URL --prefix P --groups N``, with the workers
stopped; it can be run again after an interruption). Changing ``groups`` later means a new prefix (the devices
start over) or flushing the old one.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

import proximity._redis._kernels_codec as KC
from proxbase.redis_route import CRC16_TABLE
from proximity._redis.cluster import SLOTS, slot_tags
from proximity._redis.scripts import bulk
from proximity.errors import StateError

#: the default number of device groups on a cluster: at most 32 ``LOAD`` and 32 ``SAVE`` calls per batch,
#: and 32 units to spread over the masters (about 11 per master on three; use 8-10 per master on more)
GROUPS = 32


class _Between(dict[int, bytes]):
    """What comes between two bulk-string state keys when the second's name is ``length`` bytes long and of
    group ``group`` (key ``group << 32 | length``): the first's ``tail``, a NUL, the second's ``$<size>`` line and
    its group's head (see :meth:`Layout.bulk_keys`); made on first use."""

    def __init__(self, heads: Sequence[bytes], tail: bytes) -> None:
        super().__init__()
        self.heads, self.tail = heads, tail

    def __missing__(self, code: int) -> bytes:
        head = self.heads[code >> 32]
        size = len(head) + (code & 0xFFFFFFFF) + len(self.tail) - 2
        piece = self[code] = self.tail + b"\0$%d\r\n%b" % (size, head)
        return piece


class Layout:
    """The key layout of one store (see the module docstring)."""

    def __init__(self, prefix: str, cluster: bool, groups: int = GROUPS) -> None:
        if cluster and not 1 <= groups <= SLOTS:
            raise ValueError(f"groups must be 1..{SLOTS}, not {groups}")
        self.prefix = prefix
        self.cluster = cluster
        self.groups = groups if cluster else 0
        self.key = f"{prefix}:layout"
        self.marker = b"grouped %d" % groups if cluster else None
        head = prefix.encode()
        self._head = head
        if cluster:
            self.group_slot = np.arange(groups, dtype=np.int64) * SLOTS // groups
            tags = slot_tags()
            self._heads = [b"%b:{%b}:" % (head, tags[s]) for s in self.group_slot.tolist()]
            #: slot -> SAVE's ARGV[2] as a protocol bulk string: where a device's name is in its state key
            self._spans = {s: bulk([b"%d -4" % (len(h) + 1)])[0]
                           for s, h in zip(self.group_slot.tolist(), self._heads, strict=True)}
        else:
            self._span = bulk([b"%d -5" % (len(head) + 3)])[0]

        self._between = _Between([head + b":{"], b"}:st\r\n") if not cluster else _Between(self._heads, b":st\r\n")

    @property
    def due_slots(self) -> Sequence[int]:
        """The slots whose due sets may list devices (cluster: the groups'; else the one set, as slot 0)."""
        return self.group_slot.tolist() if self.cluster else range(1)

    def _groups(self, names: Sequence[str]) -> tuple[list[bytes], np.ndarray | None, np.ndarray | None]:
        """Each name as bytes; with ``cluster``, its device group; and the names' lengths when they came with the
        groups (``None`` else). ASCII ids without NUL (the common ones) are encoded in one call and their groups
        computed in one numba pass over the joined bytes (500 UUIDs: 80 -> 39 us for the groups)."""
        joined = "\0".join(names)
        data = joined.encode() if joined.isascii() else None
        enc = data.split(b"\0") if data is not None else []  # (no names: [b""], made [] below)
        if data is None or len(enc) != len(names) or not names:
            enc = [n.encode() for n in names]
            if not self.cluster:
                return enc, None, None
            return enc, np.fromiter(map(crc_hqx, enc, repeat(0)), np.int64, len(enc)) % self.groups, None
        if not self.cluster:
            return enc, None, None
        group, length = np.empty(len(enc), np.int64), np.empty(len(enc), np.int64)
        KC.name_groups(np.frombuffer(data, np.uint8), CRC16_TABLE, self.groups, group, length)
        return enc, group, length

    def compile_kernels(self) -> None:
        """Compile, or load from the kernel cache, the device groups' loop for the buffers :meth:`_groups` passes
        it (a server's warm-up, before it says it is ready; in every mode, so a single Redis's warm-up also
        readies the cluster mode's loop)."""
        group, length = np.empty(1, np.int64), np.empty(1, np.int64)
        KC.name_groups(np.frombuffer(b"warm-up", np.uint8), CRC16_TABLE, max(self.groups, 1), group, length)

    def state_keys(self, names: Sequence[str]) -> tuple[list[bytes], np.ndarray]:
        """Each device's state key and its hash slot (0 for all with ``cluster=False``)."""
        enc, g, _ = self._groups(names)
        if g is None:
            head = self._head + b":{"
            return [head + e + b"}:st" for e in enc], np.zeros(len(enc), np.int64)
        heads = self._heads
        return [heads[x] + e + b":st" for x, e in zip(g.tolist(), enc, strict=True)], self.group_slot[g]

    def bulk_keys(self, names: Sequence[str]) -> tuple[list[bytes], np.ndarray]:
        """:meth:`state_keys` as protocol bulk strings (``$<length>\\r\\n<key>\\r\\n``).

        For more than a few names, made by one ``join`` and one ``split``: what comes before a name in its key
        depends only on the name's length and group (:class:`_Between` keeps those pieces), so the keys are
        the names and those pieces joined, cut on NUL (500 UUIDs on a single Redis: 180 -> 70 us). A name
        with a NUL in it (no device id has one) makes the cut miss: then each key is formatted on its own."""
        enc, g, length = self._groups(names)
        slots = np.zeros(len(enc), np.int64) if g is None else self.group_slot[g]
        if len(enc) >= 8:
            between, cut = self._between, len(self._between.tail) + 1
            lengths = set(map(len, enc)) if g is None else set()
            if len(lengths) == 1:  # one piece between any two keys (single Redis, ids of one length): one replace
                piece = between[lengths.pop()]
                keys = (piece[cut:] + b"\0".join(enc).replace(b"\0", piece) + between.tail).split(b"\0")
            else:
                code = length if length is not None else np.fromiter(map(len, enc), np.int64, len(enc))
                if g is not None:
                    code = code | (g << 32)
                parts = [b""] * (2 * len(enc))
                parts[0::2] = [between[c] for c in code.tolist()]
                parts[1::2] = enc
                parts[0] = parts[0][cut:]
                keys = (b"".join(parts) + between.tail).split(b"\0")
            if len(keys) == len(enc):
                return keys, slots
        if g is None:
            head = self._head + b":{"
            n = len(head) + 4
            return [b"$%d\r\n%b%b}:st\r\n" % (n + len(e), head, e) for e in enc], slots
        heads = self._heads
        return [b"$%d\r\n%b%b:st\r\n" % (len(heads[x]) + len(e) + 3, heads[x], e)
                for x, e in zip(g.tolist(), enc, strict=True)], slots

    def span(self, slot: int) -> bytes:
        """``SAVE``'s ARGV[2] for the devices of ``slot`` (a bulk string): "<first> <last>", the name's
        place in the state key as ``string.sub`` takes it."""
        return self._spans[slot] if self.cluster else self._span

    def is_grouped_key(self, key: bytes) -> bool:
        """Is ``key`` a state key of this (cluster) layout?"""
        cut = key.find(b"}:", len(self._head) + 2)
        name = key[cut + 2 : -3]
        return cut > 0 and key.endswith(b":st") and self.state_keys([name.decode()])[0] == [key]

    def check(self, r: Any, exists: Any) -> None:
        """Refuse (:class:`StateError`) a prefix written in another layout; mark an unmarked one that holds
        no state. ``exists(keys)``: how many of these keys exist (any slots)."""
        got = r.get(self.key)
        if got is None and self.cluster:
            if exists([b"%b:due:{%b}" % (self._head, t) for t in slot_tags()]):
                raise StateError(
                    f"the Redis prefix {self.prefix!r} holds presence state in the per-device key layout of "
                    f"earlier versions ({self.prefix}:{{<device>}}:st): move it to the grouped layout with "
                    f"'python -m proximity._redis.migrate URL --prefix {self.prefix} --groups {self.groups}' "
                    f"(workers stopped), or use a new prefix (every device starts over)")
            r.set(self.key, self.marker, nx=True)
            got = r.get(self.key)
        if got != self.marker:
            here = f"cluster=True with {self.groups} device groups" if self.cluster else "cluster=False"
            raise StateError(
                f"the Redis prefix {self.prefix!r} holds presence state in the layout {got!r} "
                f"({self.key}), and this store runs {here}: use the same setting as the processes that "
                f"wrote it, or a new prefix (every device starts over)")


__all__ = ["GROUPS", "Layout"]
