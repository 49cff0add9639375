"""The simulator's error type.

:class:`SimError` carries the same location attributes as the project's other
validation errors (``message, source, line, col, field, row``) so that
``proximity.errors.describe`` renders it as ``file:line:col: message``.
"""

from __future__ import annotations


class SimError(ValueError):
    """A scenario (or simulator input) that cannot be used, with where it is."""

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
        where = ":".join(str(p) for p in (self.source, self.line, self.col) if p is not None)
        return f"{where}: {self.message}" if where else self.message
