"""The lift estimate recovers a known true effect on a small simulated city, and finds none when there is none."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.errors import SimError
from sim.lift import effects_of, inject, run, simulate_day, summary
from sim.scenario import SCENARIO_DIR, load_scenario

LIFT = load_scenario(SCENARIO_DIR / "lift.yaml")
SMALL = dataclasses.replace(LIFT, devices=800, hours=12.0)


@pytest.mark.timeout(600)
def test_20_seeds_cover_the_true_lift_and_find_none_without_one() -> None:
    """Presence from the true visits (fast); the engine's presence gives the README's table.
    Pooled over the three campaigns x 20 seeds: coverage >= 90%, mean within 10%, >= 90% not significant at 0."""
    effect_rows, null_rows = run(SMALL, range(1, 21), presence="truth")
    assert {r["seed"] for r in effect_rows} == set(range(1, 21))
    table = {r["campaign_id"]: r for r in summary(effect_rows, null_rows)}
    assert set(table) == {"small-welcome", "medium-browse", "large-goodbye", "all"}
    pooled = table["all"]
    assert pooled["seeds"] == 60 and pooled["true_lift"] == pytest.approx(0.15)
    assert pooled["coverage"] >= 0.9, pooled
    assert abs(pooled["relative_error"]) <= 0.10, pooled
    assert pooled["null_significant"] <= 0.10, pooled
    for row in table.values():  # every campaign: a real sample in both groups, and no systematic miss
        assert row["exposed"] > 40 and row["holdout_exposed"] > 40
        assert row["coverage"] >= 0.8 and abs(row["relative_error"]) <= 0.25, row


def test_only_treated_exposures_get_induced_visits() -> None:
    day = simulate_day(dataclasses.replace(SMALL, seed=3), presence="truth")
    assert len(day.exposures) > 300
    holdout = day.arm_names.index("holdout")
    share = float(np.mean(day.exposures.arm == holdout))
    assert 0.4 < share < 0.6  # the campaigns hold out 50%
    events = inject(day, effects_of(SMALL, day.specs), np.random.default_rng(1))
    n_new = len(events) - len(day.events)
    assert n_new > 0 and n_new % 2 == 0  # an enter and an exit per induced visit
    new_devices = set(events.device[len(day.events):].tolist())
    held_out = set(day.exposures.device[day.exposures.arm == holdout].tolist())
    treated = set(day.exposures.device[day.exposures.arm != holdout].tolist())
    assert new_devices <= treated and len(held_out) > 0
    assert inject(day, effects_of(SMALL, day.specs, 0.0), np.random.default_rng(1)) is day.events


def test_every_seed_draws_its_own_groups_with_engine_presence_too() -> None:
    """The engine decides with each seed's salt, as the truth presence does (it once kept the campaigns'
    own salts, so every seed of an engine run had the same holdout: one experiment repeated, not 20)."""
    tiny = dataclasses.replace(LIFT, devices=150, hours=4.0)
    arms = []
    for seed in (1, 2):
        day = simulate_day(dataclasses.replace(tiny, seed=seed), presence="engine")
        ex, h = day.exposures, day.arm_names.index("holdout")
        arms.append({(int(c), int(d)): bool(a == h) for c, d, a in zip(ex.campaign, ex.device, ex.arm, strict=True)})
    both = sorted(set(arms[0]) & set(arms[1]))
    assert len(both) >= 15  # (campaign, device) pairs exposed on both days (21 on these seeds)
    same = sum(arms[0][k] == arms[1][k] for k in both)
    assert 0.2 * len(both) < same < 0.8 * len(both)  # independent draws at a 50% holdout agree about half the time


def test_the_scenario_setting_is_checked() -> None:
    assert LIFT.lift.effect == pytest.approx(0.15)
    with pytest.raises(SimError, match=r"lift\.effect"):
        load_scenario("lift: {effect: 1.5}\n")
    with pytest.raises(SimError, match="did you mean 'effect'"):
        load_scenario("lift: {efect: 0.1}\n")
