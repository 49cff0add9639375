"""The beacons package's own error type.

``beacons`` is a leaf package (it imports nothing else of the project), so it
does not use ``proximity.errors``; :class:`BeaconError` carries the same
location attributes (``message, source, line, col, field, row``) so the CLI and
the HTTP layer render it like every other validation error of the project.
"""

from __future__ import annotations


class BeaconError(ValueError):
    """Input the beacons package cannot accept, with where it is.

    - ``source``: a file path or a name such as ``"<scans body>"``;
    - ``line``, ``col``: 1-based, when the problem has a place in a text file;
    - ``field``: the key or column at fault (``"sightings[3].rssi"``);
    - ``row``: the 0-based index of the record in a batch or data row.
    """

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
        extra = []
        if self.row is not None and self.line is None:
            extra.append(f"row {self.row}")
        if self.field is not None and self.field not in self.message:
            extra.append(f"field {self.field!r}")
        msg = f"{self.message} ({', '.join(extra)})" if extra else self.message
        return f"{where}: {msg}" if where else msg

    def located(
        self,
        *,
        source: str | None = None,
        line: int | None = None,
        col: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ) -> BeaconError:
        """A copy with the location parts that this error does not know yet filled in."""
        return BeaconError(
            self.message,
            source=self.source if self.source is not None else source,
            line=self.line if self.line is not None else line,
            col=self.col if self.col is not None else col,
            field=self.field if self.field is not None else field,
            row=self.row if self.row is not None else row,
        )


class FrameError(BeaconError):
    """Advertising data that cannot be parsed (bad hex, an AD structure running past the data)."""


__all__ = ["BeaconError", "FrameError"]
