"""A dispatcher writing one JSON line per offer to a file (appended, flushed and fsynced), once per offer id.

Several processes (the workers of one host) may append to the same file: each append takes an
exclusive ``flock`` on it, first reads what the others appended since this process last looked,
and skips an offer whose id is already in the file. The ids are kept in a bounded set (the last
``remember`` ids, seeded from the file's tail when the sink opens it), far more than the offers that
can be redelivered within an outbox's claim time. A rotated or truncated file is read again from
its start (ids seen before stay remembered). On a system without ``fcntl`` only this process's own lines are deduplicated.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

from campaigns.errors import DeliveryError
from campaigns.offers import Offer

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

TAIL_BYTES = 16 << 20  # how much of an existing file is read for ids when the sink opens it


class JsonlSink:
    """Appends ``offer.to_dict()`` as one line of ``path`` (once per offer id; see the module docstring);
    ``fsync=False`` trades durability for speed."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True, remember: int = 200_000) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.remember = remember
        self.duplicates = 0  # offers not written again because the file has them
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pos = 0  # bytes of the file already read for ids
        self._ino = -1
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _note(self, offer_id: str) -> None:
        self._seen[offer_id] = None
        if len(self._seen) > self.remember:
            self._seen.popitem(last=False)

    def _catch_up(self, fd: int) -> None:
        """Read the ids appended since ``_pos`` (by any process); the tail only, on first sight."""
        st = os.fstat(fd)
        mid_line = False
        if st.st_ino != self._ino or st.st_size < self._pos:  # first look, rotated or truncated
            first_look = self._ino == -1
            self._ino = st.st_ino
            self._pos = max(0, st.st_size - TAIL_BYTES) if first_look else 0
            mid_line = self._pos > 0
        if st.st_size <= self._pos:
            return
        start = self._pos
        os.lseek(fd, start, os.SEEK_SET)
        data = b""
        while len(data) < st.st_size - start:
            chunk = os.read(fd, st.st_size - start - len(data))
            if not chunk:
                break
            data += chunk
        lines = data.split(b"\n")
        if mid_line and len(lines) == 1:
            return  # not one whole line yet after the cut
        skipped = len(lines[0]) + 1 if mid_line else 0
        complete = lines[1 if mid_line else 0 : -1]  # the tail starts mid-line; the last piece has no newline
        for line in complete:
            try:
                oid = json.loads(line).get("offer_id")
            except (ValueError, AttributeError):
                continue  # not one of our lines: never stops a delivery
            if isinstance(oid, str):
                self._note(oid)
        self._pos = start + skipped + sum(len(x) + 1 for x in complete)

    def write(self, offer: Offer) -> bool:
        """Append the offer's line; ``False`` (nothing written) when the file already has its id."""
        line = (json.dumps(offer.to_dict(), separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as exc:
                raise DeliveryError(f"cannot write {self.path}: {exc}") from exc
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self._catch_up(fd)
                if offer.offer_id in self._seen:
                    self.duplicates += 1
                    return False
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a torn last line (a crash mid-write) stays on its own line
                os.write(fd, line)
                if self.fsync:
                    os.fsync(fd)
                self._pos = os.fstat(fd).st_size
                self._note(offer.offer_id)
                return True
            except OSError as exc:
                raise DeliveryError(f"cannot write {self.path}: {exc}") from exc
            finally:
                os.close(fd)  # releases the lock

    async def deliver(self, offer: Offer) -> int:
        await asyncio.to_thread(self.write, offer)  # the lock, the read and the fsync stay off the event loop
        return 1

    async def aclose(self) -> None:
        return None
