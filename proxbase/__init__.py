"""What every package of the project shares, with no dependency at all: the located error type
(:mod:`proxbase.errors`) and the one timestamp rule (:mod:`proxbase.timestamps`).

It sits below the six packages of the layering (``geofence`` and ``beacons`` may import it too)."""

import proxbase.errors as _errors
from proxbase.errors import *  # noqa: F403  (the error contract, whole)
from proxbase.timestamps import MAX_EPOCH_S as MAX_EPOCH_S
from proxbase.timestamps import parse_ts as parse_ts

__all__ = sorted([*_errors.__all__, "MAX_EPOCH_S", "parse_ts"])
