"""Report counters, memory and real Redis: counted once per token, one cluster slot per campaign,
and the same lift rows as the report over arrays."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import _kernels as K
from campaigns.conversions import Events, Exposures, Spec
from campaigns.counters import Increment, MemoryCounters, report_from_counts
from campaigns.report import lift_report


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def counters(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    from campaigns.redis_counters import RedisCounters

    c = RedisCounters(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    yield c
    c.client.close()


def test_each_token_counts_once(counters: Any) -> None:
    incs = [Increment("c1", "holdout", "s1", "exposed", "of_1"), Increment("c1", "a", "s1", "exposed", "of_2"),
            Increment("c1", "a", "s1", "converted", "of_2"), Increment("c2", "offer", "s9", "exposed", "of_1")]
    assert counters.add(incs, now=1000.0) == 4
    assert counters.add(incs[:3], now=1001.0) == 0  # a retried batch
    assert counters.add([Increment("c1", "a", "s2", "exposed", "of_3")], now=1002.0) == 1
    assert counters.counts("c1") == {("holdout", "s1"): {"exposed": 1, "converted": 0},
                                     ("a", "s1"): {"exposed": 1, "converted": 1},
                                     ("a", "s2"): {"exposed": 1, "converted": 0}}
    assert counters.counts("c2") == {("offer", "s9"): {"exposed": 1, "converted": 0}}
    assert counters.counts("nope") == {}


def test_threads_racing_on_the_same_tokens_count_each_once(counters: Any) -> None:
    incs = [Increment("c", "a" if i % 2 else "holdout", f"s{i % 3}", "exposed", f"t{i}") for i in range(300)]
    done: list[int] = []

    def work() -> None:
        for i in range(0, len(incs), 25):
            done.append(counters.add(incs[i:i + 25], now=5.0))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(done) == 300
    assert sum(c["exposed"] for c in counters.counts("c").values()) == 300


@pytest.mark.redis
def test_redis_keys_of_a_campaign_share_one_cluster_slot(redis_url: str, redis_prefix: str) -> None:
    from redis.crc import key_slot

    from campaigns.redis_counters import RedisCounters

    c = RedisCounters(redis_url, redis_prefix, keep_s=100.0)
    c.add([Increment("spring-sale", "a", "s1", "exposed", "x")], now=10.0)
    keys = sorted(k.decode() for k in c.client.scan_iter(match=f"{redis_prefix}*"))
    assert keys == [c.key("spring-sale"), c.key("spring-sale") + ":seen"]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert 0 < c.client.pttl(keys[1]) <= 100_000  # remembered tokens expire
    c.add([Increment("spring-sale", "a", "s1", "exposed", "y")], now=500.0)  # x is forgotten after keep_s
    assert c.client.zrange(keys[1], 0, -1) == [b"exposed:y"]
    c.client.close()


# one call: its time step (s) and its increments as (campaign, measure, token) from small pools, so that
# tokens repeat, within the keep time and after it
_calls = st.lists(st.tuples(st.floats(min_value=0, max_value=40, allow_nan=False),
                            st.lists(st.tuples(st.sampled_from(["c1", "c2"]), st.sampled_from(["exposed", "converted"]),
                                               st.sampled_from(["t0", "t1", "t2", "t3", "t4"])),
                                     min_size=1, max_size=6)),
                  min_size=1, max_size=30)


@pytest.mark.redis
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=_calls)
def test_memory_counters_forget_and_count_as_the_redis_script_does(redis_url: str, redis_prefix: str,
                                                                    calls: list[Any]) -> None:
    """The Redis script is the oracle: a token is forgotten once it was seen more than ``keep_s`` before a
    call's time (then it counts again), whatever the number of tokens remembered."""
    from campaigns.redis_counters import RedisCounters

    run = uuid.uuid4().hex[:8]  # fresh keys per example (the prefix lives across examples)
    memory, redis = MemoryCounters(keep_s=60.0), RedisCounters(redis_url, f"{redis_prefix}:{run}", keep_s=60.0)
    try:
        t = 1_700_000_000.0
        for step, incs in calls:
            t += step
            batch = [Increment(c, "a", "s1", m, tok) for c, m, tok in incs]
            assert memory.add(batch, now=t) == redis.add(batch, now=t)
        for cid in ("c1", "c2"):
            assert memory.counts(cid) == redis.counts(cid)
    finally:
        redis.client.close()


def test_report_from_counts_gives_the_rows_of_the_array_report() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    arm = rng.integers(0, 3, n)  # holdout, a, b
    store = rng.integers(0, 4, n)
    device = np.arange(n)
    converted = rng.random(n) < np.where(arm == 0, 0.2, 0.3)
    k = int(converted.sum())
    names = ["holdout", "offer", "a", "b"]
    arm_code = np.where(arm == 0, 0, arm + 1)
    spec = Spec("c", holdout=0.33, variants=("a", "b"))
    stores = ["s0", "s1", "s2", "s3"]
    ex = Exposures(np.zeros(n, np.int64), arm_code, device, store, np.zeros(n))
    events = Events(np.full(k, K.ENTER, np.int8), device[converted], store[converted], np.full(k, 50.0),
                    np.zeros(k), np.full(k, np.nan))
    want = lift_report(ex, events, [spec], stores, names).lift
    mem = MemoryCounters()
    mem.add([Increment("c", names[arm_code[i]], stores[store[i]], "exposed", f"e{i}") for i in range(n)])
    mem.add([Increment("c", names[arm_code[i]], stores[store[i]], "converted", f"e{i}") for i in np.flatnonzero(converted)])
    assert report_from_counts(spec, mem.counts("c"))["lift"] == want
    assert want[0]["status"] == "significant"
