"""The small-batch ordering of evidence (numpy) gives the ``order_ties`` kernel's order exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import proximity._kernels as K
import proximity.presence as P

# few distinct values, so ties (same device, same time, same keys) are common; infinities and -0.0 included
_TIMES = st.sampled_from([0.0, -0.0, 1.0, 1.5, 2.0, 1e12, np.inf, -np.inf])
_KEYS = st.sampled_from([-1.0, 0.0, -0.0, 0.5, 3.0, 1e-300, np.inf])


@st.composite
def _batches(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(0, 40))
    dev = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.int64)
    ts = np.array(draw(st.lists(_TIMES, min_size=n, max_size=n)), dtype=np.float64)
    keys = [np.array(draw(st.lists(_KEYS, min_size=n, max_size=n)), dtype=np.float64) for _ in range(3)]
    return (dev, ts, *keys)


@settings(max_examples=300, deadline=None)
@given(_batches(), st.randoms(use_true_random=False))
def test_small_path_equals_kernel(batch: tuple[np.ndarray, ...], rnd: object) -> None:
    dev, ts, k1, k2, k3 = batch
    order = np.argsort(dev, kind="stable")
    # any order grouped by device will do: shuffle within each device's run
    perm = list(range(len(order)))
    rnd.shuffle(perm)  # type: ignore[attr-defined]
    order = order[np.lexsort((np.array(perm, dtype=np.int64), dev[order]))] if len(order) else order
    want = order.copy()
    K.order_ties(want, dev, ts, k1, k2, k3)
    got = P.order_ties_small(order, dev, ts, k1, k2, k3)
    assert got.tolist() == want.tolist()
    # whatever the order of equal devices given, remaining ties go by input position: the result is the
    # stable sort of the rows (so the duplicate kept does not depend on a store's device codes)
    assert want.tolist() == np.lexsort((np.arange(len(dev)), k3, k2, k1, ts, dev)).tolist()


def test_sort_evidence_takes_the_kernel_above_the_bound_and_with_nan_times() -> None:
    rng = np.random.default_rng(7)
    n = P.SMALL_SORT + 5
    dev = rng.integers(0, 50, n)
    ts = rng.integers(0, 20, n).astype(np.float64)
    k = rng.integers(0, 3, n).astype(np.float64)
    order, dup = P.sort_evidence(dev, ts, k)
    assert np.lexsort((k[order], ts[order], dev[order])).tolist() == list(range(n))
    same = (dev[order][1:] == dev[order][:-1]) & (ts[order][1:] == ts[order][:-1]) & (k[order][1:] == k[order][:-1])
    assert dup[1:].tolist() == same.tolist() and not dup[0]
    small = np.arange(n) < 100
    o_small, _ = P.sort_evidence(dev[small], ts[small], k[small])
    assert np.lexsort((k[small][o_small], ts[small][o_small], dev[small][o_small])).tolist() == list(range(100))
    ts_nan = ts[small].copy()
    ts_nan[3] = np.nan  # NaN times go to the kernel, which keeps its own order for them
    o_nan, _ = P.sort_evidence(dev[small], ts_nan, k[small])
    assert sorted(o_nan.tolist()) == list(range(100))
