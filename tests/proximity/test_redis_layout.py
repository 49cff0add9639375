"""The state store's key layout on Redis Cluster (``proximity._redis.layout``): device groups, the layout
marker and its refusals, the migration of the per-device layout of earlier versions, and a batch that meets
a device group's slot in the middle of a slot migration.

Run on one Redis in cluster mode and on a real 3-master cluster started for the session.
"""

from __future__ import annotations

import math
import uuid
from binascii import crc_hqx
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence import FenceIndex, circle_fence
from proximity._redis import slot_tags
from proximity._redis.cluster import SLOTS
from proximity._redis.layout import Layout
from proximity._redis.migrate import migrate
from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.errors import StateError, StoreUnavailable
from proximity.store import RedisStore

LON0, LAT0 = 2.35, 48.85
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
T0 = 1_700_000_000.0
FENCES = [circle_fence("cafe", LON0, LAT0, 40.0), circle_fence("bank", LON0 + 500 * M_LON, LAT0, 40.0)]
CONFIG = EngineConfig(max_future_skew_s=None, profile="crossing")
DEVICES = [f"dev-{i}" for i in range(30)] + ["shop}1", "é-ü", "{x}"]


def pings(rows: list[tuple[str, float, float]]) -> PingBatch:
    """``(device, t, metres east)`` with 5 m accuracy."""
    return PingBatch.from_arrays([r[0] for r in rows], [LON0 + r[2] * M_LON for r in rows], [LAT0] * len(rows),
                                 5.0, [T0 + r[1] for r in rows])


@pytest.fixture(params=["cluster-mode", "real-cluster"])
def where(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, bool]]:
    """(URL, prefix, real cluster?): one Redis run in cluster mode, or a real cluster (keys removed
    afterwards)."""
    if request.param == "real-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        prefix = f"t{uuid.uuid4().hex[:12]}"
        yield url, prefix, True
        client = RedisStore(url, prefix=prefix, cluster=True).r
        for node in client.get_primaries():
            conn = client.get_redis_connection(node)
            for key in list(conn.scan_iter(match=f"{prefix}*", count=1000)):
                conn.delete(key)
        client.close()
    else:
        yield request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"), False


def test_device_groups_are_crc16_of_the_id_on_evenly_spread_slots() -> None:
    layout = Layout("p", True, 32)
    keys, slots = layout.state_keys(DEVICES)
    for d, k, s in zip(DEVICES, keys, slots.tolist(), strict=True):
        g = crc_hqx(d.encode(), 0) % 32
        assert s == g * 512 and k == b"p:{%b}:%b:st" % (slot_tags()[s], d.encode())
        assert redis.crc.key_slot(k) == s
    assert [b"$%d\r\n%b\r\n" % (len(k), k) for k in keys] == layout.bulk_keys(DEVICES)[0]
    single = Layout("p", False)
    assert single.state_keys(["d1"])[0] == [b"p:{d1}:st"] and single.bulk_keys(["d1"])[0] == [b"$9\r\np:{d1}:st\r\n"]
    with pytest.raises(ValueError, match="groups"):
        Layout("p", True, 0)


#: device ids: ASCII and not, with NUL and braces among them
IDS = st.text(alphabet=st.sampled_from("ab09-_{}:\0é"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(ids=st.one_of(st.lists(IDS, max_size=40),
                     st.integers(0, 12).flatmap(lambda n: st.lists(IDS.filter(lambda x: len(x) == n), max_size=40)),
                     st.lists(st.uuids().map(str), max_size=40)),
       cluster=st.booleans(), groups=st.sampled_from([1, 3, 32]), prefix=st.sampled_from(["p", "proximity:x", "é"]))
def test_bulk_keys_are_the_state_keys_in_the_protocol(ids: list[str], cluster: bool, groups: int,
                                                      prefix: str) -> None:
    # ids of one length take the join-and-split way; a NUL inside one, or mixed lengths, the key-by-key way
    layout = Layout(prefix, cluster, groups)
    keys, slots = layout.state_keys(ids)
    got, got_slots = layout.bulk_keys(ids)
    assert got == [b"$%d\r\n%b\r\n" % (len(k), k) for k in keys]
    assert got_slots.tolist() == slots.tolist()


@pytest.mark.redis
def test_a_prefix_keeps_its_layout(where: tuple[str, str, bool]) -> None:
    """The first store marks the prefix; a store with another number of groups, or in single-Redis mode,
    refuses it with what to do, before it reads or writes any device."""
    url, prefix, real = where
    store = RedisStore(url, prefix=prefix, cluster=True, groups=16)
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    assert len(eng.process_pings(pings([("d1", 0, 0)])).events) == 1
    assert store.r.get(f"{prefix}:layout") == b"grouped 16"
    other = RedisStore(url, prefix=prefix, cluster=True, groups=32)
    with pytest.raises(StateError, match="grouped 16"):
        Engine(FenceIndex(FENCES), store=other, config=CONFIG).process_pings(pings([("d1", 1, 0)]))
    if not real:  # one server: a single-Redis store on the same prefix
        plain = RedisStore(url, prefix=prefix)
        with pytest.raises(StateError, match="cluster=False"):
            plain.snapshot("d1", Engine(FenceIndex(FENCES), store=plain, config=CONFIG).places)
        plain.close()
    for s in (store, other):
        s.close()


def _to_per_device_layout(store: Any) -> None:
    """Rewrite ``store``'s devices as the per-device cluster layout of earlier versions wrote them
    (``P:{D}:st``, ``P:{D}:tr``, due sets of each device's own slot, no marker)."""
    r, prefix = store.r, store.prefix
    keys, slots = store.layout.state_keys(DEVICES)
    for d, key, slot in zip(DEVICES, keys, slots.tolist(), strict=True):
        old = f"{prefix}:{{{d}}}:st".encode()
        for src, dst in ((key, old), (key[:-2] + b"tr", old[:-2] + b"tr")):
            value, ttl = r.get(src), r.pttl(src)
            if value is not None:
                r.set(dst, value, px=ttl)
                r.delete(src)
        due = store.router.due_key(slot)
        score = r.zscore(due, d)
        if score is not None:
            r.zrem(due, d)
            r.zadd(f"{prefix}:due:{{{slot_tags()[redis.crc.key_slot(old)].decode()}}}", {d: score})
    r.delete(f"{prefix}:layout")


@pytest.mark.redis
def test_the_per_device_layout_is_refused_then_migrated_in_place(where: tuple[str, str, bool]) -> None:
    """State written by the per-device layout is refused with the command that moves it; after the move
    the devices go on where they were (their visits end once, with the right fences)."""
    url, prefix, _real = where
    store = RedisStore(url, prefix=prefix, cluster=True)
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    entered = eng.process_pings(pings([(d, 0, 0 if i % 2 else 500) for i, d in enumerate(DEVICES)]))
    assert len(entered.events) == len(DEVICES)
    _to_per_device_layout(store)
    store.close()

    fresh = RedisStore(url, prefix=prefix, cluster=True)
    with pytest.raises(StateError, match=r"proximity\._redis\.migrate"):
        Engine(FenceIndex(FENCES), store=fresh, config=CONFIG).process_pings(pings([("dev-1", 10, 0)]))
    fresh.close()

    moved = RedisStore(url, prefix=prefix, cluster=True)
    counts = migrate(moved.r, moved.layout)
    assert counts["states"] == len(DEVICES)
    assert migrate(moved.r, moved.layout)["states"] == 0  # a second run finds nothing left to move
    eng = Engine(FenceIndex(FENCES), store=moved, config=CONFIG)
    assert eng.process_pings(pings([(d, 10, 0 if i % 2 else 500) for i, d in enumerate(DEVICES)])).events == []
    exits = eng.advance(T0 + 80).events
    assert sorted((e.device_id, e.kind, e.fence_id) for e in exits) == sorted(
        (d, "exit", "cafe" if i % 2 else "bank") for i, d in enumerate(DEVICES))
    assert not [k for k in moved.r.scan_iter(match=f"{prefix}:{{*}}:st") if not moved.layout.is_grouped_key(k)]
    moved.close()


@pytest.mark.redis
def test_a_batch_meeting_a_group_slot_in_migration_answers_unavailable_then_goes_through(
        redis_cluster_url: str) -> None:
    """A device group's slot half moved (MIGRATING / IMPORTING, some keys on each side): Redis refuses the
    group's multi-key scripts (TRYAGAIN, or ASK then TRYAGAIN), so its batch raises StoreUnavailable
    (the service's 503 + Retry-After) and writes nothing; once the slot has moved the retry goes through
    with its events."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    store = RedisStore(redis_cluster_url, prefix=prefix, cluster=True, groups=4)
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    keys, slots = store.layout.state_keys(DEVICES)
    slot = int(slots[0])
    group = [d for d, s in zip(DEVICES, slots.tolist(), strict=True) if s == slot]
    assert len(group) >= 4
    assert len(eng.process_pings(pings([(d, 0, 0) for d in group])).events) == len(group)
    masters = {n.name: store.r.get_redis_connection(n) for n in store.r.get_primaries()}
    ids = {name: c.execute_command("CLUSTER", "MYID").decode() for name, c in masters.items()}
    src = store.r.nodes_manager.get_node_from_slot(slot).name
    dst = next(name for name in masters if name != src)
    host, port = dst.split(":")
    masters[dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
    masters[src].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
    half = [k for k in keys if redis.crc.key_slot(k) == slot][: len(group) // 2]
    masters[src].execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *half)
    with pytest.raises(StoreUnavailable):
        eng.process_pings(pings([(d, 10, 500) for d in group]))
    while True:  # finish the move
        left = masters[src].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not left:
            break
        masters[src].execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *left)
    for c in [masters[dst], *(c for n, c in masters.items() if n != dst)]:
        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
    r = eng.process_pings(pings([(d, 10, 500) for d in group]))
    assert sorted((e.device_id, e.kind, e.fence_id) for e in r.events) == sorted(
        [(d, "exit", "cafe") for d in group] + [(d, "enter", "bank") for d in group])
    keys_all = list(masters[dst].scan_iter(match=f"{prefix}*", count=1000))
    store.close()
    for c in masters.values():
        for key in list(c.scan_iter(match=f"{prefix}*", count=1000)):
            c.delete(key)
    assert keys_all


@pytest.mark.redis
def test_groups_come_from_the_environment_unless_given(redis_url: str, redis_prefix: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``PROXIMITY_REDIS_GROUPS`` is how ``proximity serve`` (which builds its store with the defaults) sets
    the groups; an explicit ``groups=`` wins, and an unset variable means :data:`GROUPS`."""
    from proximity._redis.layout import GROUPS

    monkeypatch.setenv("PROXIMITY_REDIS_GROUPS", "64")
    stores = [RedisStore(redis_url, prefix=redis_prefix, cluster=True),
              RedisStore(redis_url, prefix=redis_prefix, cluster=True, groups=8)]
    monkeypatch.delenv("PROXIMITY_REDIS_GROUPS")
    stores.append(RedisStore(redis_url, prefix=redis_prefix, cluster=True))
    assert [s.layout.groups for s in stores] == [64, 8, GROUPS]
    assert len(stores[0].router.due_slots) == 64
    for s in stores:
        s.close()


@settings(max_examples=300, deadline=None)
@given(ids=st.one_of(st.lists(IDS, max_size=40), st.lists(st.uuids().map(str), max_size=600),
                     st.lists(st.text(max_size=8), max_size=20)),
       groups=st.sampled_from([1, 3, 32, 16384]))
def test_device_groups_of_many_ids_are_crc16_of_each(ids: list[str], groups: int) -> None:
    """The groups of a batch's ids (one numba pass over the joined ids when they are ASCII without NUL, else one
    ``crc_hqx`` each) are each id's CRC16 mod ``groups``, as one id's alone."""
    layout = Layout("p", True, groups)
    want = [crc_hqx(i.encode(), 0) % groups * SLOTS // groups for i in ids]
    assert layout.state_keys(ids)[1].tolist() == want
    assert layout.bulk_keys(ids)[1].tolist() == want
    assert [layout.state_keys([i])[1].tolist() for i in ids] == [[w] for w in want]
