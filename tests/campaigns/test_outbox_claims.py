"""A claim over many shards: the rounds of :meth:`campaigns.redis_outbox._Shards._claim_steps` against a model
of the claim script, and the claims of a real sharded outbox (one round trip while it holds few offers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import campaigns._redis as _redis
from campaigns import Offer
from campaigns.redis_outbox import _Shards

from .conftest import REDIS


def _planner(shards: int) -> _Shards:
    box = _Shards()
    box._setup("pxtest", shards, False, 30.0, 60.0, lambda: 1000.0)
    return box


def _entry(shard: int, i: int) -> list[Any]:
    body = json.dumps({"offer_id": f"of_{shard}_{i}", "campaign_id": "c", "device_id": "d", "fence_id": "f",
                       "ts": 1.0, "title": "t"})
    return [f"{i}-0".encode(), body.encode(), 1]


def _claim(box: _Shards, held: list[int], count: int) -> tuple[list[Any], list[list[tuple[int, int]]]]:
    """Run the claim's rounds against a model of the claim script: shard ``k`` holds ``held[k]`` entries and
    gives ``min(asked, left)`` of them, first in first out. Returns the entries and each round's (shard, asked)."""
    taken = [0] * len(held)
    rounds: list[list[tuple[int, int]]] = []
    steps = box._claim_steps("w", count, 1000.0)
    calls = next(steps)
    while True:
        asked = [(k, int(call[1][2])) for k, call in calls]
        rounds.append(asked)
        replies = []
        for k, q in asked:
            n = min(q, held[k] - taken[k])
            replies.append([_entry(k, taken[k] + j) for j in range(n)])
            taken[k] += n
        try:
            calls = steps.send(replies)
        except StopIteration as done:
            return done.value, rounds


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=20), st.integers(1, 120), st.integers(0, 40))
def test_a_claim_takes_what_it_may_and_never_more(held: list[int], count: int, turn: int) -> None:
    box = _planner(len(held))
    box._next = turn % len(held)
    got, rounds = _claim(box, held, count)
    assert len(got) == min(count, sum(held))  # as many as asked for while any shard holds one
    assert len(rounds[0]) == min(len(held), count) and sum(q for _, q in rounds[0]) == count
    claimed, left = 0, list(held)
    for asked in rounds:  # a round asks each shard at most once, for exactly what is still missing
        assert len({k for k, _ in asked}) == len(asked) and all(q >= 1 for _, q in asked)
        assert sum(q for _, q in asked) == count - claimed
        for k, q in asked:
            taken = min(q, left[k])
            claimed, left[k] = claimed + taken, left[k] - taken
    ids = [e.offer.offer_id for e in got]
    assert len(set(ids)) == len(ids)
    for k in range(len(held)):  # a shard's entries in their order
        mine = [int(x.rsplit("_", 1)[1]) for x in ids if x.startswith(f"of_{k}_")]
        assert mine == list(range(len(mine)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=20), st.integers(20, 120))
def test_few_offers_are_claimed_in_one_round(held: list[int], count: int) -> None:
    """While no shard holds as many as its share of the claim, one round (one round trip) takes them all."""
    got, rounds = _claim(_planner(len(held)), held, count)
    if all(held[k] < q for k, q in rounds[0]):
        assert len(rounds) == 1 and len(got) == sum(held)


def test_a_quiet_outbox_is_claimed_in_one_round() -> None:
    """16 shards, a few offers, a claim of 100: one round asks every shard once (6 or 7 each); a busy shard is
    asked again in the next round for what is still missing."""
    box = _planner(16)
    held = [0] * 16
    held[3], held[9] = 2, 1
    got, rounds = _claim(box, held, 100)
    assert len(got) == 3 and len(rounds) == 1
    assert sorted(k for k, _ in rounds[0]) == list(range(16)) and sum(q for _, q in rounds[0]) == 100
    held = [0] * 16
    held[5] = 500
    got, rounds = _claim(_planner(16), held, 100)
    assert len(got) == 100 and len(rounds) == 2
    assert rounds[1] == [(5, 100 - dict(rounds[0])[5])]
    got, rounds = _claim(_planner(16), [1] * 16, 3)  # fewer asked than shards: the shards a few at a time
    assert len(got) == 3 and rounds == [[(0, 1), (1, 1), (2, 1)]]


@REDIS
@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_a_sharded_outbox_claims_in_one_round_trip(where: str, request: pytest.FixtureRequest,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real outbox of 16 shards (a 3-master cluster, or one Redis) a claim of 100 while it holds 40 offers
    is one ``run_scripts`` call; claims of 15 then take 15, 15, 10, 0, every offer once."""
    from campaigns import RedisOutbox

    from .conftest import cluster_prefix, drop_cluster_keys

    if where == "cluster":
        prefix = cluster_prefix()
        box = RedisOutbox(request.getfixturevalue("redis_cluster_url"), prefix)
    else:
        prefix = request.getfixturevalue("redis_prefix")
        box = RedisOutbox(request.getfixturevalue("redis_url"), prefix, shards=16)
    try:
        for i in range(40):
            assert box.put(Offer(offer_id=f"of_{i}", campaign_id="c", device_id=f"d{i}", fence_id="f",
                                 ts=1000.0 + i, title="t"))
        calls: list[int] = []
        real = _redis.run_scripts

        def counted(client: Any, scripts: Any, **kw: Any) -> Any:
            calls.append(len(scripts))
            return real(client, scripts, **kw)

        monkeypatch.setattr(_redis, "run_scripts", counted)
        first = box.claim("w1", 15)
        assert calls[0] == 15 and len(first) == 15
        rest = [box.claim("w1", 15) for _ in range(3)]
        assert [len(x) for x in rest] == [15, 10, 0]
        ids = [e.offer.offer_id for e in first + rest[0] + rest[1]]
        assert sorted(ids) == sorted(f"of_{i}" for i in range(40))
        for e in first + rest[0] + rest[1]:
            assert box.ack(e)
        assert box.pending() == 0
        box.put(Offer(offer_id="of_last", campaign_id="c", device_id="d", fence_id="f", ts=2000.0, title="t"))
        calls.clear()
        (e,) = box.claim("w2", 100)
        assert calls == [16] and e.offer.offer_id == "of_last"  # every shard asked, in one call
    finally:
        if where == "cluster":
            drop_cluster_keys(box.client, prefix)
        box.close()
