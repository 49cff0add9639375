"""Ranging: filters against plain-Python oracles, batch splits, distance models and classes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import ArmaFilter, CurveFitModel, LogDistanceModel, ProximityThresholds, TrimmedMeanFilter
from beacons.ranging import FAR, IMMEDIATE, NEAR, UNKNOWN


def trimmed_oracle(pair, ts, rssi, window, trim):
    """Per row: trimmed mean of the same pair's samples in (ts - window, ts], in (ts, input order) order."""
    order = sorted(range(len(ts)), key=lambda i: (pair[i], ts[i], i))
    out = [0.0] * len(ts)
    for pos, i in enumerate(order):
        sample = [rssi[j] for j in order[: pos + 1] if pair[j] == pair[i] and ts[j] > ts[i] - window]
        sample.sort()
        k = int(len(sample) * trim)
        kept = sample[k: len(sample) - k]
        out[i] = sum(kept) / len(kept)
    return out


def arma_oracle(pair, ts, rssi, c):
    order = sorted(range(len(ts)), key=lambda i: (pair[i], ts[i], i))
    state: dict[int, float] = {}
    out = [0.0] * len(ts)
    for i in order:
        x = state.get(pair[i])
        x = rssi[i] if x is None else x + c * (rssi[i] - x)
        state[pair[i]] = x
        out[i] = x
    return out


stream = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 120).map(float), st.integers(-100, -30).map(float)),
    min_size=1, max_size=80,
).map(lambda rows: sorted(rows, key=lambda r: r[1]))  # event-time order across the stream


@given(stream, st.integers(1, 5))
@settings(max_examples=150, deadline=None)
def test_trimmed_mean_matches_oracle_across_batch_splits(rows, parts) -> None:
    pair = np.array([r[0] for r in rows], dtype=np.int64)
    ts = np.array([r[1] for r in rows])
    rssi = np.array([r[2] for r in rows])
    expected = trimmed_oracle(list(pair), list(ts), list(rssi), 20.0, 0.1)
    f = TrimmedMeanFilter(window_s=20.0, trim=0.1)
    cuts = np.linspace(0, len(rows), parts + 1).astype(int)
    got = np.concatenate([f.apply(pair[a:b], ts[a:b], rssi[a:b]) for a, b in itertools.pairwise(cuts)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@given(stream, st.integers(1, 5))
@settings(max_examples=150, deadline=None)
def test_arma_matches_oracle_across_batch_splits(rows, parts) -> None:
    pair = np.array([r[0] for r in rows], dtype=np.int64)
    ts = np.array([r[1] for r in rows])
    rssi = np.array([r[2] for r in rows])
    expected = arma_oracle(list(pair), list(ts), list(rssi), 0.1)
    f = ArmaFilter(coefficient=0.1)
    cuts = np.linspace(0, len(rows), parts + 1).astype(int)
    got = np.concatenate([f.apply(pair[a:b], ts[a:b], rssi[a:b]) for a, b in itertools.pairwise(cuts)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_trimmed_mean_drops_top_and_bottom_ten_percent() -> None:
    f = TrimmedMeanFilter(window_s=20.0, trim=0.1)
    rssi = np.array([-60.0] * 8 + [-20.0, -100.0])  # 10 samples: one outlier each side is dropped
    out = f.apply(np.zeros(10, dtype=np.int64), np.arange(10.0), rssi)
    assert out[-1] == -60.0
    assert out[0] == -60.0  # a single sample is its own mean


def test_trimmed_mean_window_forgets_old_samples_and_state_stays_bounded() -> None:
    f = TrimmedMeanFilter(window_s=20.0)
    f.apply(np.zeros(5, dtype=np.int64), np.arange(5.0), np.full(5, -90.0))
    out = f.apply(np.zeros(1, dtype=np.int64), np.array([100.0]), np.array([-50.0]))
    assert out[0] == -50.0
    assert f.state_size == 1


def test_arma_first_sample_seeds_and_coefficient_applies() -> None:
    f = ArmaFilter(coefficient=0.1)
    out = f.apply(np.array([7, 7, 7]), np.array([0.0, 1.0, 2.0]), np.array([-60.0, -70.0, -70.0]))
    assert out[0] == -60.0
    assert out[1] == pytest.approx(-61.0)
    assert out[2] == pytest.approx(-61.9)
    # state carries over to the next batch
    assert f.apply(np.array([7]), np.array([3.0]), np.array([-70.0]))[0] == pytest.approx(-62.71)


def test_filters_keep_pairs_apart() -> None:
    f = ArmaFilter()
    out = f.apply(np.array([1, 2, 1, 2]), np.array([0.0, 0.0, 1.0, 1.0]), np.array([-50.0, -90.0, -50.0, -90.0]))
    np.testing.assert_allclose(out, [-50, -90, -50, -90])


def test_log_distance_model() -> None:
    m = LogDistanceModel(exponent=2.0)
    d = m.distance(np.array([-59.0, -79.0, -39.0, -60.0]), np.array([-59.0, -59.0, -59.0, np.nan]))
    np.testing.assert_allclose(d[:3], [1.0, 10.0, 0.1])
    assert math.isnan(d[3])
    assert LogDistanceModel(exponent=3.0).distance(np.array([-89.0]), np.array([-59.0]))[0] == pytest.approx(10.0)


def test_curve_fit_model() -> None:
    m = CurveFitModel()
    d = m.distance(np.array([-59.0, -30.0, -80.0, -70.0]), np.array([-59.0, -59.0, -59.0, np.nan]))
    assert d[0] == pytest.approx(0.89976 + 0.111)
    assert d[1] == pytest.approx((30 / 59) ** 10)
    assert d[2] == pytest.approx(0.89976 * (80 / 59) ** 7.7095 + 0.111)
    assert math.isnan(d[3])
    # monotone: weaker signal, farther
    rssi = np.linspace(-40, -100, 61)
    assert np.all(np.diff(m.distance(rssi, np.full(61, -59.0))) > 0)


def test_curve_fit_coefficients_are_configurable() -> None:
    d = CurveFitModel(a=2.0, b=3.0, c=0.5).distance(np.array([-59.0, -70.0, -40.0]), np.full(3, -59.0))
    np.testing.assert_allclose(d, [2.5, 2.0 * (70 / 59) ** 3 + 0.5, (40 / 59) ** 10])


def test_proximity_classes_and_configurable_thresholds() -> None:
    d = np.array([0.1, 0.5, 2.9, 3.0, 50.0, np.nan])
    assert ProximityThresholds().classify(d).tolist() == [IMMEDIATE, NEAR, NEAR, FAR, FAR, UNKNOWN]
    assert ProximityThresholds(1.0, 5.0).classify(d).tolist() == [IMMEDIATE, IMMEDIATE, NEAR, NEAR, FAR, UNKNOWN]
    with pytest.raises(ValueError):
        ProximityThresholds(3.0, 1.0)
