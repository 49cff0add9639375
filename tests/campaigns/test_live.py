"""Live conversions (a service's counters) count what the report over the same decisions and events counts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from campaigns import CampaignRules, FenceInfo, loads_campaigns
from campaigns.conversions import KIND_CODES, Events, Exposures, arm_names, specs_of
from campaigns.counters import MemoryCounters, report_from_counts
from campaigns.decider import EXPOSED
from campaigns.live import LiveConversions, MemoryPending
from campaigns.report import lift_report
from proximity.events import Event

FENCES = {f: FenceInfo.create(f, f, [tag]) for f, tag in (("cafe-1", "coffee"), ("cafe-2", "coffee"), ("shop", "shop"))}
CAMPAIGNS = """
campaigns:
  - id: coffee
    priority: 2
    trigger: {on: enter, tags: [coffee]}
    offer: {title: "Coffee"}
    experiment: {holdout: 40%, variants: [{id: a}, {id: b, weight: 2}]}
    conversion: {visit: {tags: [coffee]}, within: 2h}
  - id: shop
    priority: 1
    trigger: {on: exit}
    offer: {title: "Shop"}
    experiment: {holdout: 50%}
    conversion: {within: 3h}   # any store: it takes the visits after a cafe exit from the coffee campaign
  - id: shop-return
    priority: 5
    trigger: {on: exit, tags: [shop]}
    offer: {title: "Come back"}
    experiment: {holdout: 50%}
    conversion: {within: 1h}
"""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def stores(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    if request.param == "memory":
        yield MemoryCounters(), MemoryPending()
        return
    from campaigns.redis_counters import RedisCounters, RedisPending

    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    counters, pending = RedisCounters(url, prefix), RedisPending(url, prefix)
    yield counters, pending
    counters.client.close()
    pending.client.close()


def day(seed: int) -> list[Event]:
    """Visits of 60 devices to three stores over a day, as enter/exit events in time order."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(60):
        t = 1_773_400_000.0 + rng.uniform(0, 3600)
        for _ in range(int(rng.integers(1, 7))):
            fence = str(rng.choice(list(FENCES)))
            stay = float(rng.uniform(60, 1800))
            out += [Event("enter", f"d{d}", fence, t), Event("exit", f"d{d}", fence, t + stay, dwell_s=stay)]
            t += stay + float(rng.exponential(3000))
    return sorted(out, key=lambda e: (e.ts, e.device_id))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_live_counters_give_the_rows_of_the_report(stores: tuple[Any, Any], seed: int) -> None:
    campaign_set = loads_campaigns(CAMPAIGNS, fences=FENCES)
    counters, pending = stores
    live = LiveConversions(counters, pending, campaign_set, FENCES)
    decisions: list[Any] = []
    rules = CampaignRules(campaign_set, FENCES, on_decision=decisions.append)
    events = day(seed)
    for e in events:  # as a service: the event's visit is claimed, then the event is decided
        live.on_events([e])
        before = len(decisions)
        rules.evaluate([e], {}, e.ts)
        for d in decisions[before:]:
            live.on_decision(d)
    specs = specs_of(campaign_set, FENCES)
    arms = arm_names(specs)
    names, devices = list(FENCES), sorted({e.device_id for e in events}, key=lambda d: int(d[1:]))
    dev, fen = {d: i for i, d in enumerate(devices)}, {f: i for i, f in enumerate(names)}
    camp = {s.campaign_id: i for i, s in enumerate(specs)}
    rows = [(camp[v.campaign_id], arms.index("holdout" if v.outcome == "holdout" else (v.variant or "offer")),
             dev[d.event.device_id], fen[d.event.fence_id], d.event.ts)
            for d in decisions for v in d.verdicts if v.outcome in EXPOSED]
    ex = Exposures(*(np.asarray(c, float if i == 4 else np.int64) for i, c in enumerate(zip(*rows, strict=True))))
    ev = Events(np.asarray([KIND_CODES[e.kind] for e in events], np.int8), np.asarray([dev[e.device_id] for e in events]),
                np.asarray([fen[e.fence_id] for e in events]), np.asarray([e.ts for e in events]),
                np.asarray([e.dwell_s for e in events]), np.full(len(events), np.nan))
    batch = lift_report(ex, ev, specs, names, arms, min_exposed=1)
    for spec in specs:
        want = [r for r in batch.lift if r["campaign_id"] == spec.campaign_id]
        got = report_from_counts(spec, counters.counts(spec.campaign_id), min_exposed=1)["lift"]
        keys = ("level", "variant", "store", "exposed", "converted", "holdout_exposed", "holdout_converted")
        assert [[r[k] for k in keys] for r in got] == [[r[k] for k in keys] for r in want], spec.campaign_id
        # counters cannot see devices: their intervals treat exposures as independent (design effect 1)
        assert all(r.get("design_effect", [1, 1]) == [1, 1] for r in got)
        if spec.campaign_id != "coffee":  # last-exposure attribution: the exit after a cafe visit comes later
            assert sum(r["converted"] + r["holdout_converted"] for r in got if r["level"] == "campaign") > 0


def test_memory_pending_drops_a_devices_exposures_keep_s_after_the_one_needed_longest() -> None:
    """As the Redis hash's TTL (never shortened): ``keep_s`` after the add of the exposure whose window ends
    last; a device that never comes back does not keep its exposures for as long as the process runs."""
    from campaigns.live import Pending

    now = [1000.0]
    pending = MemoryPending(keep_s=50.0, clock=lambda: now[0])
    pending.add("a", Pending("t1", "c", "offer", "s1", 10.0, 110.0))  # window 100 s: kept until 1150
    now[0] = 1060.0
    pending.add("a", Pending("t2", "c", "offer", "s1", 20.0, 40.0))  # window 20 s: 1130 (the TTL stays 1150)
    pending.add("b", Pending("t3", "c", "offer", "s1", 20.0, 40.0))  # kept until 1130
    now[0] = 1140.0
    assert pending.claim("z", 30.0, {"c": 100.0}) is None  # (any call drops what expired: b)
    assert set(pending._by_device) == {"a"}
    assert pending.claim("a", 30.0, {"other": 100.0}) is None  # (no campaign of its: both kept)
    assert set(pending._by_device["a"]) == {"t1", "t2"}
    now[0] = 1150.0
    assert pending.claim("a", 30.0, {"c": 100.0}) is None  # both expired with their device's TTL
    assert pending._by_device == {} and pending._expires == {}


def test_memory_pending_exposures_are_out_of_the_collectors_sight() -> None:
    """A worker's pending exposures (its attribution windows' worth) are plain tuples in plain dicts: after a full
    collection none of them is tracked, so later full collections do not walk them; a claim still answers the
    exposure as it was added."""
    import gc

    from campaigns.live import Pending

    pending = MemoryPending(clock=lambda: 1000.0)
    added = [Pending(f"t{d}", "c", "offer", "s1", 10.0 + d, 1e9) for d in range(500)]
    for d, p in enumerate(added):
        pending.add(f"d{d}", p)
        pending.add(f"d{d}", Pending(f"u{d}", "other", "offer", "s2", 5.0, 1e9))
    gc.collect()
    assert not [x for mine in pending._by_device.values() for x in (mine, *mine.values()) if gc.is_tracked(x)]
    assert pending.claim("d7", 100.0, {"c": 1000.0}) == added[7]
    assert set(pending._by_device["d7"]) == {"u7"}


@pytest.mark.redis
def test_an_engine_calls_exposures_go_to_redis_in_one_round_trip(redis_url: str, redis_prefix: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending exposures and counters on one client (as a worker has them) are written together; what is
    written is what the two separate writes wrote (stores on two clients, the other prefix)."""
    import redis

    import campaigns._redis as R
    from campaigns.redis_counters import RedisCounters, RedisPending

    campaign_set = loads_campaigns(CAMPAIGNS, fences=FENCES)
    decisions: list[Any] = []
    CampaignRules(campaign_set, FENCES, on_decision=decisions.append).evaluate(
        [e for e in day(4) if e.kind == "enter"], {}, 1_773_500_000.0)
    assert sum(v.outcome in EXPOSED for d in decisions for v in d.verdicts) > 10
    client = redis.Redis.from_url(redis_url)
    one = (RedisCounters(client, f"{redis_prefix}:one"), RedisPending(client, f"{redis_prefix}:one"))
    two = (RedisCounters(redis_url, f"{redis_prefix}:two"), RedisPending(redis_url, f"{redis_prefix}:two"))
    trips: list[int] = []
    real = R.run_commands
    monkeypatch.setattr(R, "run_commands", lambda c, cmds: trips.append(len(cmds)) or real(c, cmds))
    try:
        LiveConversions(*one, campaign_set, FENCES).on_decisions(decisions)
        assert len(trips) == 1  # HSET/PEXPIRE of every exposure and one script call per group and campaign
        LiveConversions(*two, campaign_set, FENCES).on_decisions(decisions)
        assert len(trips) == 3  # two clients: a round trip each
        counts = [(one[0].counts(s.campaign_id), two[0].counts(s.campaign_id)) for s in specs_of(campaign_set, FENCES)]
        assert all(a == b for a, b in counts) and any(a for a, _ in counts)
        devices = sorted({d.event.device_id for d in decisions})
        assert ([client.hgetall(one[1].key(d)) for d in devices]
                == [client.hgetall(two[1].key(d)) for d in devices])
        assert 0 < client.pttl(one[1].key(devices[0])) <= 86400_000 + 7 * 86400_000
    finally:
        client.close()
        two[0].client.close()
        two[1].client.close()


def _engine_calls(live: LiveConversions, rules: CampaignRules, events: list[Event], size: int, together: bool) -> None:
    """Events in engine calls of ``size`` events, as a worker runs them: each call's decisions (one
    ``on_decisions``), then its events claim (one ``on_events`` per request of one event); with ``together``
    inside :meth:`LiveConversions.together`."""
    for i in range(0, len(events), size):
        call = events[i : i + size]
        with live.together() if together else contextlib.nullcontext():
            live.on_decisions(rules.evaluate(call, {}, call[-1].ts))
            for e in call:
                live.on_events([e])


@pytest.mark.parametrize("seed", [5, 6])
def test_together_counts_what_the_calls_one_by_one_count(stores: tuple[Any, Any], seed: int, redis_prefix: str,
                                                         request: pytest.FixtureRequest) -> None:
    """A block's exposures and claims written at its end give the counters and the pending exposures of the
    same calls written one by one (calls of 1 to 7 events, so blocks hold several claims and exposures)."""
    campaign_set = loads_campaigns(CAMPAIGNS, fences=FENCES)
    counters, pending = stores
    if isinstance(counters, MemoryCounters):
        other: tuple[Any, Any] = (MemoryCounters(), MemoryPending())
    else:
        from campaigns.redis_counters import RedisCounters, RedisPending

        url = request.getfixturevalue("redis_url")
        other = (RedisCounters(url, f"{redis_prefix}:apart"), RedisPending(url, f"{redis_prefix}:apart"))
    events = day(seed)
    for size, (c, p), together in ((1 + seed, stores, True), (1 + seed, other, False)):
        _engine_calls(LiveConversions(c, p, campaign_set, FENCES), CampaignRules(campaign_set, FENCES), events,
                      size, together)
    specs = specs_of(campaign_set, FENCES)
    got = [counters.counts(s.campaign_id) for s in specs]
    assert got == [other[0].counts(s.campaign_id) for s in specs]
    assert sum(v["converted"] for g in got for v in g.values()) > 0  # claims converted some exposures
    if isinstance(counters, MemoryCounters):
        assert pending._by_device == other[1]._by_device
    else:
        devices = sorted({e.device_id for e in events})
        assert ([pending.client.hgetall(pending.key(d)) for d in devices]
                == [other[1].client.hgetall(other[1].key(d)) for d in devices])
        other[0].client.close()
        other[1].client.close()


def test_together_keeps_a_claim_before_a_later_exposure() -> None:
    """A claim held before an exposure is written before it: the visit does not convert the exposure that
    came after it (written in the other order, it would)."""
    campaign_set = loads_campaigns(CAMPAIGNS, fences=FENCES)
    rules = CampaignRules(campaign_set, FENCES)
    exposure = Event("exit", "d1", "cafe-1", 1_773_400_000.0, dwell_s=60.0)
    visit = Event("exit", "d1", "shop", 1_773_400_900.0, dwell_s=300.0)  # started after the exposure
    decisions = rules.evaluate([exposure], {}, exposure.ts)
    assert any(v.outcome in EXPOSED for d in decisions for v in d.verdicts if v.campaign_id == "shop")
    for order, converted in (("claim first", 0), ("exposure first", 1)):
        counters = MemoryCounters()
        live = LiveConversions(counters, MemoryPending(), campaign_set, FENCES)
        with live.together():
            if order == "claim first":
                live.on_events([visit])
                live.on_decisions(decisions)
            else:
                live.on_decisions(decisions)
                live.on_events([visit])
        counts = counters.counts("shop")
        assert sum(v["converted"] for v in counts.values()) == converted, order


def test_together_writes_what_it_holds_when_the_block_fails() -> None:
    campaign_set = loads_campaigns(CAMPAIGNS, fences=FENCES)
    e = Event("exit", "d1", "cafe-1", 1_773_400_000.0, dwell_s=60.0)
    decisions = CampaignRules(campaign_set, FENCES).evaluate([e], {}, e.ts)
    counters = MemoryCounters()
    live = LiveConversions(counters, MemoryPending(), campaign_set, FENCES)
    with pytest.raises(RuntimeError, match="boom"), live.together():
        live.on_decisions(decisions)
        assert not counters.counts("shop")  # held
        raise RuntimeError("boom")
    assert sum(v["exposed"] for v in counters.counts("shop").values()) == 1


@pytest.mark.redis
def test_a_blocks_exposures_and_claims_go_in_one_round_trip(redis_url: str, redis_prefix: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    import campaigns._redis as R
    from campaigns.redis_counters import RedisCounters, RedisPending

    campaign_set = loads_campaigns(CAMPAIGNS, fences=FENCES)
    client = redis.Redis.from_url(redis_url)  # one client, as a worker has them
    counters, pending = RedisCounters(client, redis_prefix), RedisPending(client, redis_prefix)
    live = LiveConversions(counters, pending, campaign_set, FENCES)
    events = [e for e in day(7) if e.kind == "exit"][:40]
    decisions = CampaignRules(campaign_set, FENCES).evaluate(events, {}, events[-1].ts)
    trips: list[int] = []
    real = R.run_commands
    monkeypatch.setattr(R, "run_commands", lambda c, cmds: trips.append(len(cmds)) or real(c, cmds))
    try:
        with live.together():
            live.on_decisions(decisions)
            for e in events:
                live.on_events([e])
            assert not trips
        assert len(trips) == 1 or (len(trips) == 2 and trips[1] < trips[0])  # (+1: the conversions it won)
        assert any(counters.counts(s.campaign_id) for s in specs_of(campaign_set, FENCES))
    finally:
        client.close()
