"""The simulator's error type: a subclass of the project's one located error
(:class:`proxbase.ValidationError`), rendered as ``file:line:col: message``."""

from __future__ import annotations

from proxbase.errors import ValidationError


class SimError(ValidationError):
    """A scenario (or simulator input) that cannot be used, with where it is."""


__all__ = ["SimError"]
