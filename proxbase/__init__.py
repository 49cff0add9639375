"""What every package of the project shares, with no dependency at all: the located error type
(:mod:`proxbase.errors`) and the one timestamp rule (:mod:`proxbase.timestamps`).

It sits below the six packages of the layering (``geofence`` and ``beacons`` may import it too)."""

from proxbase.errors import (
    ProximityError,
    StateError,
    StoreUnavailable,
    ValidationError,
    as_json,
    describe,
    location,
    message_of,
    unavailable_on,
)
from proxbase.timestamps import MAX_EPOCH_S, parse_ts

__all__ = [
    "MAX_EPOCH_S",
    "ProximityError",
    "StateError",
    "StoreUnavailable",
    "ValidationError",
    "as_json",
    "describe",
    "location",
    "message_of",
    "parse_ts",
    "unavailable_on",
]
