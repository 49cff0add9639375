"""Conversions at the boundary, done once: timestamps, numbers, device ids, time zones.

Everything that enters the engine as text or JSON (ISO 8601 or epoch timestamps, by the
project's one rule in :mod:`proxbase.timestamps`,
numbers given as strings in a CSV, IANA zone names) is turned into the engine's
own representation here, and nowhere else. Each function raises ``ValueError``
with a short reason; the callers (:mod:`proximity.batch`) add where it happened.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from proxbase.timestamps import MAX_EPOCH_S, parse_ts

MAX_DEVICE_ID_LEN = 256
#: what a device id is (the OpenAPI document states the same): it ends up in logs, files and the console
DEVICE_ID_RULE = (f"device_id must be 1 to {MAX_DEVICE_ID_LEN} printable characters (letters, marks, digits, "
                  "punctuation, symbols and the space; no control, format or bidi characters, no line breaks), "
                  "not only spaces")


def parse_float(value: Any, name: str, *, lo: float | None = None, hi: float | None = None) -> float:
    """A finite float (numbers or numeric strings), optionally within ``[lo, hi]``."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a number, not {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, not {value!r}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise ValueError(f"{name} must be within [{lo}, {hi}], not {x}")
    return x


def parse_device_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"device_id must be a non-empty string, not {value!r}")
    if len(value) > MAX_DEVICE_ID_LEN:
        raise ValueError(f"device_id is longer than {MAX_DEVICE_ID_LEN} characters")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ValueError(f"{DEVICE_ID_RULE}; found U+{ord(bad):04X} at character {value.index(bad) + 1}")
    return value


def parse_bool(value: Any, name: str) -> int:
    """1/0 from JSON booleans, 0/1 or ``true``/``false`` text; -1 for missing (unknown)."""
    if value is None or value == "":
        return -1
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return int(value.strip().lower() in ("true", "1", "yes"))
    raise ValueError(f"{name} must be true or false, not {value!r}")


@lru_cache(maxsize=1024)
def _zone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_timezone(value: Any) -> str | None:
    """An IANA zone name (checked against the zone database), or ``None``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _zone_ok(value):
        raise ValueError(f"timezone must be an IANA zone name such as 'Europe/Paris', not {value!r}")
    return value


__all__ = [
    "DEVICE_ID_RULE",
    "MAX_DEVICE_ID_LEN",
    "MAX_EPOCH_S",
    "parse_bool",
    "parse_device_id",
    "parse_float",
    "parse_timezone",
    "parse_ts",
]
