"""API keys with scopes (the rate limits they are charged: :mod:`proximity.service.ratelimit`).

Keys are never stored: a key file (``--keys FILE``) or the ``PROXIMITY_API_KEYS``
environment variable holds one line per key::

    # name:scope[,scope...]:sha256-of-the-key (64 hex digits)
    store-gw-17:gateway:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    ios-app:sdk:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
    ops:admin,sdk,gateway:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9

In the environment variable, lines may also be separated by ``;``. Scopes are
``sdk`` (``POST /v1/pings``, and phones' sightings on ``POST /v1/scans``),
``gateway`` (``POST /v1/scans``), ``admin`` (everything else under ``/v1``) and ``read`` (what ``admin`` may read, never
change: the ``GET`` admin routes, the live feed and the console's data; an
``admin`` key has it too). ``proximity serve --new-key NAME:SCOPES``
prints a fresh key and the line to add.

A presented key is hashed with SHA-256 and compared against every stored hash
with :func:`hmac.compare_digest` (no early exit), so neither the comparison nor
the loop tells an attacker how close a guess was.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from proximity.errors import ValidationError
from proximity.service.ratelimit import RateLimiter, RedisRateLimiter, retry_after_header

SCOPES: tuple[str, ...] = ("admin", "gateway", "read", "sdk")
ENV_VAR = "PROXIMITY_API_KEYS"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


#: The live feed's WebSocket subprotocol; a browser, which cannot set headers on a WebSocket, offers it
#: together with ``proximity.key.<base64url of the key>`` (the server answers with this one only).
FEED_SUBPROTOCOL = "proximity.v1"
KEY_SUBPROTOCOL = "proximity.key."


def key_of_subprotocol(header: str) -> str | None:
    """The key carried by a ``Sec-WebSocket-Protocol`` list (``proximity.key.<base64url>``), or ``None``."""
    for token in header.split(","):
        token = token.strip()
        if token.startswith(KEY_SUBPROTOCOL):
            data = token[len(KEY_SUBPROTOCOL):]
            try:
                return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("utf-8") or None
            except (binascii.Error, ValueError):
                return None
    return None


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a key: what key files hold."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new random key (256 bits, URL-safe)."""
    return "px_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key: its name (for logs, metrics and rate limits), scopes and SHA-256 digest."""

    name: str
    scopes: frozenset[str]
    digest: bytes

    def allows(self, scope: str) -> bool:
        """``read`` is part of ``admin``: an admin key may read what a read-only key may."""
        return scope in self.scopes or (scope == "read" and "admin" in self.scopes)

    def line(self) -> str:
        return f"{self.name}:{','.join(sorted(self.scopes))}:{self.digest.hex()}"


class KeyRing:
    """The keys a server accepts."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._keys: tuple[ApiKey, ...] = tuple(keys)
        names = [k.name for k in self._keys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValidationError(f"duplicate key names: {', '.join(dupes)}", field="name")

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[ApiKey]:
        return iter(self._keys)

    @classmethod
    def parse(cls, text: str, *, source: str = "<keys>", separators: str = "\n") -> KeyRing:
        """Parse key lines; errors name ``source:line:col``."""
        lines = re.split("[" + re.escape(separators) + "]", text)
        keys: list[ApiKey] = []
        seen: dict[str, int] = {}
        for lineno, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            indent = len(raw) - len(raw.lstrip())
            parts = line.split(":")
            if len(parts) != 3:
                raise ValidationError(
                    f"expected name:scope[,scope]:sha256hex, got {len(parts)} field(s)",
                    source=source, line=lineno, col=indent + 1,
                )
            name, scopes_text, digest = (p.strip() for p in parts)
            if not _NAME.match(name):
                raise ValidationError(
                    f"key name {name!r} must be 1-64 letters, digits or _.@-",
                    source=source, line=lineno, col=indent + 1, field="name",
                )
            if name in seen:
                raise ValidationError(
                    f"duplicate key name {name!r} (first on line {seen[name]})",
                    source=source, line=lineno, col=indent + 1, field="name",
                )
            seen[name] = lineno
            col = indent + len(parts[0]) + 2
            scopes = [s.strip() for s in scopes_text.split(",")]
            for scope in scopes:
                if scope not in SCOPES:
                    raise ValidationError(
                        f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}",
                        source=source, line=lineno, col=col, field="scope",
                    )
            col = indent + len(parts[0]) + len(parts[1]) + 3
            if not _HEX64.match(digest):
                raise ValidationError(
                    "the key's hash must be 64 hex digits (sha256 of the key; `proximity serve --new-key` makes one)",
                    source=source, line=lineno, col=col, field="sha256",
                )
            keys.append(ApiKey(name, frozenset(scopes), bytes.fromhex(digest)))
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        p = Path(path)
        return cls.parse(p.read_text(encoding="utf-8"), source=str(p))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing:
        env = os.environ if environ is None else environ
        return cls.parse(env.get(ENV_VAR, ""), source=f"${ENV_VAR}", separators="\n;")

    def merged(self, other: KeyRing) -> KeyRing:
        return KeyRing([*self._keys, *other._keys])

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key whose hash matches ``presented``, or ``None``; constant time in the key's content."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: ApiKey | None = None
        for key in self._keys:  # no early exit: every stored hash is compared
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


__all__ = [
    "ENV_VAR",
    "FEED_SUBPROTOCOL",
    "KEY_SUBPROTOCOL",
    "SCOPES",
    "ApiKey",
    "KeyRing",
    "RateLimiter",
    "RedisRateLimiter",
    "generate_key",
    "hash_key",
    "key_of_subprotocol",
    "retry_after_header",
]
