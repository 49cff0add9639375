"""The device-id table's numpy path (``proximity._ids_direct``) leaves the ``intern_ids`` kernel's table, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proximity._ids_direct as D
import proximity._kernels_ids as K
import proximity.store as store_mod
from proximity.store import DeviceIds

#: ids from a small pool (so batches repeat ids, find known ones and reuse freed handles), some long
#: (rows grow), some with a NUL or non-ASCII characters
ids_st = st.one_of(st.sampled_from([f"d{k}" for k in range(40)]),
                   st.text(alphabet=st.sampled_from("ab\x00é"), min_size=0, max_size=6),
                   st.text(min_size=1, max_size=40))
ops_st = st.lists(st.tuples(st.sampled_from(["intern", "find", "remove"]), st.lists(ids_st, max_size=90)),
                  max_size=10)


def table_state(t: DeviceIds) -> dict[str, np.ndarray]:
    return {"slots": t.slots, "keys": t.keys, "key_hash": t.key_hash, "free": t.free, "meta": t.meta}


def kernel_only(*args: object) -> None:
    return None


@settings(max_examples=150, deadline=None)
@given(ops=ops_st, capacity=st.sampled_from([1, 4, 64]), width=st.sampled_from([1, 3, 16]))
def test_numpy_path_leaves_the_kernels_table(ops: list[tuple[str, list[str]]], capacity: int, width: int) -> None:
    mp = pytest.MonkeyPatch()
    numpy_side, kernel_side = DeviceIds(capacity, width), DeviceIds(capacity, width)
    try:
        for op, batch in ops:
            arr = np.array(batch, dtype=object)
            results = []
            for table, only_kernel in ((numpy_side, False), (kernel_side, True)):
                if only_kernel:
                    mp.setattr(store_mod, "intern_ids_small", kernel_only)
                if op == "remove":
                    handles = table.find(arr)
                    table.remove(np.unique(handles[handles >= 0]))
                    results.append(handles)
                else:
                    results.append(table.intern(arr) if op == "intern" else table.find(arr))
                mp.undo()
            assert np.array_equal(results[0], results[1])
            a, b = table_state(numpy_side), table_state(kernel_side)
            for name in a:
                assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), (op, name)
    finally:
        mp.undo()


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.text(max_size=30), max_size=50))
def test_hash_is_the_kernels(ids: list[str]) -> None:
    buf, starts, lens = DeviceIds._bytes(ids)
    h, _ = D.fnv1a(buf, starts, lens)
    with np.errstate(over="ignore"):  # FNV wraps around, as the kernel's uint64 arithmetic does
        want = [K._hash_bytes.py_func(buf, int(a), int(a + n)) for a, n in zip(starts, lens, strict=True)]
    assert h.tolist() == [int(x) for x in want]


def test_small_batches_take_the_numpy_path_and_large_ones_the_kernel() -> None:
    t = DeviceIds()
    buf, starts, lens = DeviceIds._bytes([f"dev-{k}" for k in range(10)])
    out = np.empty(10, np.int64)
    args = (buf, starts, lens, 0, True, t.slots, t.keys, t.key_hash, t.meta, t.free, out)
    assert D.intern_ids_small(*args) == 10 and out.tolist() == list(range(10))
    many = [f"dev-{k}" for k in range(10 + D.SMALL_NEW + 1)]  # the 10 known and one too many new
    buf, starts, lens = DeviceIds._bytes(many)
    before = {k: v.copy() for k, v in table_state(t).items()}
    out = np.empty(len(many), np.int64)
    # too many new ids: declined, nothing touched
    assert D.intern_ids_small(buf, starts, lens, 0, True, t.slots, t.keys, t.key_hash, t.meta, t.free, out) is None
    assert all(np.array_equal(before[k], v) for k, v in table_state(t).items())
    # the same ids looked up only: no insert, so the numpy path answers (-1 for the unknown ones)
    assert D.intern_ids_small(buf, starts, lens, 0, False, t.slots, t.keys, t.key_hash, t.meta, t.free, out) == len(many)
    assert out.tolist() == list(range(10)) + [-1] * (len(many) - 10)
