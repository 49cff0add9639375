"""The simulator's compiled loops (numba): segment/box clipping, run detection, Gauss-Markov noise."""

from __future__ import annotations

import numpy as np

from proxbase.jit import njit


@njit
def _clip(x0: float, y0: float, x1: float, y1: float,
          bx0: float, by0: float, bx1: float, by1: float) -> tuple[float, float]:
    """Liang-Barsky: the parameter range [u0, u1] of the segment inside the box (u0 > u1: none)."""
    u0, u1 = 0.0, 1.0
    dx, dy = x1 - x0, y1 - y0
    ps = (-dx, dx, -dy, dy)
    qs = (x0 - bx0, bx1 - x0, y0 - by0, by1 - y0)
    for k in range(4):
        p, q = ps[k], qs[k]
        if p == 0.0:
            if q < 0.0:
                return 1.0, 0.0
        else:
            r = q / p
            if p < 0.0:
                if r > u1:
                    return 1.0, 0.0
                if r > u0:
                    u0 = r
            else:
                if r < u0:
                    return 1.0, 0.0
                if r < u1:
                    u1 = r
    return u0, u1


@njit
def segments_near_boxes(sx0: np.ndarray, sy0: np.ndarray, sx1: np.ndarray, sy1: np.ndarray,
                        bx0: np.ndarray, by0: np.ndarray, bx1: np.ndarray, by1: np.ndarray,
                        radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (segment, box) pair where the segment comes within ``radius`` of the box (per axis),
    with the parameter range of the segment that does."""
    n, m = sx0.shape[0], bx0.shape[0]
    count = 0
    for i in range(n):
        for j in range(m):
            u0, u1 = _clip(sx0[i], sy0[i], sx1[i], sy1[i], bx0[j] - radius, by0[j] - radius,
                           bx1[j] + radius, by1[j] + radius)
            if u0 <= u1:
                count += 1
    seg = np.empty(count, np.int64)
    box = np.empty(count, np.int64)
    lo = np.empty(count, np.float64)
    hi = np.empty(count, np.float64)
    k = 0
    for i in range(n):
        for j in range(m):
            u0, u1 = _clip(sx0[i], sy0[i], sx1[i], sy1[i], bx0[j] - radius, by0[j] - radius,
                           bx1[j] + radius, by1[j] + radius)
            if u0 <= u1:
                seg[k] = i
                box[k] = j
                lo[k] = u0
                hi[k] = u1
                k += 1
    return seg, box, lo, hi


@njit
def run_starts(same: np.ndarray, start: np.ndarray, end: np.ndarray, gap: float) -> np.ndarray:
    """Where a new run begins in intervals sorted by group then start: a new group, or a start more
    than ``gap`` after every earlier interval of the group has ended."""
    n = start.shape[0]
    new = np.zeros(n, np.bool_)
    if n == 0:
        return new
    new[0] = True
    reach = end[0]
    for k in range(1, n):
        if not same[k - 1] or start[k] > reach + gap:
            new[k] = True
            reach = end[k]
        elif end[k] > reach:
            reach = end[k]
    return new


@njit
def gauss_markov(device: np.ndarray, t: np.ndarray, tau: float, z: np.ndarray) -> np.ndarray:
    """A unit-variance first-order Gauss-Markov process per device, sampled at times ``t``
    (sorted by device then time): n_k = rho n_{k-1} + sqrt(1 - rho^2) z_k, rho = exp(-dt / tau)."""
    n = t.shape[0]
    out = np.empty(n, np.float64)
    for k in range(n):
        if k == 0 or device[k] != device[k - 1] or tau <= 0.0:
            out[k] = z[k]
        else:
            rho = np.exp(-(t[k] - t[k - 1]) / tau)
            out[k] = rho * out[k - 1] + np.sqrt(1.0 - rho * rho) * z[k]
    return out


@njit
def sample_clock(device: np.ndarray, t0: np.ndarray, t1: np.ndarray, interval: np.ndarray,
                 jitter: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A phone's own clock: per device, samples every ``interval`` of the segment it is in (jittered by
    +-``jitter``/2 of it), carried across segment boundaries; segments with ``interval <= 0`` take no
    samples (the clock restarts, with a random phase, at the next sampled segment). Segments are sorted by
    device then time. Returns (sample times, segment index)."""
    np.random.seed(seed)
    n = t0.shape[0]
    cap = 1024
    for i in range(n):
        if interval[i] > 0:
            cap += int((t1[i] - t0[i]) / interval[i]) + 2
    out_t = np.empty(cap, np.float64)
    out_s = np.empty(cap, np.int64)
    k = 0
    nxt = -1.0
    for i in range(n):
        if i == 0 or device[i] != device[i - 1]:
            nxt = -1.0
        if interval[i] <= 0:
            nxt = -1.0
            continue
        if nxt < 0.0:
            nxt = t0[i] + np.random.random() * interval[i]
        # a faster clock in this segment pulls the next sample in
        if nxt > t0[i] + interval[i]:
            nxt = t0[i] + np.random.random() * interval[i]
        while nxt < t1[i]:
            if k >= cap:
                break
            out_t[k] = nxt
            out_s[k] = i
            k += 1
            nxt += interval[i] * (1.0 + jitter * (np.random.random() - 0.5))
    return out_t[:k], out_s[:k]
