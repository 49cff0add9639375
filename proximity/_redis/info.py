"""Device info in Redis: ``P:{D}:info``, a hash of ``a`` (attrs JSON), ``z`` (time zone) and ``o`` (opt-out),
beside the device's presence state (the key layout of :mod:`proximity._redis.store`). Written and read in
the protocol (:mod:`proxbase.resp`), one pipeline of a command or two per device, through the store's router.
"""

from __future__ import annotations

import json
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
        keys, slots = self._info_keys(list(latest))
        ttl = b"%d" % self.ttl_ms
        commands = []
        for key, slot, fields in zip(keys, slots.tolist(), latest.values(), strict=True):
            commands.append((slot, pack((b"HSET", key, *[x for kv in fields.items() for x in kv]))))
            commands.append((slot, pack((b"PEXPIRE", key, ttl))))
        self._send(commands)

    def set_opt_out(self, device_id: str, flag: bool) -> None:
        key = self._info(device_id)
        if flag:
            self._call(lambda: (self.r.hset(key, "o", "1"), self.r.pexpire(key, self.ttl_ms)))
        else:
            self._call(lambda: self.r.hdel(key, "o"))

    def devices(self, device_ids: Sequence[str]) -> dict[str, Device]:
        ids = list(device_ids)
        if not ids:
            return {}
        keys, slots = self._info_keys(ids)
        replies = self._send([(slot, pack((b"HMGET", key, b"a", b"z", b"o")))
                              for key, slot in zip(keys, slots.tolist(), strict=True)])
        out = {}
        for d, (a, z, o) in zip(ids, replies, strict=True):
            out[d] = Device(d, json.loads(a) if a else {}, z.decode() if z else None, bool(o))
        return out


__all__ = ["DeviceInfo"]
