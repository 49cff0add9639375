"""The outbox suite, for MemoryOutbox and RedisOutbox."""

from __future__ import annotations

import time
from typing import Any

from campaigns import Offer


def offer(i: int, deliver_after: float | None = None) -> Offer:
    return Offer(offer_id=f"of_{i:04d}", campaign_id="c", device_id=f"d{i}", fence_id="f", ts=1000.0 + i,
                 title=f"t{i}", data={"k": i}, deliver_after=deliver_after)


def idle(outbox: Any, clock: Any) -> None:
    """Let claims go stale: the memory outbox reads the fake clock, Redis its own."""
    clock.t += outbox.claim_idle_s + 1
    if type(outbox).__name__ == "RedisOutbox":
        time.sleep(outbox.claim_idle_s + 0.1)


def test_put_is_idempotent_and_claims_in_order(outbox: Any) -> None:
    assert outbox.put(offer(1)) and outbox.put(offer(2))
    assert not outbox.put(offer(1))
    assert outbox.pending() == 2
    got = outbox.claim("w1", 10)
    if getattr(outbox, "shards", 1) > 1:  # first in, first out within a shard only
        got.sort(key=lambda e: e.offer.offer_id)
    assert [e.offer for e in got] == [offer(1), offer(2)]
    assert outbox.claim("w2", 10) == []  # claimed by w1 and not idle yet
    assert outbox.ack(got[0]) is True
    assert outbox.ack(got[0]) is False  # the second ack of one offer id is refused
    assert outbox.is_delivered("of_0001") and not outbox.is_delivered("of_0002")
    assert outbox.pending() == 1


def test_offer_ids_are_remembered_for_the_dedup_time(outbox: Any, clock: Any) -> None:
    """A put of the same id, and a delivered mark, last ``dedup_ttl_s``, then are forgotten by a later put or ack
    (of the same shard, on Redis): a long-running memory outbox does not keep every id it saw."""
    outbox.dedup_ttl_s = 100.0
    assert outbox.put(offer(1))
    clock.t += 99
    assert not outbox.put(offer(1))  # within the time: the same offer
    got = outbox.claim("w1", 10)
    assert outbox.ack(got[0]) is True and outbox.is_delivered("of_0001")
    if getattr(outbox, "shards", 1) > 1:
        return  # a put or an ack forgets the old ids of its own shard only
    clock.t += 2  # of_0001's put is 101 s old: the next put forgets it
    assert outbox.put(offer(2))
    assert outbox.put(offer(1))  # taken as new...
    got = outbox.claim("w1", 10)
    assert [e.offer.offer_id for e in got] == ["of_0002"]  # ...but delivered within the time: not sent again
    clock.t += 99  # of_0001's delivered mark is 101 s old: the next ack forgets it
    assert outbox.ack(got[0]) is True and not outbox.is_delivered("of_0001")
    if type(outbox).__name__ == "MemoryOutbox":
        assert list(outbox._ids) == ["of_0002", "of_0001"] and list(outbox._delivered) == ["of_0002"]


def test_entries_of_a_dead_consumer_are_claimed_by_another(outbox: Any, clock: Any) -> None:
    for i in range(5):
        outbox.put(offer(i))
    lost = outbox.claim("dies", 3)
    assert len(lost) == 3
    rest = outbox.claim("lives", 10)
    if getattr(outbox, "shards", 1) > 1:
        assert len(rest) == 2 and {e.offer.offer_id for e in rest}.isdisjoint(e.offer.offer_id for e in lost)
    else:
        assert [e.offer.offer_id for e in rest] == ["of_0003", "of_0004"]
    for e in rest:
        outbox.ack(e)
    idle(outbox, clock)
    taken = outbox.claim("lives", 10)
    assert sorted(e.offer.offer_id for e in taken) == sorted(e.offer.offer_id for e in lost)
    assert all(e.deliveries >= 2 for e in taken)
    for e in taken:
        assert outbox.ack(e)
    assert outbox.pending() == 0


def test_held_offers_wait_for_their_time(outbox: Any, clock: Any) -> None:
    outbox.put(offer(1, deliver_after=clock.t + 100))
    outbox.put(offer(2))
    assert [e.offer.offer_id for e in outbox.claim("w")] == ["of_0002"]
    assert outbox.pending() == 2
    clock.t += 100
    (e,) = outbox.claim("w")
    assert e.offer == offer(1, deliver_after=clock.t)
    outbox.ack(e)


def test_dead_letters(outbox: Any) -> None:
    outbox.put(offer(7))
    (e,) = outbox.claim("w")
    outbox.dead(e, "gave up", 6)
    assert outbox.pending() == 0
    (letter,) = outbox.dead_letters()
    assert (letter.offer, letter.reason, letter.attempts) == (offer(7), "gave up", 6)


def test_ack_many_answers_each_entry_in_its_place(outbox: Any) -> None:
    for i in range(6):
        outbox.put(offer(i))
    got = outbox.claim("w", 10)
    assert outbox.ack_many([]) == []
    assert outbox.ack_many(got[:4]) == [True] * 4
    # the first four a second time (refused, as a second ``ack``), the last two for the first time
    assert outbox.ack_many(got) == [False] * 4 + [True] * 2
    assert outbox.pending() == 0 and all(outbox.is_delivered(e.offer.offer_id) for e in got)
