"""The project's error contract: one located error type, one rendering.

Every package (``geofence``, ``beacons``, ``campaigns``, ``sim``, ``proximity``)
subclasses :class:`ValidationError` for bad input (``FenceError``,
``BeaconError``, ``CampaignError``, ...), so the CLI and the HTTP layer render
any of them the same way, and a caller can catch them by group:

- ``source``: a file path or a name such as ``"<request body>"``;
- ``line``, ``col``: 1-based, when the problem has a place in a text file;
- ``field``: the key or column at fault (``"features[3].geometry"``, ``"lat"``);
- ``row``: the 0-based index of the record in a batch or CSV data row.

:func:`describe` is the one-line form (``file:line:col: message (row 3, field 'lat')``),
and ``str()`` of every located error; :func:`as_json` is the HTTP body.
:class:`StoreUnavailable` is what every adapter of a shared store (Redis) raises
when its server is away, so callers have one thing to catch (the service answers
503 with ``Retry-After``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, TypeVar

E = TypeVar("E", bound="ValidationError")
F = TypeVar("F", bound=Callable[..., Any])


class ProximityError(Exception):
    """Base of the project's own errors."""


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

    def located(
        self: E,
        *,
        source: str | None = None,
        line: int | None = None,
        col: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ) -> E:
        """A copy with the location parts that this error does not know yet filled in."""
        out = copy.copy(self)
        for name, value in (("source", source), ("line", line), ("col", col), ("field", field), ("row", row)):
            if getattr(out, name) is None:
                setattr(out, name, value)
        return out


class StateError(ProximityError):
    """A state store refused or could not apply an update."""


class StoreUnavailable(StateError, ConnectionError):
    """A shared store (Redis, or a Redis Cluster slot without a master) cannot be reached; the caller
    should retry after ``retry_after_s``. Also a :class:`ConnectionError`, so code that maps lost
    connections to "retry later" needs no special case. Its message names the dependency and the
    reason, never the server's address."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


def unavailable_on(errors: tuple[type[BaseException], ...], what: str) -> Callable[[F], F]:
    """A decorator for an adapter's methods: ``errors`` (its client's "server away" exceptions) become
    :class:`StoreUnavailable` naming ``what``."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except errors as exc:
                raise StoreUnavailable(f"{what} unavailable: {exc or type(exc).__name__}") from exc

        return run  # type: ignore[return-value]

    return wrap


def location(exc: BaseException) -> str:
    """``source:line:col`` (as much of it as the error knows), or ``""``."""
    parts = [str(p) for p in (getattr(exc, "source", None), getattr(exc, "line", None), getattr(exc, "col", None))
             if p is not None]
    return ":".join(parts)


def message_of(exc: BaseException) -> str:
    """What went wrong, without where: a located error's message, an ``OSError``'s reason and file."""
    msg = getattr(exc, "message", None)
    if msg is not None:
        return str(msg)
    if isinstance(exc, OSError) and exc.strerror:
        # args[0] of an OSError is its errno: say what failed, and on which file
        name = exc.filename if exc.filename is not None else None
        return f"{name}: {exc.strerror}" if name is not None else exc.strerror
    return str(exc.args[0]) if exc.args else type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line for a terminal: ``file:line:col: message`` (plus field/row when known and not already said)."""
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
    "unavailable_on",
]
