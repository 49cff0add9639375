"""Calibration, the oracle's precision-recall and ``--seeds``: the arithmetic against hand-made cases."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proximity.cli import main
from sim.calibration import reliability
from sim.fit import calibration_knots, isotonic
from sim.oracle import best_precision_at, ndtr, pr_curve
from sim.seeds import mean_sd


def test_ece_of_a_calibrated_and_of_an_overconfident_forecast() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 200_000)
    truth = rng.uniform(0, 1, len(p)) < p
    assert reliability(p, truth)["ece"] < 0.01
    sure = np.full(1000, 0.9)
    assert reliability(sure, np.arange(1000) < 600)["ece"] == pytest.approx(0.3)
    assert reliability(np.zeros(0), np.zeros(0, bool))["ece"] is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.booleans()), min_size=2, max_size=200))
def test_isotonic_fit_never_falls_and_keeps_the_mean(pairs: list[tuple[float, bool]]) -> None:
    x = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs], float)
    _xs, fit = isotonic(x, y)
    assert np.all(np.diff(fit) >= -1e-12) and fit.mean() == pytest.approx(y.mean())
    knots = calibration_knots(x, y)
    assert all(b[0] > a[0] and b[1] > a[1] for a, b in itertools.pairwise(knots))


def test_normal_cdf() -> None:
    assert ndtr(np.array([0.0]))[0] == pytest.approx(0.5)
    assert ndtr(np.array([1.959964]))[0] == pytest.approx(0.975, abs=1e-6)
    assert ndtr(np.array([-3.0]))[0] == pytest.approx(0.0013499, abs=1e-6)


def test_precision_recall_curve_and_best_precision_at_a_recall() -> None:
    score = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])
    positive = np.array([True, True, False, True, False, True])
    prec, rec = pr_curve(score, positive, n_positive=5)  # one positive episode never scored
    assert rec.tolist() == [0.2, 0.4, 0.4, 0.6, 0.6, 0.8]
    assert prec.tolist() == pytest.approx([1.0, 1.0, 2 / 3, 0.75, 0.6, 4 / 6])
    assert best_precision_at(prec, rec, 0.6) == 0.75
    assert best_precision_at(prec, rec, 0.9) is None


def test_mean_sd_skips_what_was_not_measured() -> None:
    assert mean_sd([1.0, 3.0, None]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_sd([None]) == (None, None)


def test_cli_seeds_reports_mean_and_sd_per_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "run", "--devices", "40", "--hours", "2", "--set", "start=2026-03-02T10:00:00+01:00",
                 "--seeds", "2", "--no-plots", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "2 seeds (1, 2): mean ± sd" in out and "ece" in out
    doc = json.loads((tmp_path / "seeds.json").read_text())
    assert doc["seeds"] == [1, 2] and {t["target"] for t in doc["targets"]} >= {"precision", "ece", "recall"}
    for t in doc["targets"]:
        assert t["seeds"] == 2 and len(t["per_seed"]) == 2
    assert (tmp_path / "seed-1" / "metrics.json").is_file() and (tmp_path / "seed-2" / "events.jsonl").is_file()
    first = json.loads((tmp_path / "seed-1" / "events.jsonl").read_text().splitlines()[0])
    assert 0.0 <= first["probability"] <= 1.0


def test_the_oracles_latency_at_a_precision_is_its_curves_point_and_when_it_first_gets_there() -> None:
    """For each GPS-only class: the precision reached is at least the one asked, the recall is the best the
    oracle's precision-recall curve (same window) has at that precision, a stricter precision never finds
    more, and every latency lies between the door and the window's end."""
    from sim.oracle import latency_at_precision, scores
    from sim.runner import simulate
    from sim.scenario import load_scenario

    sc = load_scenario(None).with_overrides({"devices": 150, "hours": 3, "start": "2026-03-02T10:00:00+01:00"})
    sim = simulate(sc)
    window = 1800.0
    asked = {"medium": 0.8, "large": 0.7, "mall": 0.9}
    got = latency_at_precision(sim, asked, window_s=window)
    strict = latency_at_precision(sim, {c: min(p + 0.1, 1.0) for c, p in asked.items()}, window_s=window)
    sc_ = scores(sim, window_s=window)
    size = sim.truth.size_class[sc_["store"]]
    checked = 0
    for cls, p in asked.items():
        if cls not in got:
            continue
        m = size == cls
        prec, rec = pr_curve(sc_["score"][m], sc_["positive"][m], int(np.sum(sc_["positive"] & m)))
        row = got[cls]
        ok = prec >= p - 1e-12
        best = float(rec[ok].max()) if ok.any() else 0.0
        assert row["recall"] == pytest.approx(best, abs=1e-4)
        if row["precision"] is not None:
            checked += 1
            assert row["precision"] >= p
            lat = row["enter_latency_s"]
            assert 0.0 <= lat["median"] <= lat["p90"] <= window
        assert strict[cls]["recall"] <= row["recall"]
    assert checked >= 1
