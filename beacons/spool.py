"""A bounded, ordered on-disk queue of scan batches: what the gateway has not delivered yet.

One file per batch, ``<sequence>.json``, written to a temporary name, fsynced
and renamed, so a crash leaves either the whole batch or nothing. Order is the
sequence number; a restarted agent continues after the highest one found, so
batches of the previous run go first. Bounded by a number of batches and a
number of bytes: when full, the *oldest* batches are dropped (the freshest
presence data is the most useful) and the caller is told how many sightings
were lost, to count and log them. The batch being sent (:attr:`Spool.in_flight`)
is never the one dropped: it may be delivered, and must not then be counted
lost too. ``directory=None`` keeps the queue in memory (the embedded twin;
nothing survives a restart). A file that cannot be read back (damaged on disk,
or not written by the spool) is renamed ``<sequence>.bad``, kept out of the
queue, and named in a warning in the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("beacons.spool")


@dataclass(frozen=True, slots=True)
class Dropped:
    batches: int = 0
    sightings: int = 0


def _sightings_in(body: Any) -> int:
    if not isinstance(body, dict) or not isinstance(body.get("sightings"), list):
        raise ValueError("not a scans body (an object with a sightings list)")
    return len(body["sightings"])


class Spool:
    def __init__(self, directory: str | Path | None, *, max_batches: int = 10_000,
                 max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_batches < 1 or max_bytes < 1:
            raise ValueError("spool bounds must be positive")
        self.directory = None if directory is None else Path(directory)
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._index: OrderedDict[int, tuple[int, int]] = OrderedDict()  # seq -> (bytes, sightings)
        self._memory: dict[int, bytes] = {}
        self._bytes = 0
        self._next = 0
        #: the sequence number of the batch being sent, which overflow never drops
        self.in_flight: int | None = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for tmp in self.directory.glob("*.tmp"):
                tmp.unlink(missing_ok=True)
            ours = [p for p in self.directory.glob("*.json") if p.stem.isascii() and p.stem.isdigit()]
            for path in sorted(ours, key=lambda p: int(p.stem)):
                seq = int(path.stem)
                data = path.read_bytes()
                try:
                    n = _sightings_in(json.loads(data))
                except ValueError:
                    bad = path.with_suffix(".bad")
                    os.replace(path, bad)
                    log.warning("spool: %s is not a readable batch; set aside as %s", path, bad.name)
                    self._next = seq + 1
                    continue
                self._index[seq] = (len(data), n)
                self._bytes += len(data)
                self._next = seq + 1

    def __len__(self) -> int:
        return len(self._index)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def waiting(self) -> list[tuple[int, int]]:
        """``(seq, sightings)`` of every queued batch, oldest first."""
        return [(seq, n) for seq, (_, n) in self._index.items()]

    @property
    def last_seq(self) -> int | None:
        return next(reversed(self._index)) if self._index else None

    @property
    def pending_sightings(self) -> int:
        return sum(n for _, n in self._index.values())

    def _path(self, seq: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{seq:016d}.json"

    def append(self, body: dict[str, Any]) -> Dropped:
        """Queue a batch at the end; returns what had to be dropped (oldest first) to stay in bounds."""
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
        seq = self._next
        self._next += 1
        if self.directory is None:
            self._memory[seq] = data
        else:
            path = self._path(seq)
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        self._index[seq] = (len(data), len(body.get("sightings", ())))
        self._bytes += len(data)
        batches = sightings = 0
        if len(self._index) > self.max_batches or self._bytes > self.max_bytes:
            # oldest first, never the batch just queued nor the one being sent
            for old in [q for q in self._index if q not in (seq, self.in_flight)]:
                if len(self._index) <= self.max_batches and self._bytes <= self.max_bytes:
                    break
                sightings += self._index[old][1]
                batches += 1
                self.remove(old)
        return Dropped(batches, sightings)

    def peek(self) -> tuple[int, dict[str, Any]] | None:
        """The oldest batch ``(seq, body)``, or ``None`` when empty."""
        while self._index:
            seq = next(iter(self._index))
            try:
                data = self._memory[seq] if self.directory is None else self._path(seq).read_bytes()
                body = json.loads(data)
                _sightings_in(body)
                return seq, body
            except (OSError, ValueError) as exc:
                # vanished or unreadable: set it aside (and say so) rather than block the queue
                log.warning("spool: batch %d cannot be read back (%s); skipped", seq, exc)
                if self.directory is not None:
                    with contextlib.suppress(OSError):
                        os.replace(self._path(seq), self._path(seq).with_suffix(".bad"))
                self.remove(seq)
        return None

    def remove(self, seq: int) -> None:
        size, _ = self._index.pop(seq, (0, 0))
        self._bytes -= size
        if self.directory is None:
            self._memory.pop(seq, None)
        else:
            self._path(seq).unlink(missing_ok=True)


__all__ = ["Dropped", "Spool"]
