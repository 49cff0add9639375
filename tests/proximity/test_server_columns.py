"""PingBatch.from_json's fast path from JSON rows to columns accepts and refuses exactly what PingBatch.from_rows does,
and from_json keeps each good row's request row."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from proximity.batch import PingBatch, _plain_columns

numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70)
           | st.floats(-200, 200) | st.sampled_from([0, -0.0, 90, 180, 1e11, 1e11 + 1, True, "1.5", None]))
ids = st.text(max_size=6) | st.sampled_from([" ", "dev-1", "x" * 257, 7, None])
row = st.fixed_dictionaries(
    {"device_id": ids, "lon": numbers, "lat": numbers, "accuracy_m": numbers, "ts": numbers},
    optional={"speed": numbers},
) | st.sampled_from([{}, [], "row", 3])


def columns_of(rows: list) -> PingBatch | None:
    return _plain_columns(rows, "<request body>")


def same(a: PingBatch, b: PingBatch) -> None:
    assert len(a) == len(b)
    assert list(a.device_id) == list(b.device_id)
    for name in ("lon", "lat", "accuracy_m", "ts", "speed"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.foreground, b.foreground)
    assert list(a.attrs) == list(b.attrs) and list(a.timezone) == list(b.timezone)
    np.testing.assert_array_equal(a.row, b.row)


@given(st.lists(row, min_size=1, max_size=8))
def test_fast_path_agrees_with_from_rows(rows: list) -> None:
    fast = columns_of(rows)
    slow, errors = PingBatch.from_rows(rows, errors="collect")
    if fast is not None:
        assert errors == [], "the fast path accepted a batch from_rows refuses"
        same(fast, slow)
    batch, rejects = PingBatch.from_json(rows)
    same(batch, slow)
    assert [(e.row, e.field) for e in rejects] == [(e.row, e.field) for e in errors]
    # every request row is either in the batch or rejected, once
    assert sorted([*batch.row.tolist(), *(e.row for e in rejects)]) == list(range(len(rows)))


def test_fast_path_is_taken_for_plain_rows() -> None:
    rows = [{"device_id": f"d{i}", "lon": 2.35, "lat": 48.85, "accuracy_m": 5, "ts": 1.7e9 + i} for i in range(50)]
    fast = columns_of(rows)
    assert fast is not None
    same(fast, PingBatch.from_rows(rows))
    assert columns_of([*rows[:-1], {**rows[-1], "lat": math.nan}]) is None
    assert columns_of([*rows[:-1], {**rows[-1], "ts": "2026-01-01T00:00:00Z"}]) is None
