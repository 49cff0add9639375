"""The webhook dispatcher: signed JSON POSTs with retries, backoff and jitter.

Each offer is POSTed as ``{"idempotency_key": <offer id>, "offer": {...}}``
with headers:

- ``Idempotency-Key``: the offer id (the receiver dedups on it);
- ``X-Proximity-Timestamp``: epoch seconds of the attempt;
- ``X-Proximity-Signature``: ``v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``;
- ``X-Proximity-Attempt``: 1, 2, ...

A 2xx answer delivers the offer. Timeouts, connection errors, 408, 425, 429
and 5xx are retried with exponential backoff and full jitter (``Retry-After``
is honoured when larger) up to ``max_attempts``; any other 4xx is final. Every
attempt is counted in :attr:`WebhookDispatcher.attempts`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable

import aiohttp

from campaigns.errors import DeliveryError
from campaigns.offers import Offer

RETRYABLE_STATUS = frozenset({408, 425, 429})


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify_signature(
    secret: str | bytes, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """For receivers: the signature matches and the timestamp is within ``tolerance_s`` of now."""
    try:
        ts = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookDispatcher:
    """POSTs offers to ``url`` (see the module docstring for the protocol)."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], object] = asyncio.sleep,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self._sleep = sleep
        self._session = session
        self._own_session = session is None
        self.attempts = 0
        self.delivered = 0
        self.failed = 0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): full jitter on an exponential cap."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return self.rng.uniform(cap / 2, cap)

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._own_session = True
        return self._session

    async def deliver(self, offer: Offer) -> int:
        body = json.dumps(
            {"idempotency_key": offer.offer_id, "offer": offer.to_dict()}, separators=(",", ":"), sort_keys=True
        ).encode()
        session = await self._client()
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            ts = f"{time.time():.3f}"
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": offer.offer_id,
                "X-Proximity-Timestamp": ts,
                "X-Proximity-Signature": sign(self.secret, ts, body),
                "X-Proximity-Attempt": str(attempt),
            }
            retry_after = 0.0
            try:
                async with session.post(self.url, data=body, headers=headers, timeout=self.timeout) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        return attempt
                    last = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status not in RETRYABLE_STATUS:
                        self.failed += 1
                        raise DeliveryError(f"{self.url} refused the offer: {last}", retryable=False, attempts=attempt)
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if attempt < self.max_attempts:
                await self._pause(max(self.backoff(attempt), min(retry_after, self.backoff_max_s)))
        self.failed += 1
        raise DeliveryError(f"{self.url}: gave up after {self.max_attempts} attempts ({last})", retryable=True, attempts=self.max_attempts)

    async def _pause(self, seconds: float) -> None:
        result = self._sleep(seconds)
        if asyncio.iscoroutine(result):
            await result

    async def aclose(self) -> None:
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
