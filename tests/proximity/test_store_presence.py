"""State stores: the memory store's compactness and handle reuse; the Redis store's keys, TTLs,
compare-and-set under a racing writer, shared place ids, and failing whole when Redis is away.

The Redis tests run on one Redis server, on that server with ``cluster=True`` (per-slot due sets
and script calls: the code path of a cluster), and on a real 3-master Redis Cluster started for
the session (skipped when it cannot start).
"""

from __future__ import annotations

import binascii
import itertools
import math
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from geofence import FenceIndex, circle_fence
from proximity._redis import RedisStateStore, slot_tags
from proximity._redis.scripts import LOAD_SCRIPT, SAVE_SCRIPT
from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.errors import StoreUnavailable
from proximity.store import DeviceIds, MemoryStore, RedisStore, StateStore, open_store

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _workers  # noqa: E402

LON0, LAT0 = 2.35, 48.85
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
T0 = 1_700_000_000.0
FENCES = [circle_fence("cafe", LON0, LAT0, 40.0), circle_fence("bank", LON0 + 500 * M_LON, LAT0, 40.0)]
CONFIG = EngineConfig(max_future_skew_s=None, profile="crossing")


def pings(rows: list[tuple[str, float, float]]) -> PingBatch:
    """``(device, t, metres east)`` with 5 m accuracy."""
    return PingBatch.from_arrays([r[0] for r in rows], [LON0 + r[2] * M_LON for r in rows], [LAT0] * len(rows),
                                 5.0, [T0 + r[1] for r in rows])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
def test_both_stores_implement_the_interface(redis_url: str, redis_prefix: str) -> None:
    members = [m for m in vars(StateStore) if not m.startswith("_")]
    assert {"apply", "advance", "forget", "resolve", "place_ids", "snapshot", "devices"} <= set(members)
    for store in (MemoryStore(), RedisStore(redis_url, prefix=redis_prefix)):
        for m in members:
            assert callable(getattr(store, m)), (type(store).__name__, m)
        store.close()


def test_open_store() -> None:
    assert isinstance(open_store(None), MemoryStore) and isinstance(open_store("memory"), MemoryStore)
    with pytest.raises(ValueError, match="redis://"):
        open_store("postgres://x")


# -- memory ------------------------------------------------------------------------------------


def test_memory_store_is_compact_and_reuses_handles() -> None:
    store = MemoryStore()
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    n = 200_000
    ids = np.array([f"device-{i:07d}" for i in range(n)], dtype=object)
    inside = np.arange(n) % 100 == 0  # 1% in the cafe
    b = PingBatch.from_arrays(ids, np.where(inside, LON0, LON0 + 0.05), np.full(n, LAT0), 5.0, np.full(n, T0))
    r = eng.process_pings(b)
    assert r.stats["enter"] == inside.sum() and len(store) == n
    per_device = store.bytes_per_device()
    assert 40 < per_device < 170, per_device  # id bytes, hash slots, device table (with the last fix), 1% of visits
    # the same ids again map to the same handles; forgotten ones are reused
    first = store.resolve(ids[:10]).codes
    assert np.array_equal(store.resolve(ids[:10]).codes, first)
    eng.forget("device-0000003")
    assert len(store) == n - 1
    new = store.resolve(np.array(["newcomer"], dtype=object)).codes
    assert new[0] == first[3]
    assert eng.device_state("newcomer")["last_ts"] is None


# -- redis ---------------------------------------------------------------------------------------

Open = Callable[..., Any]  # RedisStore(**options) on the test's server, with the test's prefix


@pytest.fixture(params=["one-redis", "cluster-mode", "real-cluster"])
def open_redis(request: pytest.FixtureRequest) -> Iterator[Open]:
    """``open_redis(**options)``: a RedisStore on one server, on one server with ``cluster=True``, or on a
    real cluster; every store of one test shares its prefix."""
    if request.param == "real-cluster":
        url, prefix = request.getfixturevalue("redis_cluster_url"), f"t{uuid.uuid4().hex[:12]}"
    else:
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    stores: list[Any] = []

    def open_store(**options: Any) -> Any:
        options.setdefault("prefix", prefix)
        stores.append(RedisStore(url, cluster=request.param != "one-redis", **options))
        return stores[-1]

    yield open_store
    for store in stores:
        store.close()


def resp_commands(packed: bytes) -> list[list[bytes]]:
    """The commands of a packed pipeline (Redis protocol arrays of bulk strings)."""
    out, at = [], 0
    while at < len(packed):
        end = packed.index(b"\r\n", at)
        parts = []
        at = end + 2
        for _ in range(int(packed[1 + packed.rindex(b"*", 0, end) : end])):
            end = packed.index(b"\r\n", at)
            n = int(packed[at + 1 : end])
            parts.append(packed[end + 2 : end + 2 + n])
            at = end + 2 + n + 2
        out.append(parts)
    return out


def test_slot_tags_name_every_slot() -> None:
    tags = slot_tags()
    assert len(tags) == len(set(tags)) == 16384
    assert all(redis.crc.key_slot(b"p:due:{%b}" % t) == s for s, t in enumerate(tags))


@pytest.mark.redis
def test_cluster_mode_keeps_every_command_in_one_slot(redis_url: str, redis_prefix: str,
                                                      redis_client: Any) -> None:
    """With cluster=True no command (load, save script, due-set scan) touches two slots, each goes to the
    slot it is routed by, a batch is one load and one save per device group it touches (not per device),
    and each device's due time sits in its group's due set."""
    store = RedisStore(redis_url, prefix=redis_prefix, cluster=True, groups=8)
    sent: list[tuple[int, list[bytes]]] = []
    send = store.router.send

    def spy(commands: Any, script: Any = None, errors: Any = None) -> Any:
        for slot, packed in commands:
            sent.extend((slot, c) for c in resp_commands(packed))
        return send(commands, script, errors)

    store.router.send = spy  # type: ignore[method-assign]
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    names = [f"dev-{i}" for i in range(40)] + [f"shop}}{i}" for i in range(5)]
    r = eng.process_pings(pings([(d, 0, 0 if i % 2 else 500) for i, d in enumerate(names)]))
    assert len(r.events) == len(names)
    keys, slots = store.layout.state_keys(names)
    groups = {binascii.crc_hqx(d.encode(), 0) % 8 for d in names}
    assert len(set(slots.tolist())) == len(groups) == 8  # 45 devices, 8 groups: each group met
    assert [redis.crc.key_slot(k) for k in keys] == slots.tolist()
    saves = [c for _, c in sent if c[:2] == [b"EVALSHA", SAVE_SCRIPT.sha]]
    loads = [c for _, c in sent if c[:2] == [b"EVALSHA", LOAD_SCRIPT.sha]]
    assert len(saves) == len(loads) == 8  # one call per group
    assert sorted(k for c in saves for k in c[5 : 3 + int(c[2])]) == sorted(keys)
    r = eng.advance(T0 + 61)
    assert sorted(e.device_id for e in r.events) == sorted(names) and {e.kind for e in r.events} == {"exit"}
    assert {b"EVALSHA", b"ZRANGEBYSCORE"} <= {c[0] for _, c in sent}
    for slot, cmd in sent:
        keys = cmd[3 : 3 + int(cmd[2])] if cmd[0] == b"EVALSHA" else cmd[1:2]
        assert {redis.crc.key_slot(k) for k in keys} == {slot}, cmd[:4]
    # advance reads the groups' due sets only; never the single-Redis one
    assert len([c for _, c in sent if c[0] == b"ZRANGEBYSCORE"]) == 8  # one round: each group's due set
    assert not redis_client.exists(f"{redis_prefix}:due")
    for d, slot in zip(names, slots.tolist(), strict=True):
        due = store.due_key_of(d)
        assert redis.crc.key_slot(due.encode()) == slot
        assert redis_client.zscore(due, d) == T0 + 7 * 24 * 3600  # after the exit, only the idle TTL is due
    assert redis_client.get(f"{redis_prefix}:layout") == b"grouped 8"
    store.close()


def test_cluster_mode_refuses_a_prefix_with_hash_tag_braces() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisStore("redis://127.0.0.1:1/0", prefix="app{x}", cluster=True)


@pytest.mark.redis
def test_cluster_mode_reloads_scripts_flushed_from_the_server(redis_url: str, redis_prefix: str,
                                                             redis_client: Any) -> None:
    store = RedisStore(redis_url, prefix=redis_prefix, cluster=True)
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    eng.process_pings(pings([("d1", 0, 0)]))
    redis_client.script_flush()
    r = eng.process_pings(pings([("d1", 1, 2000), ("d2", 1, 500)]))
    store.close()
    assert sorted((e.device_id, e.kind, e.fence_id) for e in r.events) == [("d1", "exit", "cafe"),
                                                                          ("d2", "enter", "bank")]


@pytest.mark.redis
def test_real_cluster_save_follows_a_slot_that_moved(redis_cluster_url: str) -> None:
    """A device's slot moves to another master between the load and the save: the save is redirected
    (MOVED), the slot map refreshed, and the device saved on its new master with its events."""
    # many small groups, so that a device can be alone in its slot (the slot moves without migrating keys)
    store = RedisStore(redis_cluster_url, prefix=f"t{uuid.uuid4().hex[:12]}", cluster=True, groups=4096)
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    masters = {n.name: store.r.get_redis_connection(n) for n in store.r.get_primaries()}
    ids = {name: c.execute_command("CLUSTER", "MYID").decode() for name, c in masters.items()}
    for i in range(1000):
        device = f"mover-{uuid.uuid4().hex[:8]}-{i}"
        slot = int(store.layout.state_keys([device])[1][0])
        if all(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0 for c in masters.values()):
            break
    else:
        pytest.fail("no empty slot found for the device")
    owner = store.r.nodes_manager.get_node_from_slot(slot).name
    target = next(name for name in masters if name != owner)
    load = store._load

    def load_then_move(*args: Any, **kw: Any) -> Any:
        raw = load(*args, **kw)
        for c in [masters[target], *(c for n, c in masters.items() if n != target)]:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        return raw

    store._load = load_then_move  # type: ignore[method-assign]
    r = eng.process_pings(pings([(device, 0, 0)]))
    store._load = load  # type: ignore[method-assign]
    assert [(e.device_id, e.kind) for e in r.events] == [(device, "enter")]
    assert store.r.nodes_manager.get_node_from_slot(slot).name == target
    assert masters[target].exists(store.layout.state_keys([device])[0][0])
    assert [e.kind for e in eng.advance(T0 + 61).events] == ["exit"]
    store.close()


@pytest.mark.redis
def test_redis_keys_are_prefixed_hash_tagged_and_expire(open_redis: Open) -> None:
    store = open_redis(ttl_s=600)
    redis_client, redis_prefix = store.r, store.prefix
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    eng.process_pings(PingBatch.concat([pings([("d1", 0, 0), ("d2", 0, 2000)]),
                                        PingBatch.from_rows([{"device_id": "d1", "ts": T0 + 1, "lon": LON0,
                                                              "lat": LAT0, "accuracy_m": 5,
                                                              "attrs": {"tier": "gold"}}])]))
    keys = sorted(k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}*"))
    assert all(k.startswith(redis_prefix + ":") for k in keys)
    (st1, st2), slots = store.layout.state_keys(["d1", "d2"])
    if store.cluster:  # the device's group's hash tag, then the device id
        assert st1.startswith(b"%b:{%b}:d1:" % (redis_prefix.encode(), slot_tags()[slots[0]]))
    else:
        assert st1 == f"{redis_prefix}:{{d1}}:st".encode()
    assert st1.decode() in keys and st2.decode() in keys
    assert f"{redis_prefix}:{{d1}}:info" in keys
    for k in (st1.decode(), f"{redis_prefix}:{{d1}}:info"):
        assert 0 < redis_client.pttl(k) <= 600_000
    # the due set (one, or in cluster mode the one of d1's slot) knows when d1's visit can end
    # (last inside evidence + 60 s)
    due = store.due_key_of("d1")
    if store.cluster:
        assert redis.crc.key_slot(due.encode()) == redis.crc.key_slot(st1) == slots[0]
        assert not redis_client.exists(f"{redis_prefix}:due")
    else:
        assert due == f"{redis_prefix}:due"
    assert redis_client.zscore(due, "d1") == T0 + 1 + 60
    eng.forget("d1")
    assert not redis_client.exists(st1, f"{redis_prefix}:{{d1}}:info")
    assert redis_client.zscore(due, "d1") is None


@pytest.mark.redis
def test_a_racing_writer_makes_the_loser_recompute_without_duplicates(open_redis: Open) -> None:
    a_store, b_store = open_redis(), open_redis()
    a = Engine(FenceIndex(FENCES), store=a_store, config=CONFIG)
    b = Engine(FenceIndex(FENCES), store=b_store, config=CONFIG)
    batch = pings([("d1", 0, 0), ("d2", 0, 500), ("d3", 0, 2000)])
    b_events: list[Any] = []
    load = a_store._load
    calls = []

    def racing_load(names: Any, keys: Any = None, *args: Any) -> Any:
        raw = load(names, keys, *args)  # A has read the old state ...
        if not calls:
            b_events.extend(b.process_pings(batch).events)  # ... and B commits the same batch first
        calls.append(list(keys if keys is not None else names))
        return raw

    a_store._load = racing_load  # type: ignore[method-assign]
    a_events = a.process_pings(batch).events
    assert sorted((e.device_id, e.kind, e.fence_id) for e in b_events) == [("d1", "enter", "cafe"),
                                                                          ("d2", "enter", "bank")]
    assert a_events == []  # A lost the compare-and-set, reloaded, and found its evidence already applied
    assert a_store.retries == 3 and len(calls) == 2
    assert a.device_state("d1")["version"] == 1


@pytest.mark.redis
def test_a_loser_never_overwrites_the_winners_newer_state(open_redis: Open) -> None:
    """The save writes and checks the version in one step; when it lost, the winner's state is what stays."""
    a_store = open_redis()
    a = Engine(FenceIndex(FENCES), store=a_store, config=CONFIG)
    b = Engine(FenceIndex(FENCES), store=open_redis(), config=CONFIG)
    b_events: list[Any] = []
    load = a_store._load

    def racing_load(*args: Any, **kw: Any) -> Any:
        raw = load(*args, **kw)
        if not b_events:  # B applies a newer ping (d1 in the bank) between A's load and A's save
            b_events.extend(b.process_pings(pings([("d1", 10, 500)])).events)
        return raw

    a_store._load = racing_load  # type: ignore[method-assign]
    a_events = a.process_pings(pings([("d1", 0, 0)])).events  # A: d1 in the cafe, 10 s earlier
    assert [(e.kind, e.fence_id) for e in b_events] == [("enter", "bank")]
    assert a_events == [] and a_store.retries == 1  # A's evidence turned out late once it saw B's state
    state = b.device_state("d1")
    assert [v["fence_id"] for v in state["visits"]] == ["bank"] and state["last_ts"] == T0 + 10
    assert state["version"] == 1


@pytest.mark.redis
def test_advance_in_two_engines_exits_once(open_redis: Open) -> None:
    a = Engine(FenceIndex(FENCES), store=open_redis(), config=CONFIG)
    b = Engine(FenceIndex(FENCES), store=open_redis(), config=CONFIG)
    a.process_pings(pings([("d1", 0, 0), ("d2", 0, 500)]))
    first = a.advance(T0 + 61).events + b.advance(T0 + 61).events
    assert sorted((e.device_id, e.kind, e.cause) for e in first) == [("d1", "exit", "debounce"),
                                                                     ("d2", "exit", "debounce")]
    assert b.advance(T0 + 100).events == []


@pytest.mark.redis
def test_a_chunk_larger_than_one_mget_loads_every_device(redis_url: str, redis_prefix: str) -> None:
    """The load script reads a chunk 4000 keys per MGET: 9,000 devices in one chunk come back whole
    (the second visit of each device exits exactly the visit its first batch entered)."""
    n = 9_000
    store = RedisStateStore(redis_url, prefix=redis_prefix, chunk=n)
    memory = Engine(FenceIndex(FENCES), config=CONFIG)
    try:
        engine = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
        for t, east in ((0, 0), (30, 0), (60, 250)):
            batch = pings([(f"dev-{k:05d}", t, east if k % 3 else 500 - east) for k in range(n)])
            got = [(e.device_id, e.kind, e.place, e.ts) for e in engine.process_pings(batch).events]
            want = [(e.device_id, e.kind, e.place, e.ts) for e in memory.process_pings(batch).events]
            assert got == want and len(got) == (n if t != 30 else 0)
    finally:
        store.close()


@pytest.mark.redis
def test_advance_reaches_due_devices_behind_a_page_of_early_due_times(open_redis: Open) -> None:
    """A ping that pushes a visit's end later leaves the device's due time early (one write less);
    ``advance`` then sets the true time on the devices it finds with nothing to do, page after page.
    (The devices share one device group, so in cluster mode too they fill pages of one due set.)"""
    store = open_redis(groups=1)  # in cluster mode, one group: one due set
    store.chunk = 2
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    a, b, c, z = "g}a", "g}b", "g}c", "g}z"
    eng.process_pings(pings([(a, 0, 0), (b, 0, 0), (c, 0, 0), (z, 5, 500)]))
    eng.process_pings(pings([(a, 30, 0), (b, 30, 0), (c, 30, 0)]))
    due = store.due_key_of(a)
    assert {store.due_key_of(d) for d in (a, b, c, z)} == {due}
    assert [store.r.zscore(due, d) for d in (a, z)] == [T0 + 60, T0 + 65]  # a's is early (true: +90)
    r = eng.advance(T0 + 70)
    assert [(e.device_id, e.kind, e.ts - T0) for e in r.events] == [(z, "exit", 65)]
    assert [store.r.zscore(due, d) for d in (a, b, c)] == [T0 + 90] * 3
    assert store.r.zscore(due, z) == T0 + 5 + 7 * 24 * 3600  # now only its idle TTL is due


@pytest.mark.redis
def test_place_ids_are_shared_between_processes(open_redis: Open) -> None:
    a = Engine(FenceIndex(FENCES), store=open_redis(), config=CONFIG)
    b = Engine(FenceIndex(FENCES[::-1]), store=open_redis(), config=CONFIG)
    assert a.places.ids == b.places.ids
    # A learns a beacon zone; B has never heard of it but still names it right when it ends
    zone = type("Z", (), {})()
    zone.device_id = np.array(["d9"], dtype=object)
    zone.fence_id = np.array(["cafe"], dtype=object)
    zone.zone = np.array(["checkout"], dtype=object)
    zone.distance_m, zone.proximity = np.array([1.0]), np.array([2], np.int8)
    zone.ts, zone.row = np.array([T0]), np.array([0])
    assert [e.place for e in a.process_zone_sightings(zone).events] == ["cafe", "cafe#checkout"]
    assert "cafe#checkout" not in b.places.ids
    assert sorted(e.place for e in b.advance(T0 + 31).events) == ["cafe", "cafe#checkout"]


@pytest.mark.redis
@pytest.mark.parametrize("cluster", [False, True], ids=["one-redis", "cluster-mode"])
def test_redis_away_raises_store_unavailable(redis_prefix: str, cluster: bool) -> None:
    with pytest.raises(StoreUnavailable) as info:
        down = RedisStore(f"redis://127.0.0.1:{free_port()}/0", prefix=redis_prefix, cluster=cluster)
        Engine(FenceIndex(FENCES), store=down, config=CONFIG)
    assert info.value.retry_after_s > 0


@pytest.mark.redis
def test_a_connection_lost_before_the_save_applies_nothing(open_redis: Open) -> None:
    store = open_redis()
    eng = Engine(FenceIndex(FENCES), store=store, config=CONFIG)
    good = store.router.send

    def broken(*args: Any, **kw: Any) -> Any:
        # the connection drops between load and save (a save: the pipelined script calls, sent with the
        # script's source in case of NOSCRIPT)
        if kw.get("script") == SAVE_SCRIPT.src:
            raise redis.ConnectionError("connection reset by peer")
        return good(*args, **kw)

    store.router.send = broken  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        eng.process_pings(pings([("d1", 0, 0), ("d2", 0, 500)]))
    st_keys = store.layout.state_keys(["d1", "d2"])[0]
    assert not store.r.exists(*st_keys, *[k[:-2] + b"tr" for k in st_keys])
    store.router.send = good  # type: ignore[method-assign]
    r = eng.process_pings(pings([("d1", 0, 0), ("d2", 0, 500)]))  # the client's retry goes through whole
    assert sorted(e.device_id for e in r.events) == ["d1", "d2"]


# -- device id interning ---------------------------------------------------------------------------

ids_st = st.text(alphabet=st.characters(blacklist_characters="\x00"), min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.lists(ids_st, max_size=30)), max_size=12))
def test_device_ids_behave_like_a_dict(ops: list[tuple[bool, list[str]]]) -> None:
    """Interning and removing in batches agrees with a dict oracle; handles stay unique and get reused."""
    table = DeviceIds(capacity=4, width=2)  # tiny, so every growth path runs
    oracle: dict[str, int] = {}
    for remove, batch in ops:
        arr = np.array(batch, dtype=object)
        if remove:
            gone = [x for x in dict.fromkeys(batch) if x in oracle]
            table.remove(np.array([oracle.pop(x) for x in gone], np.int64))
            assert (table.find(np.array(gone, dtype=object)) == -1).all()
            continue
        handles = table.intern(arr)
        for x, h in zip(batch, handles.tolist(), strict=True):
            assert oracle.setdefault(x, h) == h
        assert len(set(oracle.values())) == len(oracle) == len(table)
        assert table.names(handles).tolist() == batch
        assert np.array_equal(table.find(arr), handles)
    live = sorted(oracle.values())
    assert np.flatnonzero(table.in_use()).tolist() == live
    assert max(live, default=-1) < len(oracle) + sum(len(b) for _, b in ops)


# -- cluster mode agrees with the memory store -------------------------------------------------------

#: "s}1".."s}4" share one hash slot (tag "s"), so with chunk=2 their saves split into several calls of
#: one slot and their due set fills pages
CLUSTER_DEVICES = ["a", "b", "s}1", "s}2", "s}3", "s}4"]
SPOTS_M = [0.0, 30.0, 45.0, 500.0, 2000.0]  # metres east: cafe, its edge, just out, bank, nowhere
cluster_rows = st.lists(st.tuples(st.sampled_from(CLUSTER_DEVICES), st.integers(0, 40).map(lambda k: 15.0 * k),
                                  st.sampled_from(SPOTS_M)), min_size=1, max_size=40)


@pytest.mark.redis
# no shrinking: every example scans the 16384 due sets a few times (a failure shows its unshrunk example)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(rows=cluster_rows, cuts=st.lists(st.integers(0, 600), max_size=3))
def test_cluster_mode_agrees_with_the_memory_store(rows: list[tuple[str, float, float]], cuts: list[int],
                                                   redis_url: str, redis_prefix: str) -> None:
    """Batches cut anywhere, with ``advance`` between them: cluster mode (chunk 2) gives the memory store's events."""
    edges = [-1, *sorted(set(cuts)), 10_000]
    batches = [(hi, [r for r in rows if lo < r[1] <= hi]) for lo, hi in itertools.pairwise(edges)]
    store = RedisStore(redis_url, prefix=f"{redis_prefix}:{uuid.uuid4().hex[:8]}", cluster=True)
    store.chunk = 2
    engines = [Engine(FenceIndex(FENCES), store=s, config=CONFIG) for s in (MemoryStore(), store)]
    results: list[list[Any]] = [[], []]
    for eng, out in zip(engines, results, strict=True):
        for hi, b in batches:
            if b:
                out.extend(eng.process_pings(pings(sorted(b))).events)
            out.extend(eng.advance(T0 + min(hi, 5000)).events)
    store.close()
    assert results[1] == results[0]
    assert results[0] or not any(x in (0.0, 500.0) for _, _, x in rows)  # a ping at a fence's centre enters


@pytest.mark.redis
def test_two_processes_in_cluster_mode_emit_each_event_once(tmp_path: Path, redis_url: str,
                                                            redis_prefix: str) -> None:
    """Two worker processes (``_cluster_worker.py``: cluster mode on the test server) racing through the
    same batches: every event of the memory-store oracle comes out exactly once, from one of them."""
    rng = np.random.default_rng(7)
    spots = [(dx, dy) for _, dx, dy, _ in _workers.FENCES] + [(150, 150)]
    here = {f"dev-{d:02d}": spots[rng.integers(len(spots))] for d in range(16)}
    batches: list[list[dict[str, Any]]] = []
    for minute in range(16):
        rows = []
        for d in here:
            if rng.random() < 0.2:
                here[d] = spots[rng.integers(len(spots))]
            for k in range(4):
                dx, dy = here[d][0] + rng.normal(0, 6), here[d][1] + rng.normal(0, 6)
                rows.append({"device_id": d, "ts": T0 + 60 * minute + 15 * k, "accuracy_m": 5.0,
                             "lon": _workers.LON0 + dx * _workers.M_LON, "lat": _workers.LAT0 + dy * _workers.M_LAT})
        batches.append(rows)
    oracle = Engine(FenceIndex(_workers.fences()), store=MemoryStore(), config=CONFIG)
    expected = [e for rows in batches for e in oracle.process_pings(PingBatch.from_rows(rows)).events]
    assert len(expected) > 20
    got = _workers.run_workers(HERE / "_cluster_worker.py", tmp_path, redis_url, redis_prefix, [batches, batches],
                               timeout_s=120)
    canon = lambda evs: sorted((e.device_id, e.place, e.ts, e.kind, e.dwell_s, e.cause) for e in evs)  # noqa: E731
    assert canon(got) == canon(expected)  # nothing twice, nothing missing
