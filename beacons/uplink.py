"""Where the gateway agent delivers scan batches: one small interface, an HTTP adapter and an in-memory twin.

:class:`HttpUplink` POSTs the gzip-compressed body (:mod:`beacons.scans`) to
``<server>/v1/scans`` with ``Authorization: Bearer <key>`` and classifies the answer:

- ``2xx``: delivered (a repeated ``batch_id`` is answered with the stored response, also 2xx); the
  entries the server refused on their own (its ``rejected`` list: a bad field, a time too far ahead)
  are counted in ``SendResult.refused`` and named in ``detail``;
  a ``warnings`` list in the answer (e.g. an unknown ``gateway_id``) is kept in ``SendResult.warnings``;
- ``400``, ``413``, ``422``: rejected, the batch is bad and retrying cannot help;
- ``401``, ``403``: unauthorized, the key is missing, wrong or lacks the ``gateway`` scope: no retry can
  help, the agent stops;
- anything else (``404`` — a misconfiguration an operator can fix —,
  ``408``, ``409`` (the same ``batch_id`` is still being processed by an earlier
  attempt: it may yet fail), ``429``, ``5xx``, connection errors, timeouts):
  retry later, honouring ``Retry-After`` when the server sends it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp

from beacons.scans import encode_scans_body

Outcome = Literal["delivered", "rejected", "retry", "unauthorized"]
REJECTED_STATUSES = frozenset({400, 413, 422})
UNAUTHORIZED_STATUSES = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    status: int | None = None
    retry_after_s: float | None = None
    detail: str = ""
    refused: int = 0  # delivered, but this many entries were refused on their own (bad or future rows)
    warnings: tuple[str, ...] = ()  # delivered, with these warnings of the server (e.g. an unknown gateway)


class Uplink(Protocol):
    async def send(self, body: dict[str, Any]) -> SendResult: ...

    async def close(self) -> None: ...


def _with_answer(result: SendResult, text: str) -> SendResult:
    """A delivered batch's answer with the entries the server refused on their own (``rejected``) and the
    server's ``warnings``."""
    try:
        doc = json.loads(text)
        rejected, warnings = doc.get("rejected") or [], doc.get("warnings") or []
    except (ValueError, AttributeError):
        return result
    said = tuple(str(w) for w in warnings) if isinstance(warnings, list) else ()
    if not isinstance(rejected, list) or not rejected:
        return SendResult("delivered", result.status, warnings=said)
    first = rejected[0] if isinstance(rejected[0], dict) else {}
    detail = f"row {first.get('row')}: {first.get('error')} ({first.get('field')})"
    return SendResult("delivered", result.status, detail=detail, refused=len(rejected), warnings=said)


def classify(status: int, retry_after: str | None = None, detail: str = "") -> SendResult:
    if 200 <= status < 300:
        return SendResult("delivered", status)
    if status in REJECTED_STATUSES:
        return SendResult("rejected", status, detail=detail)
    if status in UNAUTHORIZED_STATUSES:
        return SendResult("unauthorized", status, detail=detail)
    wait = None
    if retry_after is not None:
        try:
            wait = max(0.0, float(retry_after))
        except ValueError:
            wait = None
    return SendResult("retry", status, wait, detail)


class HttpUplink:
    def __init__(self, server: str, key: str | None = None, *, timeout_s: float = 10.0,
                 compress: bool = True) -> None:
        self.url = server.rstrip("/") + "/v1/scans"
        self.key = key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.compress = compress
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def send(self, body: dict[str, Any]) -> SendResult:
        headers = {"Content-Type": "application/json"}
        if self.compress:
            headers["Content-Encoding"] = "gzip"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = encode_scans_body(body, compress=self.compress)
        session = await self._client()
        try:
            async with session.post(self.url, data=data, headers=headers) as resp:
                text = await resp.text(errors="replace")
                result = classify(resp.status, resp.headers.get("Retry-After"), text[:500])
                return _with_answer(result, text) if result.outcome == "delivered" else result
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return SendResult("retry", None, None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class MemoryUplink:
    """The in-memory twin: keeps every delivered body; ``down`` makes it answer "retry later"."""

    down: bool = False
    delivered: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0

    async def send(self, body: dict[str, Any]) -> SendResult:
        self.attempts += 1
        if self.down:
            return SendResult("retry", 503, None, "memory uplink is down")
        if all(b["batch_id"] != body["batch_id"] for b in self.delivered):
            self.delivered.append(body)
        return SendResult("delivered", 200)

    async def close(self) -> None:
        return None


__all__ = ["REJECTED_STATUSES", "UNAUTHORIZED_STATUSES", "HttpUplink", "MemoryUplink", "SendResult", "Uplink", "classify"]
