"""Device info in Redis: ``P:{D}:info``, a hash of ``a`` (attrs JSON), ``z`` (time zone) and ``o`` (opt-out),
beside the device's presence state (the key layout of :mod:`proximity._redis.store`). Written and read in
the protocol (:mod:`proxbase.resp`), one pipeline of a command or two per device, through the store's router.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from proxbase.resp import arg
from proximity._redis.resp import key_slots
from proximity._redis.scripts import pack
from proximity.events import Device


class DeviceInfo:
    """What :class:`proximity._redis.store.RedisStateStore` knows of its devices beside their presence state
    (its ``prefix``, ``cluster``, ``ttl_ms``, ``r``, ``_call`` and ``_send`` are the store's)."""

    prefix: str
    cluster: bool
    ttl_ms: int
    r: Any
    _call: Callable[..., Any]
    _send: Callable[..., list[Any]]

    def _info(self, device_id: str) -> str:
        return f"{self.prefix}:{{{device_id}}}:info"

    #: per thread, the info of a batch's devices with events, read with the batch's save (see :meth:`devices`)
    _prefetched: dict[int, dict[str, Device]]

    def _info_commands(self, device_ids: Sequence[str]) -> list[tuple[int, bytes]]:
        """``(slot, HMGET)`` of each device's info (what :meth:`devices` sends)."""
        keys, slots = self._info_keys(device_ids)
        return [(slot, pack((b"HMGET", key, b"a", b"z", b"o"))) for key, slot in zip(keys, slots.tolist(), strict=True)]

    def _keep_info(self, device_ids: Sequence[str], replies: Sequence[Any]) -> None:
        """Keep, for this thread's next :meth:`devices`, what :meth:`_info_commands` of ``device_ids`` got back
        (sent with a batch's save: one round trip less for the batch's campaign decisions)."""
        mine = self._prefetched.setdefault(threading.get_ident(), {})
        for d, reply in zip(device_ids, replies, strict=True):
            if not isinstance(reply, Exception):
                mine[d] = _device(d, reply)

    def _forget_prefetched(self, device_ids: Sequence[str] | None = None) -> None:
        """Drop what this thread or any other kept of ``device_ids`` (``None``: of this thread, all)."""
        if device_ids is None:
            self._prefetched.pop(threading.get_ident(), None)
            return
        for kept in list(self._prefetched.values()):
            for d in device_ids:
                kept.pop(d, None)

    def _info_keys(self, device_ids: Sequence[str]) -> tuple[list[bytes], np.ndarray]:
        """Each device's info key (``P:{D}:info``) and its hash slot (every one 0 with ``cluster=False``)."""
        keys = [self._info(d).encode() for d in device_ids]
        return keys, key_slots(keys) if self.cluster else np.zeros(len(keys), np.int64)

    def update_info(self, device_ids: np.ndarray, attrs: np.ndarray, timezone: np.ndarray) -> None:
        # as the memory store: an empty attrs dict (a CSV row with its attribute cells empty) or time zone
        # says nothing new, it does not wipe what an earlier row said
        has = attrs.astype(bool) | timezone.astype(bool)
        if not has.any():
            return
        latest: dict[str, dict[bytes, bytes]] = {}
        for d, a, z in zip(device_ids[has], attrs[has], timezone[has], strict=True):
            fields = latest.setdefault(d, {})
            if a:
                fields[b"a"] = arg(json.dumps(a, sort_keys=True, default=str))
            if z:
                fields[b"z"] = arg(z)
        self._forget_prefetched(list(latest))
        keys, slots = self._info_keys(list(latest))
        ttl = b"%d" % self.ttl_ms
        commands = []
        for key, slot, fields in zip(keys, slots.tolist(), latest.values(), strict=True):
            commands.append((slot, pack((b"HSET", key, *[x for kv in fields.items() for x in kv]))))
            commands.append((slot, pack((b"PEXPIRE", key, ttl))))
        self._send(commands)

    def set_opt_out(self, device_id: str, flag: bool) -> None:
        self._forget_prefetched([device_id])
        key = self._info(device_id)
        if flag:
            self._call(lambda: (self.r.hset(key, "o", "1"), self.r.pexpire(key, self.ttl_ms)))
        else:
            self._call(lambda: self.r.hdel(key, "o"))

    def devices(self, device_ids: Sequence[str]) -> dict[str, Device]:
        """The devices' info: what this thread's last batch read with its save (:meth:`_keep_info`; used once),
        the others in one round trip."""
        ids = list(device_ids)
        kept = self._prefetched.pop(threading.get_ident(), None) or {}
        if not ids:
            return {}
        missing = [d for d in ids if d not in kept]
        if missing:
            kept.update((d, _device(d, reply)) for d, reply in
                        zip(missing, self._send(self._info_commands(missing)), strict=True))
        return {d: kept[d] for d in ids}


def _device(device_id: str, reply: Sequence[Any]) -> Device:
    a, z, o = reply
    return Device(device_id, json.loads(a) if a else {}, z.decode() if z else None, bool(o))


__all__ = ["DeviceInfo"]
