"""Ranging: RSSI filters, distance models and proximity classes, on arrays.

Filters keep state per *pair* (an int64 code naming one observer x beacon pair;
:class:`~beacons.tracker.ProximityTracker` assigns them) across batches:

- :class:`TrimmedMeanFilter`: the mean of the pair's samples over the last
  ``window_s`` seconds (default 20) after dropping the top and bottom ``trim``
  fraction (default 10 %, ``floor(n * trim)`` samples from each end);
- :class:`ArmaFilter`: ``x += c * (rssi - x)`` with ``c = 0.1``; the first
  sample of a pair seeds it.

The state is a :class:`FilterState`: rows per (device, pair). ``step`` is a pure
function of the state and a batch's samples, and each device's new rows depend
only on that device's old rows and samples, so a device's filter state can live
with its presence state in a shared store and follow it from worker to worker;
``apply`` keeps a state inside the filter (one implicit device), for tools and tests.

Rows are processed in event-time order within a pair. A sample older than the
pair's state is still used: the trimmed mean places it in its own window; the
ARMA filter, which cannot rewind, applies it after the newer ones.

Distance models turn a filtered RSSI and the beacon's power at 1 m into metres:

- :class:`LogDistanceModel`: ``d = 10 ** ((P1m - rssi) / (10 n))``, exponent ``n`` (2 = free space);
- :class:`CurveFitModel`: ``r = rssi / P1m``; ``d = r ** 10`` when ``r < 1``, else
  ``a * r ** b + c`` (defaults are the widely used Nexus 4 fit, 0.89976, 7.7095, 0.111).

Unknown power gives NaN distance and the ``unknown`` proximity class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from beacons._kernels import arma, trimmed_window_mean

#: Proximity class names by code: 0 unknown, 1 immediate, 2 near, 3 far.
PROXIMITY_NAMES = ("unknown", "immediate", "near", "far")
UNKNOWN, IMMEDIATE, NEAR, FAR = 0, 1, 2, 3


class RssiFilter(Protocol):
    state: FilterState

    def step(self, dev: np.ndarray, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray,
             state: FilterState) -> tuple[np.ndarray, FilterState]: ...

    def apply(self, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray) -> np.ndarray: ...

    def pairs(self) -> np.ndarray: ...

    def forget(self, pairs: np.ndarray) -> None: ...


class DistanceModel(Protocol):
    def distance(self, rssi: np.ndarray, power_1m: np.ndarray) -> np.ndarray: ...


def _empty_f() -> np.ndarray:
    return np.empty(0, dtype=np.float64)


def _empty_i() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass
class FilterState:
    """A filter's state as rows (any order; ``step`` returns them sorted by device, pair and time): per device (an int64 code the caller
    gives), per pair, the samples it keeps (trimmed mean: the window's ``(ts, value)`` samples; ARMA: one
    row, the newest time and the filtered value). Each device's rows depend only on that device's
    samples, so the state can be kept per device anywhere (see ``proximity``'s stores)."""

    dev: np.ndarray = field(default_factory=_empty_i)
    pair: np.ndarray = field(default_factory=_empty_i)
    ts: np.ndarray = field(default_factory=_empty_f)
    value: np.ndarray = field(default_factory=_empty_f)

    def __len__(self) -> int:
        return len(self.dev)

    def extended(self, dev: np.ndarray, pair: np.ndarray, ts: np.ndarray,
                 value: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The state's rows followed by new samples: ``(dev, pair, ts, value)`` columns, state rows first."""
        new = FilterState(np.asarray(dev, np.int64), np.asarray(pair, np.int64), np.asarray(ts, np.float64),
                          np.asarray(value, np.float64))
        both = FilterState.concat([self, new])
        return both.dev, both.pair, both.ts, both.value

    def take(self, rows: np.ndarray) -> FilterState:
        return FilterState(self.dev[rows], self.pair[rows], self.ts[rows], self.value[rows])

    @staticmethod
    def concat(parts: list[FilterState]) -> FilterState:
        if not parts:
            return FilterState()
        return FilterState(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("dev", "pair", "ts", "value")))


def _groups(dev: np.ndarray, pair: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by (dev, pair, ts, input order), and the group number of each ordered row."""
    order = np.lexsort((np.arange(len(dev)), ts, pair, dev))
    d, p = dev[order], pair[order]
    new = np.ones(len(order), bool)
    if len(order) > 1:
        new[1:] = (d[1:] != d[:-1]) | (p[1:] != p[:-1])
    return order, np.cumsum(new) - 1


def _device_newest(dev_sorted: np.ndarray, ts_sorted: np.ndarray) -> np.ndarray:
    """Per row (rows sorted by device): its device's newest time."""
    starts = np.flatnonzero(np.r_[True, dev_sorted[1:] != dev_sorted[:-1]])
    newest = np.maximum.reduceat(ts_sorted, starts)
    return np.repeat(newest, np.diff(np.r_[starts, len(dev_sorted)]))


class _InProcess:
    """``apply``/``pairs``/``forget`` over a state kept in the filter, for one implicit device."""

    state: FilterState

    def step(self, dev: np.ndarray, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray,
             state: FilterState) -> tuple[np.ndarray, FilterState]:
        raise NotImplementedError

    @property
    def state_size(self) -> int:
        return len(self.state)

    def apply(self, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray) -> np.ndarray:
        out, self.state = self.step(np.zeros(len(pair), np.int64), pair, ts, rssi, self.state)
        return out

    def pairs(self) -> np.ndarray:
        """The pair codes the filter holds state for."""
        return np.unique(self.state.pair)

    def forget(self, pairs: np.ndarray) -> None:
        self.state = self.state.take(~np.isin(self.state.pair, pairs))


@dataclass
class TrimmedMeanFilter(_InProcess):
    """Trimmed running mean over a time window, per pair; the window's samples are the state.

    A device's pairs not heard for ``idle_s`` (before the device's newest sample) are dropped."""

    window_s: float = 20.0
    trim: float = 0.1
    idle_s: float = 600.0
    state: FilterState = field(default_factory=FilterState, repr=False)

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim}")

    def step(self, dev: np.ndarray, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray,
             state: FilterState) -> tuple[np.ndarray, FilterState]:
        n_old, n = len(state), len(pair)
        if n == 0:
            return _empty_f(), state
        all_dev, all_pair, all_ts, all_rssi = state.extended(dev, pair, ts, rssi)
        order, g_sorted = _groups(all_dev, all_pair, all_ts)
        ts_sorted = all_ts[order]
        rssi_sorted = all_rssi[order]
        values = trimmed_window_mean(g_sorted, ts_sorted, rssi_sorted, float(self.window_s), float(self.trim))
        out = np.empty(n, dtype=np.float64)
        is_new = order >= n_old
        out[order[is_new] - n_old] = values[is_new]
        # keep, per pair, the samples that can still fall in a future window
        last = np.full(int(g_sorted[-1]) + 1, -np.inf)
        np.maximum.at(last, g_sorted, ts_sorted)
        dev_sorted = all_dev[order]
        newest = _device_newest(dev_sorted, ts_sorted)
        keep = (ts_sorted > last[g_sorted] - self.window_s) & (last[g_sorted] >= newest - self.idle_s)
        kept = order[keep]
        return out, FilterState(all_dev[kept], all_pair[kept], all_ts[kept], all_rssi[kept])


@dataclass
class ArmaFilter(_InProcess):
    """ARMA filter per pair: the last value and its time are the state.

    A device's pairs not heard for ``idle_s`` (before the device's newest sample) are dropped."""

    coefficient: float = 0.1
    idle_s: float = 600.0
    state: FilterState = field(default_factory=FilterState, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.coefficient <= 1:
            raise ValueError(f"coefficient must be in (0, 1], got {self.coefficient}")

    def step(self, dev: np.ndarray, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray,
             state: FilterState) -> tuple[np.ndarray, FilterState]:
        n_old, n = len(state), len(pair)
        if n == 0:
            return _empty_f(), state
        all_dev, all_pair, all_ts, all_val = state.extended(dev, pair, ts, rssi)
        # the state row (one per pair) sorts first in its group: it is the seed, whatever its time
        rank_ts = np.where(np.arange(n_old + n) < n_old, -np.inf, all_ts)
        order, g_sorted = _groups(all_dev, all_pair, rank_ts)
        is_old = order < n_old
        n_groups = int(g_sorted[-1]) + 1
        seed = np.full(n_groups, np.nan)
        seed[g_sorted[is_old]] = all_val[order[is_old]]
        new_rows = ~is_old
        g_new = g_sorted[new_rows]
        values = arma(g_new, all_val[order[new_rows]], seed, float(self.coefficient))
        out = np.empty(n, dtype=np.float64)
        out[order[new_rows] - n_old] = values
        # new state: per group its last filtered value (or the seed) and its newest time
        last_ts = np.full(n_groups, -np.inf)
        np.maximum.at(last_ts, g_sorted, all_ts[order])
        value = seed.copy()
        if len(g_new):
            last_row = np.r_[np.flatnonzero(np.diff(g_new)), len(g_new) - 1]
            value[g_new[last_row]] = values[last_row]
        first = np.r_[0, np.flatnonzero(np.diff(g_sorted)) + 1]
        g_dev, g_pair = all_dev[order[first]], all_pair[order[first]]
        newest = _device_newest(g_dev, last_ts)
        alive = last_ts >= newest - self.idle_s
        return out, FilterState(g_dev[alive], g_pair[alive], last_ts[alive], value[alive])


@dataclass(frozen=True)
class LogDistanceModel:
    """Log-distance path loss: ``d = 10 ** ((P1m - rssi) / (10 n))``."""

    exponent: float = 2.0

    def __post_init__(self) -> None:
        if not self.exponent > 0:
            raise ValueError(f"path-loss exponent must be > 0, got {self.exponent}")

    def distance(self, rssi: np.ndarray, power_1m: np.ndarray) -> np.ndarray:
        rssi = np.asarray(rssi, dtype=np.float64)
        power_1m = np.asarray(power_1m, dtype=np.float64)
        out: np.ndarray = np.power(10.0, (power_1m - rssi) / (10.0 * self.exponent))
        return out


@dataclass(frozen=True)
class CurveFitModel:
    """The curve-fitted model: ``r = rssi / P1m``; ``r ** 10`` below 1, else ``a * r ** b + c``."""

    a: float = 0.89976
    b: float = 7.7095
    c: float = 0.111

    def distance(self, rssi: np.ndarray, power_1m: np.ndarray) -> np.ndarray:
        rssi = np.asarray(rssi, dtype=np.float64)
        power_1m = np.asarray(power_1m, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = rssi / power_1m
            out: np.ndarray = np.where(ratio < 1.0, ratio**10, self.a * np.power(np.abs(ratio), self.b) + self.c)
        out[~np.isfinite(ratio) | (power_1m >= 0)] = np.nan
        return out


@dataclass(frozen=True)
class ProximityThresholds:
    """``immediate`` below ``immediate_m``, ``near`` below ``near_m``, else ``far``; NaN is ``unknown``."""

    immediate_m: float = 0.5
    near_m: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.immediate_m <= self.near_m:
            raise ValueError(f"thresholds must satisfy 0 < immediate_m <= near_m, got "
                             f"{self.immediate_m}, {self.near_m}")

    def classify(self, distance_m: np.ndarray) -> np.ndarray:
        d = np.asarray(distance_m, dtype=np.float64)
        out = np.full(d.shape, FAR, dtype=np.int8)
        out[d < self.near_m] = NEAR
        out[d < self.immediate_m] = IMMEDIATE
        out[np.isnan(d)] = UNKNOWN
        return out


def make_filter(kind: str | RssiFilter, *, window_s: float = 20.0, trim: float = 0.1,
                coefficient: float = 0.1) -> RssiFilter:
    if not isinstance(kind, str):
        return kind
    if kind == "trimmed":
        return TrimmedMeanFilter(window_s=window_s, trim=trim)
    if kind == "arma":
        return ArmaFilter(coefficient=coefficient)
    raise ValueError(f"filter must be 'trimmed' or 'arma', not {kind!r}")


def make_model(kind: str | DistanceModel, *, exponent: float = 2.0) -> DistanceModel:
    if not isinstance(kind, str):
        return kind
    if kind in ("log_distance", "log-distance"):
        return LogDistanceModel(exponent)
    if kind in ("curve_fit", "curve-fit"):
        return CurveFitModel()
    raise ValueError(f"model must be 'log_distance' or 'curve_fit', not {kind!r}")


__all__ = [
    "FAR",
    "IMMEDIATE",
    "NEAR",
    "PROXIMITY_NAMES",
    "UNKNOWN",
    "ArmaFilter",
    "CurveFitModel",
    "DistanceModel",
    "FilterState",
    "LogDistanceModel",
    "ProximityThresholds",
    "RssiFilter",
    "TrimmedMeanFilter",
    "make_filter",
    "make_model",
]
