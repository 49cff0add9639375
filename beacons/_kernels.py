"""The hot loops of ``beacons``: per-(observer, beacon) RSSI filters over sorted rows.

Every kernel takes rows already sorted by (group, ts) — ``group`` is an int64
group id per row — and returns one float64 per row. numba compiles them once
(cached in the user's cache directory, see ``proxbase/jit.py``); there is no pure-Python twin.
"""

from __future__ import annotations

import numpy as np

from proxbase.jit import njit


@njit
def trimmed_window_mean(group: np.ndarray, ts: np.ndarray, rssi: np.ndarray, window_s: float,
                        trim: float) -> np.ndarray:  # pragma: no cover - compiled
    """For each row: the mean of its group's samples in ``(ts - window_s, ts]`` (rows up to it),
    after dropping ``floor(n * trim)`` samples from each end of the sorted window.

    The window is kept sorted as it slides (binary search, shift): O(window) per row, no allocation."""
    n = len(rssi)
    out = np.empty(n, dtype=np.float64)
    win = np.empty(n, dtype=np.float64)  # the sorted values of the current window
    m = 0
    start = 0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1]:
            start = i
            m = 0
        # slide: drop the samples that left the window
        while ts[start] <= ts[i] - window_s:
            v = rssi[start]
            lo, hi = 0, m
            while lo < hi:
                mid = (lo + hi) // 2
                if win[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            for j in range(lo, m - 1):
                win[j] = win[j + 1]
            m -= 1
            start += 1
        # insert the new sample
        v = rssi[i]
        lo, hi = 0, m
        while lo < hi:
            mid = (lo + hi) // 2
            if win[mid] <= v:
                lo = mid + 1
            else:
                hi = mid
        for j in range(m, lo, -1):
            win[j] = win[j - 1]
        win[lo] = v
        m += 1
        k = int(m * trim)
        total = 0.0
        for j in range(k, m - k):
            total += win[j]
        out[i] = total / (m - 2 * k)
    return out


@njit
def arma(group: np.ndarray, rssi: np.ndarray, seed: np.ndarray, coefficient: float) -> np.ndarray:  # pragma: no cover
    """ARMA smoothing ``x += c * (rssi - x)`` per group; the group's seed (NaN: none) or first sample starts it."""
    n = len(rssi)
    out = np.empty(n, dtype=np.float64)
    x = 0.0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1]:
            s = seed[group[i]]
            x = rssi[i] if np.isnan(s) else s + coefficient * (rssi[i] - s)
        else:
            x = x + coefficient * (rssi[i] - x)
        out[i] = x
    return out
