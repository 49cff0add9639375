"""The memory store's beacon filter rows per device handle (proximity.track_rows) against the one-table
reference it replaced: the same rows for every handle, in their order, through replaces, drops and
compactions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import proximity.track_rows as T
from beacons.ranging import FilterState
from proximity.track_rows import TrackRows

HANDLES = st.sets(st.integers(0, 40), max_size=8)
# an operation: replace (handles, and for each row of the new state its handle index and pair) or drop handles
OPS = st.lists(st.one_of(
    st.tuples(st.just("replace"), HANDLES, st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3)), max_size=12)),
    st.tuples(st.just("drop"), HANDLES, st.just([]))), max_size=40)


def _rows(state: FilterState, h: int) -> list[tuple[int, float, float]]:
    at = state.dev == h
    return list(zip(state.pair[at].tolist(), state.ts[at].tolist(), state.value[at].tolist(), strict=True))


@settings(max_examples=200, deadline=None)
@given(ops=OPS, small=st.booleans())
def test_rows_per_handle_are_those_of_the_one_table_reference(ops: list, small: bool) -> None:
    rows = TrackRows()
    if small:  # compact after a few rows of garbage, so that compactions happen within an example
        rows_min = T._MIN_GARBAGE
        T._MIN_GARBAGE = 4
    try:
        ref = FilterState()  # the memory store's table before: every device's rows in one FilterState
        stamp = 0.0
        for kind, handles, new_rows in ops:
            hs = np.array(sorted(handles), np.int64)
            if kind == "drop":
                rows.drop(hs)
                ref = ref.take(~np.isin(ref.dev, hs))
            else:
                owners = hs[[i % len(hs) for i, _ in new_rows]] if len(hs) else np.zeros(0, np.int64)
                n = len(owners)
                new = FilterState(owners, np.array([p for _, p in new_rows][:n], np.int64),
                                  stamp + np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64) * 0.5)
                stamp += n
                rows.replace(hs, new)
                ref = FilterState.concat([ref.take(~np.isin(ref.dev, hs)), new])
            assert len(rows) == len(ref)
            every = np.arange(41, dtype=np.int64)
            got = rows.take(every)
            for h in range(41):
                assert _rows(got, h) == _rows(ref, h)
                assert _rows(rows.take(np.array([h])), h) == _rows(ref, h)
            assert rows._used - len(rows) <= max(len(rows), T._MIN_GARBAGE) + len(ref)  # garbage stays bounded
    finally:
        if small:
            T._MIN_GARBAGE = rows_min


def test_a_batch_reads_and_writes_its_devices_rows_not_everyones() -> None:
    """With 200,000 rows kept for 10,000 devices, replacing one device's rows moves only those (the columns
    are not copied), and taking it reads only its rows."""
    rows = TrackRows()
    n = 200_000
    dev = np.repeat(np.arange(10_000, dtype=np.int64), 20)
    rows.replace(np.arange(10_000, dtype=np.int64), FilterState(dev, dev % 7, np.arange(n, dtype=np.float64), np.ones(n)))
    columns = rows._ts
    rows.replace(np.array([5]), FilterState(np.array([5, 5]), np.array([1, 2]), np.array([1e9, 2e9]), np.zeros(2)))
    assert rows._ts is columns  # written in place at the end of the columns
    assert rows.take(np.array([5])).ts.tolist() == [1e9, 2e9]
    assert len(rows) == n - 20 + 2 and rows._used == n + 2
