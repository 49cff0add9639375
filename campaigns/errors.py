"""Errors of the campaigns package.

Campaign errors subclass the project's one located error (:class:`proxbase.ValidationError`:
``message, source, line, col, field, row``), so they render as ``file:line:col: message`` like
every other error of the project.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxbase.errors import StoreUnavailable, ValidationError, location


class CampaignError(ValidationError):
    """One problem in a campaign file (or in a value handed to the campaigns package), with where it is."""

    def where(self) -> str:
        return location(self)


class CampaignFileError(CampaignError):
    """Every problem found in one or more campaign files (validation collects them all).

    The first problem gives this error its location, so a caller that renders
    only one error still points at a real place; ``problems`` holds them all,
    in file then line order.
    """

    def __init__(self, problems: Iterable[CampaignError]) -> None:
        self.problems: list[CampaignError] = sorted(
            problems, key=lambda p: (p.source or "", p.line or 0, p.col or 0)
        )
        if not self.problems:
            raise ValueError("CampaignFileError needs at least one problem")
        first = self.problems[0]
        more = len(self.problems) - 1
        message = first.message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
        super().__init__(
            message, source=first.source, line=first.line, col=first.col, field=first.field, row=first.row
        )

    def report(self) -> str:
        """All problems, one ``file:line:col: message`` per line."""
        return "\n".join(str(p) for p in self.problems)


class DeliveryError(Exception):
    """A dispatcher could not deliver an offer (the attempt may be retried)."""

    def __init__(self, message: str, *, retryable: bool = True, attempts: int = 1) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts


__all__ = ["CampaignError", "CampaignFileError", "DeliveryError", "StoreUnavailable"]
