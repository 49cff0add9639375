"""Progress of a long command on stderr, on a terminal and in a log alike.

On a terminal a bar is redrawn in place. Anywhere else (``proximity sim run 2>&1 | tee log``,
a CI log, a service manager's journal) a carriage return draws nothing useful, so a plain
line is written every ``every_s`` seconds instead, and one at the end when any was written:
a short run stays quiet, a long one shows it is moving.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: seconds between two progress lines when the output is not a terminal
EVERY_S = 5.0


def is_terminal(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class Progress:
    """``update(done, note)`` as work gets done (out of ``total``); ``close(note)`` at the end."""

    def __init__(self, label: str, total: float, out: TextIO | None = None, *, every_s: float | None = None,
                 bar: bool | None = None) -> None:
        self.label = label
        self.total = max(float(total), 1e-9)
        self.out = sys.stderr if out is None else out
        self.bar = is_terminal(self.out) if bar is None else bar
        self.every_s = EVERY_S if every_s is None else every_s
        self.start = self.last_line = time.monotonic()
        self.last_pct = -1
        self.lines = 0
        self.drawn = False

    def update(self, done: float, note: str = "") -> None:
        pct = int(100 * min(max(done, 0.0) / self.total, 1.0))
        if self.bar:
            if pct != self.last_pct:
                self.last_pct = pct
                bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
                self.out.write(f"\r{self.label} [{bar}] {pct:3d}% {note}")
                self.out.flush()
                self.drawn = True
            return
        now = time.monotonic()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            self.lines += 1
            self._line(f"{pct}%" + (f", {note}" if note else "") + f" ({now - self.start:.0f} s)")

    def close(self, note: str = "") -> None:
        if self.bar:
            if self.drawn:
                self.out.write("\n")
                self.out.flush()
        elif self.lines:
            self._line("done" + (f", {note}" if note else "") + f" ({time.monotonic() - self.start:.0f} s)")

    def _line(self, text: str) -> None:
        self.out.write(f"{self.label.strip()}: {text}\n")
        self.out.flush()
