"""The one timestamp rule: pings, sightings, scan bodies and files all parse times here.

A time is UTC epoch seconds (a JSON number, or a number in text) or ISO 8601
text *with* an offset (``2024-05-01T09:00:00Z``, ``...+02:00``). Refused, with a
reason: ISO text without an offset (whose zone would be a guess), values that
look like milliseconds (beyond year 5138), negative or non-finite numbers, and
booleans.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

#: Epoch seconds above this are taken for milliseconds sent by mistake (year 5138).
MAX_EPOCH_S = 1e11


#: The JSON Schema of what :func:`parse_ts` takes from a JSON document: epoch seconds (0 to
#: ``MAX_EPOCH_S``), or RFC 3339 text (ISO 8601 with an offset) of the years 1971-4999.
TIMESTAMP_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_S, "description": "epoch seconds (not milliseconds)"},
        {"type": "string", "format": "date-time", "pattern": "^(197[1-9]|19[89][0-9]|[2-4][0-9]{3})-",
         "description": "ISO 8601 with an offset (`Z` or `+hh:mm`)"},
    ],
}


def parse_ts(value: Any) -> float:
    """UTC epoch seconds from an ISO 8601 string with an offset (``...Z``) or an epoch number.

    Raises ``ValueError`` with a short reason; callers add where it happened.
    """
    if isinstance(value, bool):
        raise ValueError(f"timestamp must be ISO 8601 or epoch seconds, not {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            ts = float(text)
        except ValueError:
            ts = _parse_iso(text)
    else:
        raise ValueError(f"timestamp must be ISO 8601 or epoch seconds, not {type(value).__name__}")
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"timestamp must be a finite time after 1970, not {value!r}")
    if ts > MAX_EPOCH_S:
        raise ValueError(f"timestamp {value!r} looks like milliseconds; send epoch seconds")
    return ts


def _parse_iso(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is neither ISO 8601 nor epoch seconds") from None
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset; add 'Z' or '+hh:mm'")
    return dt.timestamp()


__all__ = ["MAX_EPOCH_S", "TIMESTAMP_SCHEMA", "parse_ts"]
