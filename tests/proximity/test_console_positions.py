"""``DevicePositions`` gives each device's newest ping of the batches it saw, as a dict merged row by row
would (the later row of equal times; devices in the order first seen; the first ``max_devices``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from proximity.service.console_data import DevicePositions

_ROW = st.tuples(st.sampled_from(["a", "b", "c", "dev-9", "é"]), st.sampled_from([0.0, 1.0, 1.5, 7.0]))


class _Batch(SimpleNamespace):
    def __len__(self) -> int:
        return len(self.device_id)


def _batch(rows: list[tuple[str, float]], start: int) -> _Batch:
    """Rows as ping columns; a row's ``lon`` is its position in the whole sequence (to tell rows apart)."""
    n = len(rows)
    return _Batch(device_id=np.array([d for d, _ in rows], dtype=object),
                  lon=np.arange(start, start + n, dtype=np.float64), lat=np.zeros(n), accuracy_m=np.full(n, 5.0),
                  ts=np.array([t for _, t in rows], dtype=np.float64))


def _oracle(batches: list[list[tuple[str, float]]], limit: int) -> list[list[Any]]:
    newest: dict[str, tuple[float, float]] = {}
    k = 0
    for rows in batches:
        for d, t in rows:
            if d not in newest or t >= newest[d][1]:
                newest[d] = (float(k), t)
            k += 1
    return [[d, lon, 0.0, 5.0, t] for d, (lon, t) in list(newest.items())[:limit]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_ROW, max_size=8), max_size=6), st.integers(1, 6), st.booleans())
def test_take_gives_each_devices_newest_ping_in_first_seen_order(batches: list[list[tuple[str, float]]],
                                                                   limit: int, compact: bool) -> None:
    positions = DevicePositions(lambda: True, max_devices=limit)
    if compact:
        positions.COMPACT_ROWS = 3  # reduce between batches too
    k = 0
    for rows in batches:
        positions.observe(_batch(rows, k))
        k += len(rows)
    assert positions.take() == _oracle(batches, limit)
    assert positions.take() == []


def test_nothing_is_kept_while_nobody_watches() -> None:
    positions = DevicePositions(lambda: False)
    positions.observe(_batch([("a", 0.0)], 0))
    assert positions.take() == []
