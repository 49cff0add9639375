"""Holdouts and variants: stable salted assignment, the documented reshuffle rule, holdout decisions."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import CampaignRules, MemoryLimiter, loads_campaigns
from campaigns.experiments import HOLDOUT, arm, arms, shares
from campaigns.model import Experiment, Variant

from .test_decider import FENCES, MON_10, dev, ev

EXPERIMENT = """
campaigns:
  - id: coffee
    priority: 10
    trigger: {on: enter, tags: [coffee]}
    offer: {title: "Base", body: "base body", data: {coupon: C1, n: 1}}
    experiment:
      holdout: 20%
      variants:
        - {id: a, weight: 3, offer: {title: "A {store.name}"}}
        - {id: b, weight: 1, offer: {data: {coupon: C2}}}
    limits:
      per_device: {max: 1, window: 1d, kind: calendar}
      budget: {total: 1000}
  - id: fallback
    priority: 1
    trigger: {on: enter}
    offer: {title: "Any store"}
"""

DEVICES = [f"dev-{i:05d}" for i in range(20000)]


def campaign(yaml: str = EXPERIMENT, i: int = 0) -> Any:
    return loads_campaigns(yaml, fences=FENCES).campaigns[i]


def test_assignment_is_stable_and_matches_the_declared_shares() -> None:
    c = campaign()
    got = arms(c, DEVICES)
    assert list(got) == [arm(c, d) for d in DEVICES]  # the scalar and the array form agree
    counts = {k: int(np.sum(got == k)) for k in (HOLDOUT, "a", "b")}
    expected = shares(c)
    assert expected == pytest.approx({HOLDOUT: 0.2, "a": 0.6, "b": 0.2})
    for k, n in counts.items():  # 20k draws: 4 standard deviations at most
        p = expected[k]
        assert abs(n / len(DEVICES) - p) < 4 * (p * (1 - p) / len(DEVICES)) ** 0.5, (k, n)


def test_assignment_is_the_same_in_another_process() -> None:
    """No per-process hash seed: a fresh interpreter (as another worker would be) assigns the same arms."""
    code = ("from campaigns import loads_campaigns; from campaigns.experiments import arm; import sys; "
            "from tests.campaigns.test_experiments import EXPERIMENT, FENCES; "
            "c = loads_campaigns(EXPERIMENT, fences=FENCES).campaigns[0]; "
            "print(','.join(str(arm(c, f'dev-{i:05d}')) for i in range(300)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    c = campaign()
    assert out.stdout.strip() == ",".join(str(arm(c, d)) for d in DEVICES[:300])


def with_experiment(c: Any, **kw: Any) -> Any:
    return dataclasses.replace(c, experiment=dataclasses.replace(c.experiment, **kw))


def test_adding_a_variant_moves_devices_only_into_it() -> None:
    c = campaign()
    before = arms(c, DEVICES)
    extra = Variant("c", 2.0, c.offer)
    after = arms(with_experiment(c, variants=(*c.experiment.variants, extra)), DEVICES)
    moved = before != after
    assert set(after[moved]) == {"c"}  # nobody moves between a and b, nor in or out of the holdout
    assert abs(moved.mean() - 0.8 * 2 / 6) < 0.02  # c takes its share of the treated devices
    # declaration order plays no part
    reordered = arms(with_experiment(c, variants=(extra, *reversed(c.experiment.variants))), DEVICES)
    assert list(reordered) == list(after)


def test_growing_the_holdout_only_adds_devices_to_it_and_a_new_salt_redraws() -> None:
    c = campaign()
    before = arms(c, DEVICES)
    bigger = arms(with_experiment(c, holdout=0.3), DEVICES)
    assert np.all(bigger[before == HOLDOUT] == HOLDOUT)
    left = (before != HOLDOUT) & (bigger != HOLDOUT)
    assert list(bigger[left]) == list(before[left])
    redrawn = arms(with_experiment(c, salt="spring-2027"), DEVICES)
    assert 0.3 < float(np.mean(redrawn != before)) < 0.8


@settings(max_examples=40)
@given(weights=st.lists(st.floats(0.1, 10), min_size=1, max_size=5), removed=st.integers(0, 4))
def test_removing_a_variant_moves_only_its_devices(weights: list[float], removed: int) -> None:
    c = campaign()
    variants = tuple(Variant(f"v{i}", w, c.offer) for i, w in enumerate(weights))
    full = dataclasses.replace(c, experiment=Experiment(0.1, variants, ""))
    gone = variants[removed % len(variants)]
    if len(variants) == 1:
        return
    smaller = dataclasses.replace(c, experiment=Experiment(0.1, tuple(v for v in variants if v is not gone), ""))
    a, b = arms(full, DEVICES[:2000]), arms(smaller, DEVICES[:2000])
    assert np.all(a[a != gone.id] == b[a != gone.id])


def devices_in(arm_name: str, n: int = 3) -> list[str]:
    c = campaign()
    return [d for d in DEVICES if arm(c, d) == arm_name][:n]


def test_holdout_device_gets_a_holdout_decision_that_uses_no_cap() -> None:
    limiter = MemoryLimiter()
    r = CampaignRules(loads_campaigns(EXPERIMENT, fences=FENCES), FENCES, limiter=limiter)
    d = devices_in(HOLDOUT, 1)[0]
    decision = r.evaluate([ev(device=d)], dev(d), MON_10)[0]
    assert decision.offer is None
    v = {x.campaign_id: x for x in decision.verdicts}
    assert (v["coffee"].outcome, v["coffee"].variant) == ("holdout", HOLDOUT)
    assert v["fallback"].outcome == "outranked"  # the control group gets no push for the event at all
    assert decision.to_dict()["verdicts"][0]["variant"] == HOLDOUT
    # no real cap was taken: the budget and the device's counters are untouched
    checks = CampaignRules._checks(r.campaigns.campaigns[0], ev(device=d), None, r.campaigns.defaults)
    assert all(limiter.usage(chk, MON_10) == 0 for chk in checks)
    # ...but the mirrored per-device cap holds the control group to one exposure a day, like the treated
    again = r.evaluate([ev(device=d, ts=MON_10 + 600)], dev(d), MON_10 + 600)[0]
    assert {x.campaign_id: x.outcome for x in again.verdicts}["coffee"] == "blocked"


def test_holdout_devices_pass_the_same_checks_as_treated_ones() -> None:
    yaml = EXPERIMENT.replace("limits:\n      per_device", "audience: {segments: {any: [gold]}}\n    limits:\n      per_device")
    r = CampaignRules(loads_campaigns(yaml, fences=FENCES), FENCES)
    d = devices_in(HOLDOUT, 1)[0]
    refused = r.evaluate([ev(device=d)], dev(d, segments="silver"), MON_10)[0]
    assert {x.campaign_id: x.outcome for x in refused.verdicts}["coffee"] == "audience"
    # a cap already full for the device (across campaigns) blocks the holdout decision too
    yaml = EXPERIMENT.replace("campaigns:", "defaults:\n  limits: {per_device: {max: 1, window: 1h}}\ncampaigns:", 1)
    r = CampaignRules(loads_campaigns(yaml, fences=FENCES), FENCES)
    first = r.evaluate([ev(device=d, fence="mall")], dev(d), MON_10)[0]  # fallback offers at the mall
    assert first.offer is not None and first.offer.campaign_id == "fallback"
    second = r.evaluate([ev(device=d, ts=MON_10 + 60)], dev(d), MON_10 + 60)[0]
    coffee = {x.campaign_id: x for x in second.verdicts}["coffee"]
    assert coffee.outcome == "blocked" and coffee.cap == "global per_device 1/1h"


def test_treated_devices_get_their_variant_offer() -> None:
    r = CampaignRules(loads_campaigns(EXPERIMENT, fences=FENCES), FENCES)
    for name, title, coupon in (("a", "A Café Lune", "C1"), ("b", "Base", "C2")):
        d = devices_in(name, 1)[0]
        offer = r.evaluate([ev(device=d)], dev(d), MON_10)[0].offer
        assert offer is not None and offer.variant == name
        assert (offer.title, offer.data["coupon"], offer.data["n"], offer.body) == (title, coupon, 1, "base body")
        assert offer.to_dict()["variant"] == name


def test_dry_run_of_a_holdout_takes_nothing() -> None:
    r = CampaignRules(loads_campaigns(EXPERIMENT, fences=FENCES), FENCES)
    d = devices_in(HOLDOUT, 1)[0]
    for _ in range(2):
        assert r.explain(ev(device=d)).verdicts[0].outcome == "holdout"
