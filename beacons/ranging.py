"""Ranging: RSSI filters, distance models and proximity classes, on arrays.

Filters keep state per *pair* (an int64 code naming one observer x beacon pair;
:class:`~beacons.tracker.ProximityTracker` assigns them) across batches:

- :class:`TrimmedMeanFilter`: the mean of the pair's samples over the last
  ``window_s`` seconds (default 20) after dropping the top and bottom ``trim``
  fraction (default 10 %, ``floor(n * trim)`` samples from each end);
- :class:`ArmaFilter`: ``x += c * (rssi - x)`` with ``c = 0.1``; the first
  sample of a pair seeds it.

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
class TrimmedMeanFilter:
    """Trimmed running mean over a time window, per pair; the window's samples are the state."""

    window_s: float = 20.0
    trim: float = 0.1
    idle_s: float = 600.0
    _pair: np.ndarray = field(default_factory=_empty_i, repr=False)
    _ts: np.ndarray = field(default_factory=_empty_f, repr=False)
    _rssi: np.ndarray = field(default_factory=_empty_f, repr=False)

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim}")

    @property
    def state_size(self) -> int:
        return len(self._pair)

    def apply(self, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray) -> np.ndarray:
        n_old, n = len(self._pair), len(pair)
        if n == 0:
            return _empty_f()
        all_pair = np.concatenate([self._pair, np.asarray(pair, dtype=np.int64)])
        all_ts = np.concatenate([self._ts, np.asarray(ts, dtype=np.float64)])
        all_rssi = np.concatenate([self._rssi, np.asarray(rssi, dtype=np.float64)])
        uniq, gid = np.unique(all_pair, return_inverse=True)
        order = np.lexsort((np.arange(len(all_pair)), all_ts, gid))
        g_sorted = gid[order].astype(np.int64)
        ts_sorted = all_ts[order]
        values = trimmed_window_mean(g_sorted, ts_sorted, all_rssi[order], float(self.window_s), float(self.trim))
        out = np.empty(n, dtype=np.float64)
        is_new = order >= n_old
        out[order[is_new] - n_old] = values[is_new]
        # keep, per pair, the samples that can still fall in a future window
        last = np.full(len(uniq), -np.inf)
        np.maximum.at(last, g_sorted, ts_sorted)
        newest = float(ts_sorted.max())
        keep = (ts_sorted > last[g_sorted] - self.window_s) & (last[g_sorted] >= newest - self.idle_s)
        self._pair = uniq[g_sorted[keep]]
        self._ts = ts_sorted[keep]
        self._rssi = all_rssi[order][keep]
        return out

    def pairs(self) -> np.ndarray:
        """The pair codes the filter holds state for."""
        return np.unique(self._pair)

    def forget(self, pairs: np.ndarray) -> None:
        keep = ~np.isin(self._pair, pairs)
        self._pair, self._ts, self._rssi = self._pair[keep], self._ts[keep], self._rssi[keep]


@dataclass
class ArmaFilter:
    """ARMA filter per pair: the last value and its time are the state."""

    coefficient: float = 0.1
    idle_s: float = 600.0
    _pair: np.ndarray = field(default_factory=_empty_i, repr=False)  # sorted, unique
    _value: np.ndarray = field(default_factory=_empty_f, repr=False)
    _ts: np.ndarray = field(default_factory=_empty_f, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.coefficient <= 1:
            raise ValueError(f"coefficient must be in (0, 1], got {self.coefficient}")

    @property
    def state_size(self) -> int:
        return len(self._pair)

    def apply(self, pair: np.ndarray, ts: np.ndarray, rssi: np.ndarray) -> np.ndarray:
        n = len(pair)
        if n == 0:
            return _empty_f()
        pair = np.asarray(pair, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.float64)
        uniq, gid = np.unique(pair, return_inverse=True)
        seed = np.full(len(uniq), np.nan)
        seed_ts = np.full(len(uniq), -np.inf)
        if len(self._pair):
            pos = np.searchsorted(self._pair, uniq).clip(max=len(self._pair) - 1)
            known = self._pair[pos] == uniq
            seed[known] = self._value[pos[known]]
            seed_ts[known] = self._ts[pos[known]]
        order = np.lexsort((np.arange(n), ts, gid))
        g_sorted = gid[order].astype(np.int64)
        values = arma(g_sorted, np.asarray(rssi, dtype=np.float64)[order], seed, float(self.coefficient))
        out = np.empty(n, dtype=np.float64)
        out[order] = values
        # new state: each group's last value (the last row of the group in sorted order)
        last_row = np.r_[np.flatnonzero(np.diff(g_sorted)), n - 1]
        new_value = np.empty(len(uniq))
        new_value[g_sorted[last_row]] = values[last_row]
        new_ts = seed_ts.copy()
        np.maximum.at(new_ts, g_sorted, ts[order])
        merged_pair = np.concatenate([self._pair, uniq])
        merged_value = np.concatenate([self._value, new_value])
        merged_ts = np.concatenate([self._ts, new_ts])
        # later entries (this batch) win: unique on the reversed array keeps their first occurrence
        rev = slice(None, None, -1)
        mp, first = np.unique(merged_pair[rev], return_index=True)
        mv, mt = merged_value[rev][first], merged_ts[rev][first]
        alive = mt >= float(mt.max()) - self.idle_s
        self._pair, self._value, self._ts = mp[alive], mv[alive], mt[alive]
        return out

    def pairs(self) -> np.ndarray:
        return self._pair.copy()

    def forget(self, pairs: np.ndarray) -> None:
        keep = ~np.isin(self._pair, pairs)
        self._pair, self._value, self._ts = self._pair[keep], self._value[keep], self._ts[keep]


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
    "LogDistanceModel",
    "ProximityThresholds",
    "RssiFilter",
    "TrimmedMeanFilter",
    "make_filter",
    "make_model",
]
