"""The beacons package's error types: subclasses of the project's one located error
(:class:`proxbase.ValidationError`: ``message, source, line, col, field, row``), so the CLI and the
HTTP layer render them like every other validation error of the project.

``beacons`` imports nothing else of the project besides the dependency-free :mod:`proxbase`.
"""

from __future__ import annotations

from proxbase.errors import ValidationError


class BeaconError(ValidationError):
    """Input the beacons package cannot accept, with where it is (``source``, ``line``, ``col``,
    ``field`` such as ``"sightings[3].rssi"``, ``row``)."""


class FrameError(BeaconError):
    """Advertising data that cannot be parsed (bad hex, an AD structure running past the data)."""


__all__ = ["BeaconError", "FrameError"]
