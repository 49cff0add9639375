"""Batched decisions on one Redis (:class:`campaigns.redis_offers.RedisOffers`): every event of a ``decide`` asks
for its caps and writes its offer in one round trip, with the answers of one event at a time."""

from __future__ import annotations

import random
from typing import Any

import pytest

from campaigns import CampaignRules, RedisLimiter, RedisOutbox, loads_campaigns
from campaigns.redis_offers import RedisOffers
from proximity.events import Device, Event

from .test_decider import FENCES, MON_10

pytestmark = pytest.mark.redis

CAMPAIGNS = """
defaults:
  limits:
    per_device: [{max: 2, window: 1d}]
  quiet_hours: {hours: "20:00-08:00", mode: hold}
campaigns:
  - id: coffee
    priority: 20
    trigger: {on: enter, tags: [coffee]}
    offer: {title: "Hi {device.first_name|there}"}
    limits: {per_device: {max: 1, window: 1d}, budget: {total: 6}}
  - id: any-enter
    priority: 10
    trigger: {on: enter}
    offer: {title: "Welcome to {store.name}"}
    limits: {budget: {total: 15, per_day: 9}, cooldown: 2h}
  - id: bye
    priority: 5
    trigger: {on: exit}
    offer: {title: "See you", delay: 20m}
"""


def _events(seed: int) -> list[list[Event]]:
    """Batches of enters and exits of a few devices at three stores over two days (quiet hours included),
    a device often back at a store it just left (its delayed offer cancelled) within one batch."""
    rng = random.Random(seed)
    t, out = MON_10, []
    for _ in range(40):
        batch = []
        for _ in range(rng.randrange(0, 9)):
            t += rng.choice([30.0, 300.0, 3600.0, 7200.0])
            device, fence = f"d{rng.randrange(6)}", rng.choice(list(FENCES))
            kind = rng.choice(["enter", "exit"])
            batch.append(Event(kind=kind, device_id=device, fence_id=fence, ts=t))  # type: ignore[arg-type]
            if kind == "exit" and rng.random() < 0.3:  # back at once
                t += 30.0
                batch.append(Event(kind="enter", device_id=device, fence_id=fence, ts=t))
        out.append(batch)
    return out


def _run(rules: CampaignRules, outbox: RedisOutbox, batches: list[list[Event]]) -> tuple[list[Any], Any, Any]:
    devices = {f"d{i}": Device(f"d{i}", {"first_name": "Ann"} if i % 2 else {}) for i in range(6)}
    decisions = [d.to_dict() | {"offer": d.offer.to_dict() if d.offer else None}
                 for batch in batches for d in rules.evaluate(batch, devices, batch[-1].ts if batch else MON_10)]
    entries = outbox.claim("w", 1000, now=MON_10 + 10 * 86400)
    return decisions, sorted(e.offer.offer_id for e in entries), outbox.drop_counts()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batched_decisions_answer_as_one_event_at_a_time(redis_url: str, redis_prefix: str, seed: int) -> None:
    fixed = lambda: MON_10  # noqa: E731  (the outbox's put time: the same in both runs)
    got = []
    for name, batched in (("one", False), ("batched", True)):
        limiter = RedisLimiter(redis_url, f"{redis_prefix}:{name}")
        outbox = RedisOutbox(limiter.client, f"{redis_prefix}:{name}", clock=fixed)
        batch = RedisOffers.of(limiter, outbox) if batched else None
        assert (batch is not None) == batched
        rules = CampaignRules(loads_campaigns(CAMPAIGNS, fences=FENCES), FENCES, limiter=limiter, outbox=outbox,
                              batch=batch)
        batches = _events(seed)
        # the reference: one event per call, one script call per cap check and per outbox write
        got.append(_run(rules, outbox, batches if batched else [[e] for b in batches for e in b]))
    (one, one_ids, one_drops), (many, many_ids, many_drops) = got
    assert many == one
    assert many_ids == one_ids and many_drops == one_drops
    outcomes = {v["outcome"] for d in one for v in d["verdicts"]}
    assert {"offer", "held", "blocked", "outranked"} <= outcomes  # the run goes through every path
    assert one_drops["cancelled"] > 0


def test_a_cluster_or_memory_limiter_has_no_batched_path(redis_url: str, redis_prefix: str) -> None:
    from campaigns import MemoryLimiter, MemoryOutbox

    limiter = RedisLimiter(redis_url, redis_prefix, cluster=True)  # the cluster protocol: two slots, two calls
    assert RedisOffers.of(limiter, RedisOutbox(limiter.client, redis_prefix)) is None
    assert RedisOffers.of(MemoryLimiter(), MemoryOutbox()) is None


def test_the_early_cancels_go_with_the_batchs_round_trip(redis_url: str, redis_prefix: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of enters cancels their delayed offers in the round trip of their caps and outbox writes: one
    round trip when nothing was delayed, one more when it drops held offers; and the delayed offer of an
    exit is cancelled by the enter that follows it in a later batch, as one event at a time does."""
    import campaigns._redis as R

    limiter = RedisLimiter(redis_url, redis_prefix)
    outbox = RedisOutbox(limiter.client, redis_prefix, clock=lambda: MON_10)
    rules = CampaignRules(loads_campaigns(CAMPAIGNS, fences=FENCES), FENCES, limiter=limiter, outbox=outbox,
                          batch=RedisOffers.of(limiter, outbox))
    trips: list[int] = []
    real = R.run_commands
    monkeypatch.setattr(R, "run_commands", lambda c, cmds: trips.append(len(cmds)) or real(c, cmds))
    fence = next(iter(FENCES))
    enters = [Event(kind="enter", device_id=f"d{i}", fence_id=fence, ts=MON_10 + i) for i in range(3)]
    rules.evaluate(enters, {}, MON_10)
    assert len(trips) == 1 and trips[0] == 3 + 3  # three cancel takes and three decisions
    exit_ = Event(kind="exit", device_id="d0", fence_id=fence, ts=MON_10 + 600)
    assert [d.offer.delayed for d in rules.evaluate([exit_], {}, exit_.ts) if d.offer] == [True]
    del trips[:]
    again = Event(kind="enter", device_id="d0", fence_id=fence, ts=MON_10 + 700)
    rules.evaluate([again], {}, again.ts)
    assert len(trips) == 2  # the take found the exit's delayed offer: its drop is a second round trip
    assert outbox.drop_counts()["cancelled"] == 1
