"""The engine's errors, and one way of telling the user where a problem is.

``geofence``, ``beacons`` and ``campaigns`` are usable on their own, so each
defines its own error types (``geofence.FenceError``, ...). They all carry the
same *location* attributes, and :func:`describe` renders any of them the same
way for the CLI (``file:line:col: message``) and the HTTP layer
(``{"error": ..., "field": ..., "row": ...}``):

- ``source``: a file path or a name such as ``"<request body>"``;
- ``line``, ``col``: 1-based, when the problem has a place in a text file;
- ``field``: the key or column at fault (``"features[3].geometry"``, ``"lat"``);
- ``row``: the 0-based index of the record in a batch or CSV data row.
"""

from __future__ import annotations

from typing import Any


class ProximityError(Exception):
    """Base of the engine's own errors."""


class ValidationError(ProximityError, ValueError):
    """Input that cannot be accepted, with where it is."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        col: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.col = col
        self.field = field
        self.row = row

    def __str__(self) -> str:
        return describe(self)


class StateError(ProximityError):
    """The state store refused or could not apply an update."""


class StoreUnavailable(StateError):
    """The shared store (Redis) cannot be reached; the caller should retry later."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def location(exc: BaseException) -> str:
    """``source:line:col`` (as much of it as the error knows), or ``""``."""
    source = getattr(exc, "source", None)
    line = getattr(exc, "line", None)
    col = getattr(exc, "col", None)
    parts = [str(p) for p in (source, line, col) if p is not None]
    return ":".join(parts)


def message_of(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    if msg is not None:
        return str(msg)
    if isinstance(exc, OSError) and exc.strerror:
        # args[0] of an OSError is its errno: say what failed, and on which file
        name = exc.filename if exc.filename is not None else None
        return f"{name}: {exc.strerror}" if name is not None else exc.strerror
    return str(exc.args[0]) if exc.args else type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line for a terminal: ``file:line:col: message`` (plus field/row when known)."""
    where = location(exc)
    msg = message_of(exc)
    extra = []
    row = getattr(exc, "row", None)
    field = getattr(exc, "field", None)
    if row is not None and getattr(exc, "line", None) is None:
        extra.append(f"row {row}")
    if field is not None and f"'{field}'" not in msg and not msg.startswith((f"{field}:", f"{field} ")):
        extra.append(f"field {field!r}")
    if extra:
        msg = f"{msg} ({', '.join(extra)})"
    return f"{where}: {msg}" if where else msg


def as_json(exc: BaseException) -> dict[str, Any]:
    """The HTTP body for a rejected input: ``{"error", "field", "row", "line", "col"}`` (known ones only)."""
    out: dict[str, Any] = {"error": message_of(exc)}
    for key in ("field", "row", "line", "col"):
        value = getattr(exc, key, None)
        if value is not None:
            out[key] = value
    return out


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
