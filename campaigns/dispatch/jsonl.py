"""A dispatcher writing one JSON line per offer to a file (appended, flushed and fsynced)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from campaigns.errors import DeliveryError
from campaigns.offers import Offer


class JsonlSink:
    """Appends ``offer.to_dict()`` as one line of ``path``; ``fsync=False`` trades durability for speed."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, offer: Offer) -> None:
        line = json.dumps(offer.to_dict(), separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            try:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line)
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
            except OSError as exc:
                raise DeliveryError(f"cannot write {self.path}: {exc}") from exc

    async def deliver(self, offer: Offer) -> int:
        self.write(offer)
        return 1

    async def aclose(self) -> None:
        return None
