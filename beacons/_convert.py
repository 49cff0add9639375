"""Every conversion of beacon identities and times, in one place.

Beacon identities arrive as UUID strings (dashed or not, any case), bytes,
integers, hex with spaces or colons, or as the parts of a canonical key given as
separate fields (YAML registry, JSON bodies). They are converted here, once, to
the canonical key strings the rest of the engine uses:

- ``ibeacon:<uuid lowercase dashed>/<major>/<minor>``
- ``eddystone:<namespace 20 hex>/<instance 12 hex>``
- ``altbeacon:<id 40 hex>``

Times become UTC epoch seconds (float); ISO 8601 strings are accepted at the edge.
"""

from __future__ import annotations

import math
import re
import uuid as _uuid
from collections.abc import Mapping
from typing import Any

from beacons.errors import BeaconError
from proxbase.timestamps import parse_ts

KEY_TYPES = ("ibeacon", "eddystone", "altbeacon")

#: Eddystone advertises its power at 0 m; the power at 1 m is about 41 dB lower
#: (free-space loss at 2.4 GHz over the first metre, as the Eddystone spec suggests).
EDDYSTONE_0M_TO_1M_DB = 41

_HEX_JUNK = re.compile(r"[\s:\-_]")
_HEX = re.compile(r"^[0-9a-fA-F]*$")


def parse_hex(text: str, *, field: str | None = None) -> bytes:
    """Bytes from hex text; spaces, colons, dashes and a leading ``0x`` are allowed."""
    if not isinstance(text, str):
        raise BeaconError(f"expected a hex string, got {type(text).__name__}", field=field)
    s = text.strip()
    if s[:2].lower() == "0x":
        s = s[2:]
    s = _HEX_JUNK.sub("", s)
    if not _HEX.match(s):
        bad = next(c for c in s if c not in "0123456789abcdefABCDEF")
        raise BeaconError(f"not hex: unexpected character {bad!r}", field=field)
    if len(s) % 2:
        raise BeaconError(f"not hex: odd number of digits ({len(s)})", field=field)
    return bytes.fromhex(s)


def normalize_uuid(value: Any, *, field: str | None = "uuid") -> str:
    """A UUID (str in any common form, 16 bytes, int or ``uuid.UUID``) as lowercase dashed text."""
    try:
        if isinstance(value, _uuid.UUID):
            u = value
        elif isinstance(value, bytes | bytearray):
            u = _uuid.UUID(bytes=bytes(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            u = _uuid.UUID(int=value)
        elif isinstance(value, str):
            u = _uuid.UUID(value.strip())
        else:
            raise BeaconError(f"expected a UUID, got {type(value).__name__}", field=field)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, BeaconError):
            raise
        raise BeaconError(f"not a UUID: {value!r}", field=field) from None
    return str(u)


def _hex_id(value: Any, nbytes: int, what: str, field: str) -> str:
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or value >= 1 << (8 * nbytes):
            raise BeaconError(f"{what} out of range for {nbytes} bytes: {value}", field=field)
        raw = value.to_bytes(nbytes, "big")
    elif isinstance(value, str):
        raw = parse_hex(value, field=field)
    else:
        raise BeaconError(f"{what} must be hex text, got {type(value).__name__}", field=field)
    if len(raw) != nbytes:
        raise BeaconError(f"{what} must be {nbytes} bytes ({2 * nbytes} hex digits), got {len(raw)}", field=field)
    return raw.hex()


def _uint16(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BeaconError(f"{field} must be an integer 0..65535, got {value!r}", field=field)
    try:
        n = int(value)
    except ValueError:
        raise BeaconError(f"{field} must be an integer 0..65535, got {value!r}", field=field) from None
    if not 0 <= n <= 0xFFFF:
        raise BeaconError(f"{field} must be an integer 0..65535, got {n}", field=field)
    return n


def ibeacon_key(uuid: Any, major: Any, minor: Any) -> str:
    """The canonical iBeacon key ``ibeacon:<uuid>/<major>/<minor>`` (the UUID in any spelling)."""
    return f"ibeacon:{normalize_uuid(uuid)}/{_uint16(major, 'major')}/{_uint16(minor, 'minor')}"


def eddystone_key(namespace: Any, instance: Any) -> str:
    """The canonical Eddystone-UID key ``eddystone:<namespace>/<instance>`` (10 and 6 bytes, hex)."""
    ns = _hex_id(namespace, 10, "namespace", "namespace")
    inst = _hex_id(instance, 6, "instance", "instance")
    return f"eddystone:{ns}/{inst}"


def altbeacon_key(beacon_id: Any) -> str:
    """The canonical AltBeacon key ``altbeacon:<20-byte id, hex>``."""
    return f"altbeacon:{_hex_id(beacon_id, 20, 'beacon id', 'id')}"


def canonical_key(text: Any, *, field: str | None = "key") -> str:
    """Validate a key string and return its canonical spelling (case, dashes, zero padding)."""
    if not isinstance(text, str):
        raise BeaconError(f"a beacon key must be a string, got {type(text).__name__}", field=field)
    kind, sep, rest = text.strip().partition(":")
    kind = kind.lower()
    try:
        if not sep or kind not in KEY_TYPES:
            raise BeaconError(
                f"not a beacon key: {text!r} (expected ibeacon:<uuid>/<major>/<minor>, "
                "eddystone:<namespace>/<instance> or altbeacon:<id>)"
            )
        parts = rest.split("/")
        if kind == "ibeacon":
            if len(parts) != 3:
                raise BeaconError(f"an iBeacon key is ibeacon:<uuid>/<major>/<minor>, not {text!r}")
            return ibeacon_key(parts[0], parts[1], parts[2])
        if kind == "eddystone":
            if len(parts) != 2:
                raise BeaconError(f"an Eddystone key is eddystone:<namespace>/<instance>, not {text!r}")
            return eddystone_key(parts[0], parts[1])
        if len(parts) != 1:
            raise BeaconError(f"an AltBeacon key is altbeacon:<40 hex digits>, not {text!r}")
        return altbeacon_key(parts[0])
    except BeaconError as exc:
        # keep the caller's field name: the key as a whole is what is wrong
        raise BeaconError(f"{exc.message} in key {text!r}" if text not in exc.message else exc.message,
                          field=field) from None


def split_key(key: str) -> tuple[str, tuple[str, ...]]:
    """``("ibeacon", (uuid, major, minor))`` etc. for a canonical key."""
    kind, _, rest = key.partition(":")
    return kind, tuple(rest.split("/"))


_FIELD_SETS: dict[str, tuple[str, ...]] = {
    "ibeacon": ("uuid", "major", "minor"),
    "eddystone": ("namespace", "instance"),
    "altbeacon": ("id",),
}


def key_from_fields(d: Mapping[str, Any]) -> str:
    """The canonical key of a mapping that gives ``key`` or the parts of one.

    Accepted: ``{"key": "ibeacon:..."}``, ``{"uuid", "major", "minor"}``,
    ``{"namespace", "instance"}``, ``{"id"}`` (AltBeacon), optionally with
    ``"type"`` naming the kind (``eddystone_uid`` is accepted for ``eddystone``).
    """
    if "key" in d:
        return canonical_key(d["key"])
    kind = d.get("type")
    if kind is not None:
        kind = str(kind).lower()
        if kind == "eddystone_uid":
            kind = "eddystone"
        if kind not in _FIELD_SETS:
            raise BeaconError(f"unknown beacon type {d['type']!r} (expected one of {', '.join(KEY_TYPES)})",
                              field="type")
    else:
        kind = next((k for k, names in _FIELD_SETS.items() if names[0] in d), None)
        if kind is None:
            raise BeaconError("no beacon identity: give key, or uuid/major/minor, namespace/instance or id",
                              field="key")
    for name in _FIELD_SETS[kind]:
        if name not in d:
            raise BeaconError(f"{kind} beacon needs {name!r}", field=name)
    if kind == "ibeacon":
        return ibeacon_key(d["uuid"], d["major"], d["minor"])
    if kind == "eddystone":
        return eddystone_key(d["namespace"], d["instance"])
    return altbeacon_key(d["id"])


def to_epoch(value: Any, *, field: str | None = "ts") -> float:
    """UTC epoch seconds by the project's one timestamp rule (:func:`proxbase.timestamps.parse_ts`: epoch
    seconds, or ISO 8601 with an offset); a :class:`BeaconError` naming ``field`` otherwise."""
    try:
        return parse_ts(value)
    except ValueError as exc:
        text = str(exc)
        raise BeaconError(text.replace("timestamp", field or "ts", 1), field=field) from None


def to_dbm(value: Any, *, field: str, allow_none: bool = False) -> float:
    """A power in dBm (RSSI or tx power) as float; ``None`` becomes NaN when allowed."""
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BeaconError(f"{field} must be a number of dBm, got {value!r}", field=field)
    try:
        out = float(value)
    except ValueError:
        raise BeaconError(f"{field} must be a number of dBm, got {value!r}", field=field) from None
    if not math.isfinite(out) or not -127.0 <= out <= 127.0:
        raise BeaconError(f"{field} must be a dBm value in -127..127, got {value!r}", field=field)
    return out


def eddystone_power_1m(tx_power_0m: int) -> int:
    """Eddystone's calibrated power at 0 m as the power at 1 m that ranging expects."""
    return tx_power_0m - EDDYSTONE_0M_TO_1M_DB


__all__ = [
    "EDDYSTONE_0M_TO_1M_DB",
    "KEY_TYPES",
    "altbeacon_key",
    "canonical_key",
    "eddystone_key",
    "eddystone_power_1m",
    "ibeacon_key",
    "key_from_fields",
    "normalize_uuid",
    "parse_hex",
    "split_key",
    "to_dbm",
    "to_epoch",
]
