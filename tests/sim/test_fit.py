"""sim.fit's likelihood tables on hand-made pairs: the indoor pattern's centre and a fixed weight."""

from __future__ import annotations

import numpy as np
import pytest

from sim.fit import fit_tables


def _pairs(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    """(fix, store) pairs whose truth the indoor pattern alone tells: phones inside report 0.34 above their
    baseline, outside 0.04 (sd 0.3, as in the default scenario); geometry and speed say nothing."""
    rng = np.random.default_rng(seed)
    inside = rng.random(n) < 0.4
    return {"conf": rng.integers(1, 4, n), "bucket": rng.integers(0, 4, n), "speed": np.zeros(n),
            "indoor": np.where(inside, 0.34, 0.04) + rng.normal(0.0, 0.3, n), "inside": inside,
            "other": np.zeros(n, bool), "unpaired_in": rng.random(n) < 0.2, "stay_in": rng.random(n) < 0.5,
            "correlation_s": np.full(n, 45.0), "step_s": np.full(n, 30.0)}


def test_the_indoor_centre_is_where_the_pattern_says_neither() -> None:
    """Equal-variance classes: the ratio is zero halfway between them (0.19), and the geometric cells (which
    say nothing here) keep none of the pattern's mean."""
    fitted, _ = fit_tables([_pairs(60_000)])
    assert fitted["indoor_center"] == pytest.approx(0.19, abs=0.02)
    assert fitted["indoor_weight"] == pytest.approx(0.30 / 0.3**2, rel=0.1)  # (0.34 - 0.04) / sd^2
    assert np.max(np.abs(np.asarray(fitted["gps_llr"][:2]))) < 0.05


def test_a_fixed_indoor_weight_and_centre_are_kept_and_the_rest_fitted_given_them() -> None:
    fitted, _ = fit_tables([_pairs(20_000)], indoor_weight=5.0, indoor_center=0.1)
    assert (fitted["indoor_weight"], fitted["indoor_center"]) == (5.0, 0.1)
    # a centre below the classes' midpoint leaves the pattern too much indoor weight: the cells take it back
    assert np.mean(np.asarray(fitted["gps_llr"][:2])) < -0.1
