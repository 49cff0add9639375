"""Hot loops of presence: the transition function over arrays (numba).

The state of every device is a *device table* (``d_last``: newest applied
evidence time, ``d_head``: first record of its visit list) plus a pool of *visit
records*, one per (device, place) the device is currently inside: ``r_place``,
``r_dev``, ``r_enter`` (visit start), ``r_gps`` / ``r_bcn`` (last inside evidence
from GPS / beacons, ``-inf`` when none or when GPS said outside), ``r_mask``
(dwell thresholds already fired, bit j for threshold j of the place),
``r_src`` (1 GPS, 2 beacon, 3 both during this visit), ``r_conf``, ``r_miss``
(unpaired GPS pings in a row, for ``gps_exit_pings``), ``r_tent`` (1 while a
visit waits for its confirming ping or for its probability to reach the enter
threshold: no event has been emitted for it yet), ``r_lo`` (the log-odds that the
device is inside the place: the visit probability's forward filter) and ``r_next``
(the device's next record; also links the free list, whose head and length live in
``meta``). A device outside every place has no record at all, which is what keeps
the memory store small. ``d_fix`` is the device's 64-byte row: its last accepted
GPS fix (time, lon, lat), its log-accuracy baseline (the indoor pattern) and, in
column ``DEV_LAST``, ``d_last`` (the kernels take that column of the rows themselves),
so one cache line holds what a ping reads of its device. The visit probability's
own pieces (the filter's steps, the competition between places, the calibration)
live in :mod:`proximity._kernels_visit`.

The same function is run by both stores: the memory store passes its whole
table, the Redis store a table of the devices it loaded for one batch.
Evidence must be sorted by (device, time); one call processes it from
``start`` and returns where it stopped: ``n`` when done, or an earlier index
when the record pool or the event buffers ran short (the caller grows them and
calls again from there; no evidence is ever half-applied).

The order of a device's records in its list is the store's business (the memory
store puts new ones first, the Redis store saves them in its record pool's order):
no result may depend on it. Wherever one step ends several visits of a device at
once, every one of them is decided, with its probability, from the records as they
stood before any was removed.

What keeps the first compile short (the kernels are compiled on a user's first run): no kernel here
allocates an array, so all are compiled without numba's reference counting (``_nrt=False``: no
incref/decref around every array passed to a helper); the helpers only other kernels call have no
CPython wrapper (``no_cpython_wrapper``); every call site passes a helper the same argument types
(``_emit``'s ``src`` is always ``uint8``), so each is compiled once; and applying evidence and letting
time pass are one kernel (:func:`transition`), so what they share is compiled into one kernel, not two.
"""

from __future__ import annotations

import numpy as np

from proxbase.jit import njit
from proximity._kernels_visit import (
    FIX_BASE,
    PM_ENTER_P,
    PM_EXIT_P,
    PM_PRIOR,
    PM_UNPAIRED,
    approach_start,
    clamp_lo,
    gps_context,
    overlaps,
    relax,
    visit_probability,
)

# event kinds, sources and causes as small codes (see proximity.presence for the names)
ENTER, DWELL, EXIT = 0, 1, 2
SRC_GPS, SRC_BEACON = 1, 2
CAUSE_PING, CAUSE_SIGHTING, CAUSE_DEBOUNCE, CAUSE_FORGET = 0, 1, 2, 3
LEVEL_AMBIGUOUS, LEVEL_KEEP, LEVEL_ENTER = 0, 1, 2
STATUS_APPLIED, STATUS_LATE, STATUS_IMPLAUSIBLE = 0, 1, 2
# the state's per-device row: the fix (``proximity._kernels_visit.FIX_*``), the newest applied time, padding
DEV_LAST, DEV_WIDTH = FIX_BASE + 1, 8  # 8 float64: 64 bytes

NEG_INF = -np.inf


@njit(no_cpython_wrapper=True, _nrt=False)
def _emit(o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
          kind, dev, place, ts, src, conf, dwell, cause, ev, prob):
    k = n_out[0]
    o_prob[k] = prob
    o_kind[k] = kind
    o_dev[k] = dev
    o_place[k] = place
    o_ts[k] = ts
    o_src[k] = src
    o_conf[k] = conf
    o_dwell[k] = dwell
    o_cause[k] = cause
    o_ev[k] = ev
    n_out[0] = k + 1


@njit(no_cpython_wrapper=True, _nrt=False)
def _due(r, r_gps, r_bcn, gps_deb, bcn_deb):
    return max(r_gps[r] + gps_deb, r_bcn[r] + bcn_deb)


@njit(no_cpython_wrapper=True, _nrt=False)
def _unlink(d, r, prev, nxt, d_head, r_next, r_dev, meta):
    """Take record ``r`` (after ``prev``, before ``nxt``) out of device ``d``'s list, onto the free list."""
    if prev < 0:
        d_head[d] = nxt
    else:
        r_next[prev] = nxt
    r_dev[r] = -1
    r_next[r] = meta[0]
    meta[0] = r
    meta[1] += 1


@njit(no_cpython_wrapper=True, _nrt=False)
def _start_kind(s, conf, p, p_zone, p_ovp):
    """What an evidence that could enter place ``p`` starts from (:func:`proximity._kernels_visit.approach_start`):
    1 for a GPS fix at the edge (``conf`` < 3), 2 for a beacon sighting of a store that overlaps no other fence
    (a phone outside can hear it through the window; a mall's shop, or the mall, only from inside), else 0."""
    if s == SRC_GPS:
        return 1 if conf < 3 else 0
    if p_zone[p] == 0 and not (p < p_ovp.shape[0] - 1 and p_ovp[p + 1] > p_ovp[p]):
        return 2
    return 0


@njit(no_cpython_wrapper=True, _nrt=False)
def _named(p, a, b, obs_place, p_zone):
    """Does GPS evidence ``a:b`` say nothing against place ``p`` (it names ``p``, or ``p`` is a beacon zone)?"""
    if p_zone[p] != 0:
        return True
    k = a
    while k < b and obs_place[k] != p:
        k += 1
    return k < b


@njit(no_cpython_wrapper=True, _nrt=False)
def _held_by_other_store(d, r, p, a, b, obs_place, obs_level, d_head, r_place, r_tent, r_next, p_zone, p_ovp, p_ovi):
    """Does evidence ``a:b`` also keep a confirmed visit of device ``d`` to a fence not overlapping ``p``?"""
    q = d_head[d]
    while q >= 0:
        f = r_place[q]
        if q != r and r_tent[q] == 0 and p_zone[f] == 0 and not overlaps(p, f, p_ovp, p_ovi):
            for k in range(a, b):
                if obs_place[k] == f and obs_level[k] >= LEVEL_KEEP:
                    return True
        q = r_next[q]
    return False


@njit(no_cpython_wrapper=True, _nrt=False)
def _end_due(
    d, now, forget, e, cause,
    d_last, d_head, r_place, r_dev, r_enter, r_gps, r_bcn, r_src, r_conf, r_tent, r_next, meta, gps_deb, bcn_deb,
    o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
    r_lo, p_zone, p_ovp, p_ovi, pm,
):
    """End the visits of device ``d`` whose inside evidence ran out before ``now`` (all of them with ``forget``).

    A confirmed visit exits at its debounce time (with ``forget``: at the device's last
    evidence, or its enter if later), with ``cause`` and evidence index ``e``; a visit
    never confirmed ends without a word. All the exits are computed from the device's
    records as they stand, before any is removed: a visit ending at the same step as a
    competing one still counts it, whichever order the store keeps the records in.
    """
    last = d_last[d]
    r = d_head[d]
    while r >= 0:
        if r_tent[r] == 0:
            ts = _due(r, r_gps, r_bcn, gps_deb, bcn_deb)
            if forget or ts < now:
                if forget:
                    ts = max(last, r_enter[r])
                prob = visit_probability(d, r, relax(r_lo[r], ts - last, pm), d_head, r_place, r_lo, r_next,
                                         p_zone, p_ovp, p_ovi, pm)
                _emit(o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
                      EXIT, d, r_place[r], ts, r_src[r], r_conf[r], ts - r_enter[r], cause, e, prob)
        r = r_next[r]
    prev = -1
    r = d_head[d]
    while r >= 0:
        nxt = r_next[r]
        if forget or _due(r, r_gps, r_bcn, gps_deb, bcn_deb) < now:
            _unlink(d, r, prev, nxt, d_head, r_next, r_dev, meta)
        else:
            prev = r
        r = nxt


@njit(no_cpython_wrapper=True, _nrt=False)
def _gps_exits(
    d, t, e, a, b, obs_place, exit_pings, bcn_deb,
    d_head, r_place, r_dev, r_enter, r_gps, r_bcn, r_src, r_conf, r_miss, r_tent, r_next, meta,
    o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
    r_lo, p_zone, p_ovp, p_ovi, pm,
):
    """A GPS fix at ``t`` (evidence ``e``, naming places ``obs_place[a:b]``) against the places it does not name.

    Not named, a fence is outside the fix by more than its accuracy: its log-odds take
    ``PM_UNPAIRED`` and a confirmed visit counts one more unpaired ping in a row. Then,
    from that state and before any record is removed (so the result does not depend on
    the order of the device's records): a confirmed visit with ``exit_pings`` unpaired
    pings in a row (and, with ``PM_EXIT_P`` > 0, a probability below it) loses its GPS
    inside evidence and exits unless a beacon holds it; a tentative visit is dropped
    (with ``PM_ENTER_P`` > 0: once its log-odds are below the prior). Last, those records go.
    """
    enter_p = pm[PM_ENTER_P]
    exit_p = pm[PM_EXIT_P]
    prior = pm[PM_PRIOR]
    r = d_head[d]
    while r >= 0:
        if not _named(r_place[r], a, b, obs_place, p_zone):
            r_lo[r] = clamp_lo(r_lo[r] + pm[PM_UNPAIRED], pm)
            if r_tent[r] == 0 and r_miss[r] < 255:
                r_miss[r] += 1
        r = r_next[r]
    k0 = n_out[0]
    r = d_head[d]
    while r >= 0:
        p = r_place[r]
        if r_tent[r] == 0 and r_miss[r] >= exit_pings and not _named(p, a, b, obs_place, p_zone):
            prob = visit_probability(d, r, r_lo[r], d_head, r_place, r_lo, r_next, p_zone, p_ovp, p_ovi, pm)
            if exit_p <= 0.0 or prob < exit_p:
                r_gps[r] = NEG_INF
                if r_bcn[r] + bcn_deb < t:
                    _emit(o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
                          EXIT, d, p, t, r_src[r], r_conf[r], t - r_enter[r], CAUSE_PING, e, prob)
        r = r_next[r]
    prev = -1
    r = d_head[d]
    while r >= 0:
        nxt = r_next[r]
        p = r_place[r]
        if r_tent[r] != 0:
            gone = (enter_p <= 0.0 or r_lo[r] < prior) and not _named(p, a, b, obs_place, p_zone)
        else:  # a confirmed visit goes when an exit for its place was emitted above (at or after k0)
            k = k0
            while k < n_out[0] and o_place[k] != p:
                k += 1
            gone = k < n_out[0]
        if gone:
            _unlink(d, r, prev, nxt, d_head, r_next, r_dev, meta)
        else:
            prev = r
        r = nxt


@njit(_nrt=False)
def transition(
    start,
    ev_dev, ev_ts, ev_cut, ev_src, ev_obs, obs_place, obs_level, obs_conf,
    d_head,
    r_place, r_dev, r_enter, r_gps, r_bcn, r_mask, r_src, r_conf, r_miss, r_tent, r_next, meta,
    p_thr, p_zone, p_ovp, p_ovi, gps_deb, bcn_deb, exit_pings, confirm_s, one_store,
    o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
    status,
    ev_lon, ev_lat, ev_acc, ev_spd, obs_llr, d_fix, r_lo, pm,
    advance, devs, now, ttl, forget, expired,
):
    """The transition function, one compiled kernel for its two uses: apply evidence, or let time pass.

    One kernel, not two, because what both uses run (ending visits, their probabilities,
    emitting events) is compiled into each kernel that calls it: a second kernel compiled
    all of that again on a first run. Python calls it through
    :func:`proximity.presence.apply_evidence` and :func:`proximity.presence.advance_state`,
    which pass the other use's arguments empty (with the same types, so it is compiled once).

    **With** ``advance``: time passes to ``now`` for ``devs`` (no evidence is read):
    exits due before then; ``expired[i]`` says whether ``devs[i]`` idled longer than
    ``ttl`` with no visit left. With ``forget`` every visit of the devices ends (cause
    ``forget``, at the device's last evidence time) and they all expire. Buffers must
    hold one event per record. A device's exits of one call are computed before any of
    its records is removed (see :func:`_end_due`). Returns ``len(devs)``.

    **Without**: apply evidence ``start:`` (sorted by device, time) to the state; append
    events to the ``o_*`` buffers.

    ``ev_cut`` is each evidence's device's newest applied time *before* this batch:
    evidence at or before it is late (dropped); within the batch equal times all apply.
    ``exit_pings``: unpaired GPS pings in a row that end a visit; ``confirm_s`` > 0: a
    GPS enter waits for a second ENTER-level ping at least that long after the first;
    ``one_store``: nor is it confirmed while that ping also keeps a confirmed visit to a
    fence that does not overlap it (``p_ovp``/``p_ovi``: each fence's overlapping fences, CSR).

    The visit probability: each record carries the log-odds ``r_lo`` that the device is
    inside its place, a forward filter over the device's evidence: relax toward the prior
    with time (:func:`proximity._kernels_visit.relax`), add each evidence's log-likelihood
    ratio (``obs_llr``, plus the device-level GPS evidence of
    :func:`proximity._kernels_visit.gps_context`; an unpaired GPS fix adds
    ``PM_UNPAIRED``). With ``pm[PM_ENTER_P]`` > 0 every new visit is tentative until its
    probability (:func:`proximity._kernels_visit.visit_probability`) reaches it, and a
    tentative visit whose log-odds fall below the prior is dropped; with ``pm[PM_EXIT_P]``
    > 0 unpaired fixes end a visit only once its probability is below that (the debounce
    still ends it). Visits ending at one step (the debounce before an evidence, or one
    unpaired fix) are all decided from the state before any of them is removed. A GPS fix
    that could not have been reached from the last accepted one (``gps_context``) is not
    applied (``STATUS_IMPLAUSIBLE``).
    """
    # the newest applied evidence time, a column of the device rows: taken here, not passed, so that its type
    # does not depend on the caller (a column of one row is contiguous, of more strided: two compiles)
    d_last = d_fix[:, DEV_LAST]
    if advance:
        cause = CAUSE_FORGET if forget else CAUSE_DEBOUNCE
        for i in range(devs.shape[0]):
            d = devs[i]
            _end_due(d, now, forget, -1, cause,
                     d_last, d_head, r_place, r_dev, r_enter, r_gps, r_bcn, r_src, r_conf, r_tent, r_next, meta,
                     gps_deb, bcn_deb, o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob,
                     n_out, r_lo, p_zone, p_ovp, p_ovi, pm)
            expired[i] = forget or (d_head[d] < 0 and d_last[d] + ttl < now)
        return devs.shape[0]
    n = ev_dev.shape[0]
    cap = o_kind.shape[0]
    n_thr = p_thr.shape[1]
    enter_p = pm[PM_ENTER_P]
    for e in range(start, n):
        d = ev_dev[e]
        t = ev_ts[e]
        s = ev_src[e]
        if t <= ev_cut[e]:
            status[e] = STATUS_LATE
            continue
        a = ev_obs[e]
        b = ev_obs[e + 1]
        # room check before touching anything, so an evidence is applied whole or not at all
        nrec = 0
        r = d_head[d]
        while r >= 0:
            nrec += 1
            r = r_next[r]
        nobs = b - a
        if meta[1] < nobs or cap - n_out[0] < 2 * nrec + nobs + (nrec + nobs) * (n_thr + 1):
            return e
        dev_llr = 0.0
        if s == SRC_GPS:
            ok, dev_llr = gps_context(d, t, ev_lon[e], ev_lat[e], ev_acc[e], ev_spd[e], d_fix, pm)
            if not ok:
                status[e] = STATUS_IMPLAUSIBLE
                continue
        status[e] = STATUS_APPLIED
        cause = CAUSE_PING if s == SRC_GPS else CAUSE_SIGHTING
        # 1. visits whose inside evidence ran out (debounce) before this evidence; the rest relax to now
        #    (the helpers are called only when they have work: a call passes every array, which costs)
        r = d_head[d]
        while r >= 0 and _due(r, r_gps, r_bcn, gps_deb, bcn_deb) >= t:
            r = r_next[r]
        if r >= 0:
            _end_due(d, t, False, e, CAUSE_DEBOUNCE,
                     d_last, d_head, r_place, r_dev, r_enter, r_gps, r_bcn, r_src, r_conf, r_tent, r_next, meta,
                     gps_deb, bcn_deb, o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob,
                     n_out, r_lo, p_zone, p_ovp, p_ovi, pm)
        if d_last[d] > -np.inf:
            r = d_head[d]
            while r >= 0:
                r_lo[r] = relax(r_lo[r], t - d_last[d], pm)
                r = r_next[r]
        # 2. a GPS ping not paired with a fence is outside it by more than its accuracy
        #    (with exit_pings > 1, only the exit_pings-th such ping in a row counts)
        r = d_head[d]
        while s == SRC_GPS and r >= 0 and _named(r_place[r], a, b, obs_place, p_zone):
            r = r_next[r]
        if s == SRC_GPS and r >= 0:
            _gps_exits(d, t, e, a, b, obs_place, exit_pings, bcn_deb,
                       d_head, r_place, r_dev, r_enter, r_gps, r_bcn, r_src, r_conf, r_miss, r_tent, r_next, meta,
                       o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
                       r_lo, p_zone, p_ovp, p_ovi, pm)
        # 3a. what this evidence says about each place it names: the filter's update, new visits
        for k in range(a, b):
            p = obs_place[k]
            lvl = obs_level[k]
            llr = obs_llr[k]
            if s == SRC_GPS:
                llr += dev_llr
                if lvl == LEVEL_ENTER and obs_conf[k] >= 3 and llr < 0.0:
                    llr = 0.0  # an accuracy circle fully inside is never evidence against the place
            r = d_head[d]
            while r >= 0 and r_place[r] != p:
                r = r_next[r]
            if r >= 0:
                lo = r_lo[r]
                if lvl == LEVEL_ENTER:  # a new approach starts from no worse than the prior (see approach_start)
                    lo = approach_start(lo, _start_kind(s, obs_conf[k], p, p_zone, p_ovp), pm)
                r_lo[r] = clamp_lo(lo + llr, pm)
                if lvl >= LEVEL_KEEP:
                    if s == SRC_GPS:
                        r_gps[r] = t
                        r_miss[r] = 0
                    else:
                        r_bcn[r] = t
                    r_src[r] |= s
                    r_conf[r] = obs_conf[k]
            elif lvl == LEVEL_ENTER:
                r = meta[0]
                meta[0] = r_next[r]
                meta[1] -= 1
                r_place[r] = p
                r_dev[r] = d
                r_enter[r] = t
                r_gps[r] = t if s == SRC_GPS else NEG_INF
                r_bcn[r] = t if s == SRC_BEACON else NEG_INF
                r_mask[r] = 0
                r_src[r] = s
                r_conf[r] = obs_conf[k]
                r_miss[r] = 0
                r_lo[r] = clamp_lo(approach_start(NEG_INF, _start_kind(s, obs_conf[k], p, p_zone, p_ovp), pm) + llr, pm)
                r_tent[r] = 1 if ((s == SRC_GPS and confirm_s > 0) or enter_p > 0.0) else 2
                r_next[r] = d_head[d]
                d_head[d] = r
        # 3b. enters: new visits that need no confirmation, tentative ones confirmed now
        for k in range(a, b):
            p = obs_place[k]
            lvl = obs_level[k]
            r = d_head[d]
            while r >= 0 and r_place[r] != p:
                r = r_next[r]
            if r < 0 or r_tent[r] == 0:
                continue
            if r_tent[r] == 2:  # created by this evidence, enters at once
                r_tent[r] = 0
                _emit(o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
                      ENTER, d, p, t, np.uint8(s), obs_conf[k], 0.0, cause, e,
                      visit_probability(d, r, r_lo[r], d_head, r_place, r_lo, r_next, p_zone, p_ovp, p_ovi, pm))
                continue
            if lvl < (LEVEL_KEEP if enter_p > 0.0 else LEVEL_ENTER):
                continue
            if s == SRC_GPS and (t - r_enter[r] < confirm_s or (one_store and _held_by_other_store(
                    d, r, p, a, b, obs_place, obs_level, d_head, r_place, r_tent, r_next, p_zone, p_ovp, p_ovi))):
                continue
            if s == SRC_GPS and confirm_s > 0 and lvl < LEVEL_ENTER:
                continue
            prob = visit_probability(d, r, r_lo[r], d_head, r_place, r_lo, r_next, p_zone, p_ovp, p_ovi, pm)
            if prob < enter_p:
                continue
            r_tent[r] = 0
            _emit(o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
                  ENTER, d, p, t, np.uint8(s), obs_conf[k], t - r_enter[r], cause, e, prob)
        # 4. dwell thresholds reached by now, each once per visit, on inside evidence for the place
        r = d_head[d]
        while r >= 0:
            p = r_place[r]
            if r_tent[r] != 0 or (r_gps[r] if s == SRC_GPS else r_bcn[r]) != t:
                r = r_next[r]
                continue
            elapsed = t - r_enter[r]
            for j in range(n_thr):
                thr = p_thr[p, j]
                if thr > elapsed:
                    break
                bit = np.uint32(1) << np.uint32(j)
                if (r_mask[r] & bit) == 0:
                    r_mask[r] |= bit
                    _emit(o_kind, o_dev, o_place, o_ts, o_src, o_conf, o_dwell, o_cause, o_ev, o_prob, n_out,
                          DWELL, d, p, t, r_src[r], r_conf[r], thr, cause, e,
                          visit_probability(d, r, r_lo[r], d_head, r_place, r_lo, r_next, p_zone, p_ovp, p_ovi, pm))
            r = r_next[r]
        if t > d_last[d]:
            d_last[d] = t
    return n


@njit(_nrt=False)
def next_due(devs, ttl, d_dev, d_head, r_gps, r_bcn, r_next, gps_deb, bcn_deb, out):
    """Per device: the time after which ``advance`` has work for it (a debounce exit or the TTL); ``d_dev``:
    the device rows (their ``DEV_LAST`` column)."""
    for i in range(devs.shape[0]):
        d = devs[i]
        best = d_dev[d, DEV_LAST] + ttl
        r = d_head[d]
        while r >= 0:
            due = _due(r, r_gps, r_bcn, gps_deb, bcn_deb)
            if due < best:
                best = due
            r = r_next[r]
        out[i] = best


@njit(_nrt=False)
def order_ties(order, dev, ts, k1, k2, k3):
    """``order`` sorts by ``dev``; make it sort by (dev, ts, k1, k2, k3, index) with an insertion sort per
    device. The index (the row's position in the input) breaks the remaining ties, so the result does not
    depend on how ``order`` ordered equal ``dev`` (an unstable argsort: it differs with the device codes,
    which differ between stores), and of duplicates the first in the input is kept."""
    n = order.shape[0]
    i = 0
    while i < n:
        j = i + 1
        while j < n and dev[order[j]] == dev[order[i]]:
            j += 1
        for a in range(i + 1, j):
            x = order[a]
            b = a - 1
            while b >= i:
                y = order[b]
                if (ts[y], k1[y], k2[y], k3[y], y) <= (ts[x], k1[x], k2[x], k3[x], x):
                    break
                order[b + 1] = y
                b -= 1
            order[b + 1] = x
        i = j
