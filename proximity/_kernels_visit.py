"""Hot loops of the visit probability (numba): the forward filter's pieces, run inside the transition kernel.

Every visit record carries ``r_lo``, the log-odds that its device is inside its
place (see :mod:`proximity.visit` for the model and :mod:`proximity._kernels` for
the record pool). This module holds what turns evidence into those log-odds and
log-odds into a probability: the prediction step (:func:`relax`), the clamp
(:func:`clamp_lo`), the device-level GPS evidence against the device's fix memory
(:func:`gps_context`) and the calibrated, competition-aware probability
(:func:`visit_probability`). The model's parameters come in one float array
``pm``, indexed by the ``PM_*`` constants below (built by
:meth:`proximity.visit.VisitModel.pm`).
"""

from __future__ import annotations

import numpy as np

from proxbase.jit import njit

# the visit-probability model's parameters, by index in the ``pm`` array (see proximity.visit)
PM_PRIOR, PM_TAU, PM_UNPAIRED, PM_IND_W, PM_IND_LO, PM_IND_HI, PM_BASE_DOWN, PM_BASE_UP = 0, 1, 2, 3, 4, 5, 6, 7
PM_SPD0, PM_SPD1, PM_SPD2, PM_SPD3 = 8, 9, 10, 11  # speed below SPEED_EDGES (m/s), and above
#: the reported speed's bin edges in m/s (still, browsing, walking, faster): ``speed_llr``'s bins
SPEED_EDGES = (0.5, 1.2, 2.5)
PM_ENTER_P, PM_CAL_N, PM_EXIT_P, PM_MAX_SPEED, PM_LO_MIN, PM_LO_MAX = 12, 13, 14, 15, 16, 17
PM_IND_C = 18  # the indoor pattern's centre: the log accuracy above the baseline that says neither
PM_EDGE = 19  # a GPS fix at the edge (point inside, circle crossing the boundary) starts from prior + this
PM_BEACON = 20  # a beacon sighting that could enter a place starts from prior + this (<= 0)
PM_CAL = 21  # the calibration map: PM_CAL_N knots (x, then logit y) from here
PM_CAL_MAX = 16
PM_SIZE = PM_CAL + 2 * PM_CAL_MAX
# per-device fix memory ``d_fix[d]``: time, lon, lat of the last accepted GPS fix; log-accuracy baseline
FIX_TS, FIX_LON, FIX_LAT, FIX_BASE = 0, 1, 2, 3
M_PER_DEG = 111_320.0


@njit(no_cpython_wrapper=True, _nrt=False)
def relax(lo, dt, pm):
    """The filter's prediction step: with no evidence for ``dt`` seconds the log-odds relax toward the prior."""
    if dt <= 0.0:
        return lo
    prior = pm[PM_PRIOR]
    return prior + (lo - prior) * np.exp(-dt / pm[PM_TAU])


@njit(no_cpython_wrapper=True, _nrt=False)
def approach_start(lo, edge, pm):
    """What an evidence that could enter a place adds its ratio to: the record's log-odds ``lo`` (``-inf``
    for a new record), but no less than the prior, or than ``prior + PM_EDGE`` (<= 0) for a GPS fix at the
    ``edge`` of the place (``edge`` 1: its point inside, its accuracy circle crossing the boundary), or than
    ``prior + PM_BEACON`` (<= 0) for a beacon sighting of a store that overlaps no other fence (``edge`` 2: a
    car at the kerb hears it through the window, now and then as near as a shopper does).

    A fix whose accuracy circle lies inside the place, or a beacon of a mall's shop, is a new approach:
    what the record said before (e.g. a walk past its front) no longer counts against it. A fix at the edge
    is not: it is what a phone waiting just outside reports whenever its error drifts inward (a car at the
    kerb, its point inside a third of the time), so the outdoor evidence its record gathered stands, down to
    ``PM_EDGE`` below the prior. A new record at the edge starts there too, so a record kept alive by
    earlier fixes never starts lower than a new one would (more inside evidence never lowers it)."""
    return max(lo, pm[PM_PRIOR] + (pm[PM_EDGE] if edge == 1 else pm[PM_BEACON] if edge == 2 else 0.0))


@njit(no_cpython_wrapper=True, _nrt=False)
def clamp_lo(lo, pm):
    return min(max(lo, pm[PM_LO_MIN]), pm[PM_LO_MAX])


@njit(no_cpython_wrapper=True, _nrt=False)
def overlaps(p, f, p_ovp, p_ovi):
    """Do the interiors of places ``p`` and ``f`` intersect (``p_ovp``/``p_ovi``: each place's overlaps, CSR)?"""
    if p < p_ovp.shape[0] - 1:
        for j in range(p_ovp[p], p_ovp[p + 1]):
            if p_ovi[j] == f:
                return True
    return False


@njit(no_cpython_wrapper=True, _nrt=False)
def visit_probability(d, r, lo, d_head, r_place, r_lo, r_next, p_zone, p_ovp, p_ovi, pm):
    """The calibrated probability that device ``d`` is inside the place of record ``r`` (log-odds ``lo``).

    A store competes with the device's other candidate stores that do not overlap
    it (the shop next door, not the mall around a shop): the log-odds become
    ``lo - log(1 + sum(exp(lo_q)))`` over those, then the calibration map: a
    non-decreasing piecewise-linear function of it in log-odds (knots in ``pm``),
    flat beyond the end knots. A beacon zone has no competitors. The competitors are
    the device's records as they stand: a caller ending several visits at once asks
    for all their probabilities before it removes any of them.
    """
    p = r_place[r]
    rest = 0.0
    if p_zone[p] == 0:
        q = d_head[d]
        while q >= 0:
            f = r_place[q]
            if q != r and p_zone[f] == 0 and not overlaps(p, f, p_ovp, p_ovi):
                rest += np.exp(r_lo[q])
            q = r_next[q]
    x = lo - np.log1p(rest)
    # the calibration's knots: x at pm[PM_CAL + j], logit y at pm[PM_CAL + PM_CAL_MAX + j] (indexed, not
    # sliced: a slice is an array view to type and build, which costs compile time)
    last = PM_CAL + int(pm[PM_CAL_N]) - 1
    if x <= pm[PM_CAL]:
        y = pm[PM_CAL + PM_CAL_MAX]
    elif x >= pm[last]:
        y = pm[last + PM_CAL_MAX]
    else:
        j = PM_CAL + 1
        while pm[j] < x:
            j += 1
        y0, y1 = pm[j - 1 + PM_CAL_MAX], pm[j + PM_CAL_MAX]
        y = y0 + (y1 - y0) * (x - pm[j - 1]) / (pm[j] - pm[j - 1])
    return 1.0 / (1.0 + np.exp(-y))


@njit(_nrt=False)
def probability_of(d, r, lo, d_head, r_place, r_lo, r_next, p_zone, p_ovp, p_ovi, pm):
    """:func:`visit_probability` for Python callers (the kernels call it without numba's CPython wrapper,
    which costs compile time; this one is compiled only when Python asks, e.g. for a snapshot)."""
    return visit_probability(d, r, lo, d_head, r_place, r_lo, r_next, p_zone, p_ovp, p_ovi, pm)


@njit(no_cpython_wrapper=True, _nrt=False)
def gps_context(d, t, lon, lat, acc, spd, d_fix, pm):
    """A GPS fix against the device's fix memory: ``(plausible, llr)``, and the memory updated when plausible.

    Implausible: the fix is farther from the last accepted one than ``PM_MAX_SPEED``
    allows over the time between them, counted as at least 10 s (beyond the fix's
    accuracy and a 100 m slack): a spoofed or broken fix, e.g. 100 km in a second. ``llr`` is the device-level
    evidence of being inside some store: the indoor pattern (log accuracy above the
    device's own outdoor baseline, which follows low readings fast and high ones
    slowly; below ``PM_IND_C`` above it, evidence of being outdoors) and the reported speed.
    """
    last = d_fix[d, FIX_TS]
    if pm[PM_MAX_SPEED] > 0.0 and last > -np.inf:
        dy = (lat - d_fix[d, FIX_LAT]) * M_PER_DEG
        dx = (lon - d_fix[d, FIX_LON]) * M_PER_DEG * np.cos(np.radians(lat))
        dist = np.sqrt(dx * dx + dy * dy)
        if dist - acc - 100.0 > pm[PM_MAX_SPEED] * max(t - last, 10.0):
            return False, 0.0
    la = np.log(max(acc, 1.0))
    base = d_fix[d, FIX_BASE]
    if base != base:  # no baseline yet: the first fix is its own (so a fix before it, no coarser, never
        base = la  # makes a later one read as less indoor than it would read as the first)
    x = min(max(la - base, pm[PM_IND_LO]), pm[PM_IND_HI])
    llr = pm[PM_IND_W] * (x - pm[PM_IND_C])
    rate = pm[PM_BASE_DOWN] if la < base else pm[PM_BASE_UP]
    d_fix[d, FIX_BASE] = base + rate * (la - base)
    if spd == spd:  # known speed
        if spd < SPEED_EDGES[0]:
            llr += pm[PM_SPD0]
        elif spd < SPEED_EDGES[1]:
            llr += pm[PM_SPD1]
        elif spd < SPEED_EDGES[2]:
            llr += pm[PM_SPD2]
        else:
            llr += pm[PM_SPD3]
    d_fix[d, FIX_TS] = t
    d_fix[d, FIX_LON] = lon
    d_fix[d, FIX_LAT] = lat
    return True, llr
