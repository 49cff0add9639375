"""The engine's errors: the project's one error contract (:mod:`proxbase.errors`), re-exported.

``geofence``, ``beacons``, ``campaigns`` and ``sim`` subclass the same
:class:`ValidationError`, so :func:`describe` renders any of them the same way
for the CLI (``file:line:col: message``) and :func:`as_json` for the HTTP layer
(``{"error": ..., "field": ..., "row": ...}``).
"""

from proxbase.errors import (
    ProximityError,
    StateError,
    StoreUnavailable,
    ValidationError,
    as_json,
    describe,
    location,
    message_of,
)

__all__ = [
    "ProximityError",
    "StateError",
    "StoreUnavailable",
    "ValidationError",
    "as_json",
    "describe",
    "location",
    "message_of",
]
