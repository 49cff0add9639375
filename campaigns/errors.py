"""Errors of the campaigns package.

``campaigns`` is usable on its own, so it does not import ``proximity.errors``;
its errors carry the same location attributes (``message, source, line, col,
field, row``) so ``proximity.errors.describe`` renders them as
``file:line:col: message`` like every other error of the project.
"""

from __future__ import annotations

from collections.abc import Iterable


class CampaignError(ValueError):
    """One problem in a campaign file (or in a value handed to the campaigns package)."""

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

    def where(self) -> str:
        return ":".join(str(p) for p in (self.source, self.line, self.col) if p is not None)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


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


class StoreUnavailable(ConnectionError):
    """The shared store (Redis, or a Redis Cluster slot without a master) cannot be reached. The call
    that raised it may or may not have reached Redis; retrying it with the same arguments after
    ``retry_after_s`` is safe (caps and the outbox are idempotent per offer id).

    A :class:`ConnectionError`, so a caller that maps lost connections to "503, retry" needs no special
    case; the message names the dependency and the reason, never the server's address.
    """

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


__all__ = ["CampaignError", "CampaignFileError", "DeliveryError", "StoreUnavailable"]
