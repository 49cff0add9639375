"""The cap suite: the same tests for MemoryLimiter and RedisLimiter (single call and cluster mode)."""

from __future__ import annotations

import gc
import math
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from campaigns import Cap, CapCheck, MemoryLimiter
from campaigns.limiter import window_start

PARIS = ZoneInfo("Europe/Paris")


def rolling(name: str, limit: int, window: float, now: float, scope: str = "device", owner: str = "d1") -> CapCheck:
    return CapCheck(label=name, scope=scope, scope_id=owner, name=name, limit=limit, since=now - window, ttl_s=window)  # type: ignore[arg-type]


def test_rolling_window_is_exact(limiter: Any) -> None:
    t0 = 1_700_000_000.0
    assert limiter.acquire("a", [rolling("c", 2, 60, t0)], t0).ok
    assert limiter.acquire("b", [rolling("c", 2, 60, t0 + 10)], t0 + 10).ok
    g = limiter.acquire("c", [rolling("c", 2, 60, t0 + 59)], t0 + 59)
    assert not g.ok and g.blocked_by == "c" and g.used == 2
    # at t0+60 the first issue is exactly one window old: still inside; a moment later it is out
    assert not limiter.acquire("d", [rolling("c", 2, 60, t0 + 60)], t0 + 60).ok
    assert limiter.acquire("e", [rolling("c", 2, 60, t0 + 60.5)], t0 + 60.5).ok
    assert not limiter.acquire("f", [rolling("c", 2, 60, t0 + 69)], t0 + 69).ok
    assert limiter.acquire("g", [rolling("c", 2, 60, t0 + 70.5)], t0 + 70.5).ok


def test_all_caps_or_none(limiter: Any) -> None:
    t = 1_700_000_000.0
    full = rolling("full", 1, 3600, t)
    assert limiter.acquire("x", [full], t).ok
    free = rolling("free", 5, 3600, t)
    budget = rolling("budget", 5, 3600, t, scope="campaign", owner="camp")
    g = limiter.acquire("y", [budget, free, full], t + 1)
    assert not g.ok and g.blocked_by == "full"
    assert limiter.usage(free, t + 1) == 0
    assert limiter.usage(budget, t + 1) == 0  # refunded (cluster mode) or never taken (one script)
    assert limiter.acquire("z", [budget, free], t + 2).ok
    assert limiter.usage(free, t + 2) == 1 and limiter.usage(budget, t + 2) == 1


def test_a_full_budget_takes_no_device_place_and_is_named_first(limiter: Any) -> None:
    """A budget that refuses leaves the device's caps as they were (cluster mode asks both slots at once and
    gives the device's place back), and when both refuse, the budget is the one named, as asking the budget
    first would answer."""
    t = 1_700_000_000.0
    budget = rolling("budget", 1, 3600, t, scope="campaign", owner="camp")
    assert limiter.acquire("x", [budget, rolling("cap", 1, 3600, t, owner="d0")], t).ok
    cap = rolling("cap", 1, 3600, t)
    g = limiter.acquire("y", [budget, cap], t + 1)
    assert not g.ok and g.blocked_by == "budget" and g.used == 1
    assert limiter.usage(cap, t + 1) == 0
    assert limiter.acquire("y2", [cap], t + 2).ok  # the device's place was free all along
    g = limiter.acquire("z", [budget, cap], t + 3)
    assert not g.ok and g.blocked_by == "budget"
    assert limiter.usage(cap, t + 3) == 1 and limiter.usage(budget, t + 3) == 1


@pytest.mark.redis
def test_on_a_cluster_one_offer_asks_its_slots_in_one_round_trip(redis_cluster_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from campaigns import RedisLimiter, _redis

    lim = RedisLimiter(redis_cluster_url, f"t{uuid.uuid4().hex[:10]}")
    calls: list[int] = []
    run = _redis.run_scripts
    monkeypatch.setattr(_redis, "run_scripts", lambda client, c, **kw: calls.append(len(c)) or run(client, c, **kw))
    try:
        t = 1_700_000_000.0
        checks = [rolling("budget", 5, 3600, t, scope="campaign", owner="camp"), rolling("cap", 5, 3600, t)]
        assert lim.acquire("a", checks, t).ok
        assert calls == [2]  # both slots' scripts, one call
        assert lim.usage(checks[0], t) == 1 and lim.usage(checks[1], t) == 1
    finally:
        lim.client.delete(lim.key(checks[0]), lim.key(checks[1]))
        lim.close()


def test_same_token_is_not_counted_twice(limiter: Any) -> None:
    t = 1_700_000_000.0
    checks = [rolling("c", 3, 100, t), rolling("b", 9, 100, t, scope="campaign", owner="k")]
    first = limiter.acquire("offer-1", checks, t)
    again = limiter.acquire("offer-1", checks, t)
    assert first.ok and not first.duplicate
    assert again.ok and again.duplicate
    assert limiter.usage(checks[0], t) == 1 and limiter.usage(checks[1], t) == 1


def test_release_gives_the_place_back(limiter: Any) -> None:
    t = 1_700_000_000.0
    c = rolling("c", 1, 100, t)
    assert limiter.acquire("a", [c], t).ok
    assert not limiter.acquire("b", [c], t).ok
    limiter.release("a", [c])
    assert limiter.acquire("b", [c], t).ok


def test_caps_of_other_devices_and_campaigns_are_separate(limiter: Any) -> None:
    t = 1_700_000_000.0
    assert limiter.acquire("a", [rolling("c", 1, 100, t, owner="d1")], t).ok
    assert limiter.acquire("b", [rolling("c", 1, 100, t, owner="d2")], t).ok
    assert limiter.acquire("c", [rolling("c", 1, 100, t, scope="campaign", owner="d1")], t).ok
    assert not limiter.acquire("d", [rolling("c", 1, 100, t, owner="d1")], t).ok


def test_calendar_day_in_the_devices_zone(limiter: Any) -> None:
    cap = Cap(max=1, window_s=86400, kind="calendar")
    # 2026-03-10 23:30 in Paris (22:30 UTC), then 23:50, then 00:10 the next local day
    t1 = 1773181800.0
    def check(t: float) -> CapCheck:
        return CapCheck("day", "device", "d1", "day", 1, window_start(cap, t, PARIS), 2 * 86400)

    assert limiter.acquire("a", [check(t1)], t1).ok
    assert not limiter.acquire("b", [check(t1 + 1200)], t1 + 1200).ok
    assert limiter.acquire("c", [check(t1 + 2400)], t1 + 2400).ok  # a new day in Paris (still the same UTC day)


def test_calendar_windows_start_at_local_midnight_across_dst() -> None:
    cap7 = Cap(max=1, window_s=7 * 86400, kind="calendar")
    # 2026-03-30 12:00 Paris (CEST, after the 29 March switch): window starts 2026-03-24 00:00 CET (+01:00)
    now = 1774864800.0
    assert window_start(cap7, now, PARIS) == 1774306800.0
    cap1 = Cap(max=1, window_s=86400, kind="calendar")
    assert window_start(cap1, now, PARIS) == 1774821600.0  # 2026-03-30 00:00 +02:00
    assert window_start(cap1, now, None) == 1774828800.0  # UTC midnight
    assert window_start(Cap(1, 3600), now, PARIS) == now - 3600


def test_budget_total_never_expires(limiter: Any) -> None:
    t = 1_700_000_000.0
    total = CapCheck("budget total 2", "campaign", "camp", "total", 2, -math.inf, 0.0)
    assert limiter.acquire("a", [total], t).ok
    assert limiter.acquire("b", [total], t + 86400 * 365).ok
    g = limiter.acquire("c", [total], t + 86400 * 800)
    assert not g.ok and g.blocked_by == "budget total 2"


ops = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=50, allow_nan=False),  # time step
        st.sets(st.sampled_from(["a", "b", "g"]), min_size=1),  # caps of this offer
    ),
    min_size=1,
    max_size=40,
)
CAPS = {"a": (2, 30.0, "device"), "b": (3, 100.0, "device"), "g": (4, 1e9, "campaign")}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_limiter_matches_a_brute_force_oracle(limiter: Any, ops: list[tuple[float, set[str]]]) -> None:
    """Whatever the order of offers and caps, a grant happens exactly when every cap has room."""
    run = uuid.uuid4().hex[:8]  # fresh counters per example (the fixture lives across examples)
    granted: list[tuple[float, set[str]]] = []
    t = 1_700_000_000.0
    for i, (step, names) in enumerate(ops):
        t += step
        checks = [
            CapCheck(n, CAPS[n][2], f"o{run}", f"{run}{n}", CAPS[n][0], t - CAPS[n][1], CAPS[n][1])  # type: ignore[arg-type]
            for n in sorted(names)
        ]
        room = all(
            sum(1 for gt, gn in granted if n in gn and gt >= t - CAPS[n][1]) < CAPS[n][0] for n in names
        )
        g = limiter.acquire(f"{run}-{i}", checks, t)
        assert g.ok == room
        if room:
            granted.append((t, set(names)))


def test_memory_limiter_is_atomic_across_threads() -> None:
    import threading

    lim = MemoryLimiter()
    now = time.time()
    wins = []

    def hammer(k: int) -> None:
        for i in range(200):
            c = rolling("c", 37, 3600, now)
            if lim.acquire(f"{k}-{i}", [c], now).ok:
                wins.append(1)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(wins) == 37


@pytest.mark.redis
def test_redis_keys_carry_the_device_hash_tag(redis_url: str, redis_prefix: str) -> None:
    from campaigns import RedisLimiter

    lim = RedisLimiter(redis_url, redis_prefix)
    t = time.time()
    lim.acquire("tok", [rolling("c:x:0", 1, 60, t, owner="dev-7"), rolling("total", 1, 60, t, scope="campaign", owner="x")], t)
    keys = sorted(k.decode() for k in lim.client.scan_iter(match=f"{redis_prefix}*"))
    assert keys == [f"{redis_prefix}:budget:{{x}}:total", f"{redis_prefix}:cap:{{dev-7}}:c:x:0"]
    ttl = lim.client.pttl(f"{redis_prefix}:cap:{{dev-7}}:c:x:0")
    waited_ms = (time.time() - t) * 1000  # a loaded machine may stall between the acquire and the read
    assert 60_000 - waited_ms < ttl <= 61_000
    lim.forget("dev-7")
    assert list(lim.client.scan_iter(match=f"{redis_prefix}:cap:*")) == []
    lim.client.close()


def test_a_late_event_still_sees_what_its_window_holds(limiter: Any) -> None:
    """A newer check that was refused (by another cap) must not forget entries an older event's window holds."""
    t = 1_700_000_000.0
    assert limiter.acquire("a", [rolling("g", 1, 100, t)], t).ok
    # 150 s later: the shared cap has room, but the offer is refused by its own full cap (nothing is added)
    assert limiter.acquire("x", [rolling("full", 1, 1000, t - 500)], t - 500).ok
    g = limiter.acquire("b", [rolling("g", 1, 100, t + 150), rolling("full", 1, 1000, t + 150)], t + 150)
    assert not g.ok and g.blocked_by == "full"
    # an event from t + 40 arrives late: its window [t - 60, t + 40] holds the first offer
    late = limiter.acquire("c", [rolling("g", 1, 100, t + 40)], t + 40)
    assert not late.ok and late.blocked_by == "g" and late.used == 1


# one step: its time step (s), then an acquire of a token (from a small pool: tokens come back, within the
# window and after it) or the release of one
_steps = st.lists(st.tuples(st.floats(min_value=0, max_value=25, allow_nan=False), st.booleans(),
                            st.sampled_from(["o1", "o2", "o3", "o4", "o5", "o6"])), min_size=1, max_size=40)


@pytest.mark.redis
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps)
@example(steps=[(0, True, "o2"), (1, True, "o1"), (1, False, "o1"), (48, True, "o1"), (75, True, "o3"), (1, True, "o1")])
def test_memory_limiter_trims_tokens_as_redis_does(redis_url: str, redis_prefix: str,
                                                   steps: list[tuple[float, bool, str]]) -> None:
    """With tokens taken again, released and expiring (the memory limiter forgets them off a heap, not by a
    scan), the memory and Redis limiters give the same grants and the same usage."""
    from campaigns import RedisLimiter

    run = uuid.uuid4().hex[:8]
    memory, redis = MemoryLimiter(), RedisLimiter(redis_url, f"{redis_prefix}:{run}")
    try:
        t = 1_700_000_000.0
        for step, take, token in steps:
            t += step
            checks = [rolling("day", 3, 60.0, t), rolling("budget", 4, 90.0, t, scope="campaign", owner="c")]
            if take:
                assert memory.acquire(token, checks, t) == redis.acquire(token, checks, t)
            else:
                memory.release(token, checks)
                redis.release(token, checks)
            assert [memory.usage(c, t) for c in checks] == [redis.usage(c, t) for c in checks]
    finally:
        redis.close()


def test_memory_caps_of_devices_that_never_come_back_are_forgotten() -> None:
    """A cap's entries go once no check can count them (two TTLs and a day after its last offer, as a Redis
    key expires after its TTL); a total budget keeps its entries."""
    lim = MemoryLimiter()
    t = 1_700_000_000.0
    total = CapCheck("budget total", "campaign", "c", "total", 10_000, -math.inf, 0.0)
    for d in range(100):
        assert lim.acquire(f"o{d}", [rolling("day", 1, 3600, t, owner=f"d{d}"), total], t).ok
    assert len(lim._times) == 101
    gone = t + 2 * 3600 + 86400 + 3600
    assert lim.acquire("late", [rolling("day", 1, 3600, gone - 1, owner="z")], gone - 1).ok
    assert len(lim._times) == 102  # not yet
    assert lim.acquire("next", [rolling("day", 1, 3600, gone + 1, owner="z2")], gone + 1).ok
    assert set(lim._times) == {("campaign", "c", "total"), ("device", "z", "day"), ("device", "z2", "day")}
    assert lim._tokens.keys() == lim._times.keys()
    assert set(lim._ages) == {("campaign", "c", "total")}  # a budget's tokens as a heap; a device's scanned
    assert lim.usage(total, gone + 1) == 100


def test_memory_caps_of_devices_are_out_of_the_collectors_sight() -> None:
    """A worker's device caps are kept in objects the garbage collector does not track: its full collections
    walk every tracked object alive, and four lists an offer (two caps) made them 265 ms long with 100,000
    devices' caps (proximity.service.collector)."""
    lim = MemoryLimiter()
    t = 1_700_000_000.0
    budget = rolling("budget", 10_000, 86400, t, scope="campaign", owner="c")
    for d in range(1000):
        checks = [rolling("day", 1, 86400, t + d, owner=f"d{d}"), rolling("week", 3, 7 * 86400, t + d, owner=f"d{d}"),
                  budget]
        assert lim.acquire(f"o{d}", checks, t + d).ok
    gc.collect()  # (a new tuple is tracked until a collection finds only untracked items in it)
    tables = (lim._times, lim._tokens, lim._ages, lim._expiry)
    tracked = [o for table in tables for o in (*table, *table.values()) if gc.is_tracked(o)]
    assert len(tracked) == 2  # the budget's times and its heap of tokens; none of the 2,000 device caps'
    key = ("device", "d7", "day")
    assert not gc.is_tracked(lim._times[key]) and not gc.is_tracked(lim._tokens[key])
    assert lim.usage(rolling("day", 1, 86400, t + 7, owner="d7"), t + 7) == 1
    lim.release("o7", [rolling("day", 1, 86400, t + 7, owner="d7")])
    assert lim.usage(rolling("day", 1, 86400, t + 7, owner="d7"), t + 7) == 0
