"""Conversions against a literal oracle, and the statistics of the lift report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import _kernels as K
from campaigns.conversions import Events, Exposures, Spec, conversions, visits_of
from campaigns.report import diff_interval, lift_report, ratio_interval, wilson

FENCES = ["f0", "f1", "f2"]
KIND = {"enter": K.ENTER, "dwell": K.DWELL, "exit": K.EXIT}


def oracle_visits(events: list[tuple[str, int, int, float, float, float]]) -> list[dict[str, Any]]:
    """Visits, one (device, fence) at a time, in time order: literally the documented rule (``row``: the
    enter's place in the log, which orders visits starting at the same instant)."""
    out = []
    rank = {"exit": 0, "enter": 1, "dwell": 2}
    for d, f in sorted({(e[1], e[2]) for e in events}):
        mine = sorted(((row, e) for row, e in enumerate(events) if e[1] == d and e[2] == f),
                      key=lambda re: (re[1][3], rank[re[1][0]]))
        cur: dict[str, Any] | None = None
        seen = False
        for row, (kind, _, _, ts, dwell, prob) in mine:
            if kind == "enter":
                cur = {"device": d, "fence": f, "ts": ts, "dwell": dwell, "prob": prob, "closed": False,
                       "repeat": seen, "row": row}
                seen = True
                out.append(cur)
            elif cur is not None:
                cur["dwell"] = max(cur["dwell"], dwell)
                if not math.isnan(prob) and (math.isnan(cur["prob"]) or prob > cur["prob"]):
                    cur["prob"] = prob
                if kind == "exit":
                    cur["closed"] = True
                    cur = None
    return out


def qualifies(v: dict[str, Any], spec: Spec) -> bool:
    return ((spec.places is None or FENCES[v["fence"]] in spec.places) and v["dwell"] >= spec.min_dwell_s
            and not (spec.min_probability > 0 and not math.isnan(v["prob"]) and v["prob"] < spec.min_probability))


def oracle_conversions(exposures: list[tuple[int, int, float]], visits: list[dict[str, Any]], specs: list[Spec],
                       attribution: str) -> list[dict[str, Any] | None]:
    """Each exposure's first qualifying visit; with "last", when several exposures have the same first
    qualifying visit, only the latest of them (ties between equal times: the later in input order) keeps it."""
    def first_of(c: int, d: int, t: float) -> dict[str, Any] | None:
        spec = specs[c]
        cands = sorted((v for v in visits if v["device"] == d and t < v["ts"] <= t + spec.within_s and qualifies(v, spec)),
                       key=lambda v: (v["ts"], v["row"]))
        return cands[0] if cands else None

    firsts = [first_of(*e) for e in exposures]
    out: list[dict[str, Any] | None] = []
    for i, (_, d, t) in enumerate(exposures):
        first = firsts[i]
        if first is not None and attribution == "last":
            for j, (_, d2, t2) in enumerate(exposures):
                later = t2 > t or (t2 == t and j > i)
                if j != i and d2 == d and later and firsts[j] is first:
                    first = None
                    break
        out.append(first)
    return out


times = st.integers(0, 40).map(float)
event_st = st.tuples(st.sampled_from(["enter", "dwell", "exit"]), st.integers(0, 3), st.integers(0, 2), times,
                     st.sampled_from([0.0, 5.0, 20.0]), st.sampled_from([math.nan, 0.3, 0.9]))
spec_st = st.builds(Spec, campaign_id=st.sampled_from(["a", "b"]),
                    places=st.sampled_from([None, frozenset({"f0"}), frozenset({"f1", "f2"})]),
                    within_s=st.sampled_from([5.0, 15.0, 100.0]), min_dwell_s=st.sampled_from([0.0, 10.0]),
                    min_probability=st.sampled_from([0.0, 0.5]))


def columns(events: list[tuple[str, int, int, float, float, float]]) -> Events:
    return Events(np.asarray([KIND[e[0]] for e in events], np.int8), np.asarray([e[1] for e in events], np.int64),
                  np.asarray([e[2] for e in events], np.int64), np.asarray([e[3] for e in events], np.float64),
                  np.asarray([e[4] for e in events], np.float64), np.asarray([e[5] for e in events], np.float64))


@settings(max_examples=300)
@given(events=st.lists(event_st, max_size=30),
       exposures=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3), times), max_size=12),
       specs=st.lists(spec_st, min_size=2, max_size=2), attribution=st.sampled_from(["last", "each"]),
       spread=st.sampled_from([1, 1, 2003]))
def test_conversions_match_the_oracle(events: list[Any], exposures: list[Any], specs: list[Spec], attribution: str,
                                      spread: int) -> None:
    # distinct times per (device, fence) keep the oracle's order unambiguous
    seen: set[tuple[int, int, float]] = set()
    events = [e for e in events if (e[1], e[2], e[3]) not in seen and not seen.add((e[1], e[2], e[3]))]
    # spread: device codes above K.ONE_PASS_CODES, so rows are grouped in two passes
    events = [(e[0], e[1] * spread, *e[2:]) for e in events]
    exposures = [(e[0], e[1] * spread, e[2]) for e in exposures]
    visits = visits_of(columns(events), 3 * spread + 1)
    want_visits = oracle_visits(events)
    got_visits = [{"device": int(visits.device[i]), "fence": int(visits.fence[i]), "ts": float(visits.ts[i]),
                   "dwell": float(visits.dwell_s[i]), "closed": bool(visits.closed[i]), "repeat": bool(visits.repeat[i])}
                  for i in range(len(visits))]
    key = lambda v: (v["device"], v["ts"], v["fence"])  # noqa: E731
    assert sorted(got_visits, key=key) == sorted(({k: v[k] for k in got_visits[0]} if got_visits else {} for v in want_visits),
                                                key=key) or not want_visits
    ex = Exposures(np.asarray([e[0] for e in exposures], np.int64), np.zeros(len(exposures), np.int64),
                   np.asarray([e[1] for e in exposures], np.int64), np.zeros(len(exposures), np.int64),
                   np.asarray([e[2] for e in exposures], np.float64))
    won = conversions(ex, visits, specs, FENCES, attribution=attribution)
    expected = oracle_conversions(exposures, want_visits, specs, attribution)
    for i, want in enumerate(expected):
        if want is None:
            assert won[i] == -1, (i, exposures[i])
        else:
            assert won[i] >= 0, (i, exposures[i], want)
            assert (visits.device[won[i]], visits.fence[won[i]], visits.ts[won[i]]) == (want["device"], want["fence"], want["ts"])


@settings(max_examples=60)
@given(codes=st.lists(st.integers(0, 2**21 - 1), max_size=300), n_codes=st.sampled_from([2**21, 2**20 + 3, 5000, 40]),
       event_rows=st.booleans(), data=st.data())
def test_grouping_is_a_stable_sort_by_code(codes: list[int], n_codes: int, event_rows: bool, data: Any) -> None:
    """The grouping, in one pass (few codes) and in two (many), against numpy's stable argsort; the
    columns as the reports give them (an event's ts, kind, fence, dwell; a visit's dwell)."""
    codes_a = np.asarray([c % n_codes for c in codes], np.int64)
    n = len(codes)
    values = st.lists(st.floats(-1e9, 1e9), min_size=n, max_size=n)
    cols: list[np.ndarray] = [np.asarray(data.draw(values))]
    if event_rows:
        cols += [np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int8),
                 np.asarray(data.draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)), np.int64),
                 np.asarray(data.draw(values))]
    rows, starts = K.group(codes_a, cols, n_codes)
    order = np.argsort(codes_a, kind="stable")
    assert rows.shape == (n, len(cols))
    assert (rows == np.column_stack([c.astype(np.float64) for c in cols]).reshape(n, len(cols))[order]).all()
    assert (starts == np.concatenate([[0], np.cumsum(np.bincount(codes_a, minlength=n_codes))])).all()


@settings(max_examples=100)
@given(ts=st.lists(st.floats(0, 12 * 86400.0), min_size=1, max_size=50), zone=st.sampled_from(["Europe/Paris", "UTC"]))
def test_store_days_find_the_local_day_as_searchsorted_does(ts: list[float], zone: str) -> None:
    """Across the spring and autumn DST changes of 2026 (23- and 25-hour days), and exactly at midnights."""
    from zoneinfo import ZoneInfo

    from campaigns.report import _day_starts

    base = [1_774_400_000.0, 1_792_000_000.0][len(ts) % 2]  # a week before each change
    t = np.asarray([base + x for x in ts])
    starts = _day_starts(float(t.min()), float(t.max()), ZoneInfo(zone))
    t = np.concatenate([t, starts[(np.arange(len(ts)) % (len(starts) - 1))]])  # midnights themselves
    fence = np.arange(len(t)) % 3
    got = np.empty(len(t), np.int64)
    K.store_days(t, fence, starts, got)
    assert (got == fence * len(starts) + np.searchsorted(starts, t, side="right") - 1).all()


def test_a_visit_in_progress_at_exposure_time_does_not_count() -> None:
    # the enter at t=10 triggers the offer at t=10; the device stays, leaves at 40, comes back at 100
    events = [("enter", 0, 0, 10.0, 0.0, math.nan), ("dwell", 0, 0, 20.0, 10.0, math.nan),
              ("exit", 0, 0, 40.0, 30.0, math.nan), ("enter", 0, 0, 100.0, 0.0, math.nan)]
    v = visits_of(columns(events), 1)
    ex = Exposures(np.array([0]), np.array([0]), np.array([0]), np.array([0]), np.array([10.0]))
    assert v.ts[conversions(ex, v, [Spec("a", within_s=200)], FENCES)[0]] == 100.0
    assert conversions(ex, v, [Spec("a", within_s=60)], FENCES)[0] == -1


def test_last_exposure_takes_the_visit() -> None:
    events = [("enter", 0, 1, 50.0, 0.0, math.nan)]
    v = visits_of(columns(events), 1)
    ex = Exposures(np.array([0, 1]), np.array([0, 0]), np.array([0, 0]), np.array([0, 0]), np.array([10.0, 20.0]))
    specs = [Spec("a", within_s=100), Spec("b", within_s=100)]
    assert list(conversions(ex, v, specs, FENCES)) == [-1, 0]
    assert list(conversions(ex, v, specs, FENCES, attribution="each")) == [0, 0]
    # b does not convert at f1: the visit stays a's
    specs = [Spec("a", within_s=100), Spec("b", within_s=100, places=frozenset({"f0"}))]
    assert list(conversions(ex, v, specs, FENCES)) == [0, -1]


def test_wilson_and_newcombe_agree_with_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17, table II: 56/70 - 48/80 -> 0.2000 [0.0524, 0.3339]
    d, lo, hi = diff_interval(np.array([56]), np.array([70]), np.array([48]), np.array([80]))
    assert (round(float(d[0]), 4), round(float(lo[0]), 4), round(float(hi[0]), 4)) == (0.2, 0.0524, 0.3339)
    lo, hi = wilson(np.array([0]), np.array([10]))
    assert float(lo[0]) == 0.0 and round(float(hi[0]), 4) == 0.2775
    r, rlo, _rhi = ratio_interval(np.array([0]), np.array([10]), np.array([5]), np.array([10]))
    assert np.isnan(r[0]) and np.isnan(rlo[0]) and np.isnan(_rhi[0])


def test_report_rows_state_not_enough_data_and_lift() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    arm = (rng.random(n) < 0.5).astype(np.int64)  # 0 holdout, 1 offer
    device = np.arange(n)
    converted = rng.random(n) < np.where(arm == 1, 0.30, 0.20)
    ex = Exposures(np.zeros(n, np.int64), arm, device, device % 2, np.zeros(n))
    conv_dev = device[converted]
    k = len(conv_dev)
    events = Events(np.full(k, K.ENTER, np.int8), conv_dev, conv_dev % 2, np.full(k, 100.0), np.zeros(k), np.full(k, np.nan))
    specs = [Spec("c", holdout=0.5)]
    rep = lift_report(ex, events, specs, ["s0", "s1"], ["holdout", "offer"])
    top = rep.lift[0]
    assert top["level"] == "campaign" and top["exposed"] == int((arm == 1).sum())
    assert top["status"] == "significant" and top["lift_ci"][0] < 0.10 < top["lift_ci"][1]
    assert top["incremental_visits"] == pytest.approx(top["lift"] * top["exposed"], abs=1e-3)
    assert [r["store"] for r in rep.lift[1:]] == ["s0", "s1"]
    small = lift_report(ex, events, specs, ["s0", "s1"], ["holdout", "offer"], min_exposed=2500)
    assert all(r["status"] == "not enough data" and "lift" not in r for r in small.lift)
    traffic = {r["store"]: r for r in rep.traffic}
    assert traffic["s0"]["visits"] + traffic["s1"]["visits"] == k
    assert traffic["s0"]["unique_visitors"] == traffic["s0"]["visits"] and traffic["s0"]["repeat_visit_rate"] == 0.0


def test_devices_exposed_many_times_widen_the_interval() -> None:
    """Devices are assigned, exposures are counted: 40 devices x 25 exposures that all convert or all
    do not is 40 trials, not 1000, and the interval says so (design effect ~25)."""
    rng = np.random.default_rng(9)
    n_dev, per = 40, 25
    device = np.repeat(np.arange(n_dev), per)
    arm = (device % 2).astype(np.int64)  # 0 holdout, 1 offer
    converts = rng.random(n_dev) < np.where(np.arange(n_dev) % 2 == 1, 0.6, 0.4)
    ts = np.tile(np.arange(per) * 1000.0, n_dev)
    ex = Exposures(np.zeros(len(device), np.int64), arm, device, np.zeros(len(device), np.int64), ts)
    conv_dev = np.flatnonzero(converts)
    v_dev = np.repeat(conv_dev, per)
    v_ts = np.tile(np.arange(per) * 1000.0 + 10, len(conv_dev))
    events = Events(np.full(len(v_dev), K.ENTER, np.int8), v_dev, np.zeros(len(v_dev), np.int64), v_ts,
                    np.zeros(len(v_dev)), np.full(len(v_dev), np.nan))
    row = lift_report(ex, events, [Spec("c", holdout=0.5, within_s=100)], ["s"], ["holdout", "offer"], min_exposed=1).lift[0]
    assert row["exposed"] == row["holdout_exposed"] == 500
    t_d, h_d = row["design_effect"]
    assert t_d == pytest.approx(25) and h_d == pytest.approx(25)
    _, lo, hi = diff_interval(np.array([row["converted"] / t_d]), np.array([500 / t_d]),
                              np.array([row["holdout_converted"] / h_d]), np.array([500 / h_d]))
    assert row["lift_ci"] == pytest.approx([float(lo[0]), float(hi[0])], abs=1e-5)
    assert row["lift_ci"][1] - row["lift_ci"][0] > 0.4  # 20 devices a side, not 500 exposures


@settings(max_examples=200)
@given(n_dev=st.integers(1, 8), data=st.data())
def test_design_effects_match_a_direct_cluster_robust_computation(n_dev: int, data: Any) -> None:
    """The report's design effect per campaign and group against the definition, device by device: the
    cluster-robust variance of the rate (devices as clusters) over the binomial one, at least 1, and 1
    with fewer than two devices or a rate of 0 or 1."""
    n_camp = 2
    held = data.draw(st.lists(st.booleans(), min_size=n_camp * n_dev, max_size=n_camp * n_dev))
    rows = data.draw(st.lists(st.tuples(st.integers(0, n_camp - 1), st.integers(0, n_dev - 1), st.integers(0, 20)),
                              min_size=1, max_size=40))
    visits = data.draw(st.lists(st.tuples(st.integers(0, n_dev - 1), st.integers(0, 2), st.integers(0, 25)), max_size=30))
    camp, dev, ts = (np.asarray(c, np.int64) for c in zip(*rows, strict=True))
    arm = np.asarray([0 if held[c * n_dev + d] else 1 for c, d in zip(camp, dev, strict=True)], np.int64)
    ex = Exposures(camp, arm, dev, np.zeros(len(camp), np.int64), ts * 10.0)
    v_dev, v_fence, v_ts = (np.asarray(c, np.int64) for c in zip(*visits, strict=True)) if visits else [np.zeros(0, np.int64)] * 3
    events = Events(np.full(len(v_dev), K.ENTER, np.int8), v_dev, v_fence, v_ts * 10.0 + 5.0, np.zeros(len(v_dev)),
                    np.full(len(v_dev), np.nan))
    specs = [Spec(f"c{c}", holdout=0.5, within_s=60.0) for c in range(n_camp)]
    got = {r["campaign_id"]: r["design_effect"] for r in lift_report(ex, events, specs, FENCES, ["holdout", "offer"],
                                                                     min_exposed=1, n_devices=n_dev).lift
           if r["level"] == "campaign"}
    converted = conversions(ex, visits_of(events, n_dev), specs, FENCES) >= 0
    for c in range(n_camp):
        if not (camp == c).any():
            assert f"c{c}" not in got
            continue
        want = []
        for g in (1, 0):  # as the row gives them: treated, holdout
            mine = (camp == c) & (arm == g)
            n_i = np.bincount(dev[mine], minlength=n_dev)
            x_i = np.bincount(dev[mine], weights=converted[mine], minlength=n_dev)
            big_n, big_x = n_i.sum(), x_i.sum()
            if np.count_nonzero(n_i) < 2 or big_x in (0, big_n):
                want.append(1.0)
                continue
            p = big_x / big_n
            want.append(max(1.0, float(((x_i - p * n_i) ** 2).sum() / (big_n * p * (1 - p)))))
        assert got[f"c{c}"] == pytest.approx(want, abs=2e-6)
