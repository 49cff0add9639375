"""The memory store's beacon filter rows, kept per device handle.

A beacon batch reads the filter state of its devices and, after the filter ran,
replaces it (:meth:`proximity.store.MemoryStore.apply_tracked`). Kept as one
``FilterState`` of every device, each batch scanned and copied all of it: with
10,000 phones in a store's range (their windows of samples, up to a few hundred
rows each) a batch of 500 sightings cost tens of milliseconds, growing with every
device seen within the presence TTL. :class:`TrackRows` keeps the rows in
append-only columns, each device's rows contiguous, found by its handle's
``(start, length)``: reading and replacing a batch's devices costs in proportion
to their rows. Replaced rows are left behind as garbage, and the columns are
compacted when the garbage outgrows the live rows (each row is copied a bounded
number of times, amortized).

A device's rows keep their order, so the filter sees the same input as before
(its step sorts by device, pair and time, ties in input order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MIN_CAPACITY = 1024
_MIN_GARBAGE = 65536  # rows left behind before a compaction is worth it


class TrackRows:
    """Filter rows (``dev`` is the device's handle) per handle: :meth:`take`, :meth:`replace`, :meth:`drop`."""

    def __init__(self) -> None:
        self._dev = np.zeros(0, np.int64)
        self._pair = np.zeros(0, np.int64)
        self._ts = np.zeros(0, np.float64)
        self._value = np.zeros(0, np.float64)
        self._used = 0  # rows written to the columns (live and garbage)
        self._live = 0
        self._start = np.zeros(0, np.int64)  # handle -> where its rows start
        self._len = np.zeros(0, np.int64)  # handle -> how many rows it has (0: none)

    def __len__(self) -> int:
        return self._live

    def take(self, handles: np.ndarray) -> Any:
        """The rows of ``handles`` (distinct), as a ``beacons.ranging.FilterState``: each handle's rows in their
        order, the handles in the order given."""
        from beacons.ranging import FilterState

        idx = self._rows_of(np.asarray(handles, np.int64))
        return FilterState(self._dev[idx], self._pair[idx], self._ts[idx], self._value[idx])

    def replace(self, handles: np.ndarray, new: Any) -> None:
        """The rows of ``handles`` become the rows of ``new`` (a ``FilterState``) that belong to them; a handle
        without rows in ``new`` has none left. Rows of ``new`` for other handles are added for those too."""
        new_dev = np.asarray(new.dev, np.int64)
        self.drop(np.union1d(np.asarray(handles, np.int64), new_dev))
        n = len(new_dev)
        if not n:
            return
        order = np.argsort(new_dev, kind="stable")  # by handle, each handle's rows in their order
        dev = new_dev[order]
        self._reserve(n)
        at = slice(self._used, self._used + n)
        self._dev[at], self._pair[at] = dev, np.asarray(new.pair, np.int64)[order]
        self._ts[at], self._value[at] = np.asarray(new.ts, np.float64)[order], np.asarray(new.value, np.float64)[order]
        uniq, first, counts = np.unique(dev, return_index=True, return_counts=True)
        self._index_to(int(uniq[-1]))
        self._start[uniq] = self._used + first
        self._len[uniq] = counts
        self._used += n
        self._live += n

    def drop(self, handles: np.ndarray) -> None:
        """Forget the rows of ``handles`` (they stay in the columns as garbage until a compaction)."""
        h = np.unique(np.asarray(handles, np.int64))
        h = h[(h >= 0) & (h < len(self._len))]
        self._live -= int(self._len[h].sum())
        self._len[h] = 0
        if self._used - self._live > max(self._live, _MIN_GARBAGE):
            self._compact()

    def _rows_of(self, handles: np.ndarray) -> np.ndarray:
        """Column indexes of the rows of ``handles``, handle by handle."""
        h = handles[(handles >= 0) & (handles < len(self._len))]
        lengths = self._len[h]
        total = int(lengths.sum())
        if not total:
            return np.zeros(0, np.int64)
        ends = np.cumsum(lengths)
        return np.repeat(self._start[h] - (ends - lengths), lengths) + np.arange(total)

    def _reserve(self, n: int) -> None:
        need = self._used + n
        if need <= len(self._dev):
            return
        cap = max(_MIN_CAPACITY, 2 * need)
        for name in ("_dev", "_pair", "_ts", "_value"):
            old = getattr(self, name)
            grown = np.empty(cap, old.dtype)
            grown[: self._used] = old[: self._used]
            setattr(self, name, grown)

    def _index_to(self, handle: int) -> None:
        if handle < len(self._len):
            return
        size = max(_MIN_CAPACITY, 2 * (handle + 1))
        self._start = np.concatenate([self._start, np.zeros(size - len(self._start), np.int64)])
        self._len = np.concatenate([self._len, np.zeros(size - len(self._len), np.int64)])

    def _compact(self) -> None:
        """Move the live rows to the front, handle by handle, and leave the garbage behind."""
        live = np.flatnonzero(self._len)
        idx = self._rows_of(live)
        for name in ("_dev", "_pair", "_ts", "_value"):
            col = getattr(self, name)
            col[: len(idx)] = col[idx]
        self._start[live] = np.cumsum(self._len[live]) - self._len[live]
        self._used = len(idx)


__all__ = ["TrackRows"]
