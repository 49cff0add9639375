"""The Redis store's device info (attributes, time zone, opt-out: ``P:{D}:info``) written by ``update_info`` and
read by ``devices`` in the protocol (:mod:`proxbase.resp` through the store's router), not through redis-py's
pipeline: what they write is what redis-py reads back as the code before wrote it, and what they read is what
the memory store answers for the same rows, on one Redis, in cluster mode on one Redis and on a real cluster."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proximity.events import Device
from proximity.store import MemoryStore, RedisStore

pytestmark = pytest.mark.redis

IDS = ["d1", "d2", "shop-7", "é-phone", "日本", "a:b}c"]
_ATTRS = st.one_of(st.none(), st.dictionaries(st.sampled_from(["tier", "lang", "n"]),
                                              st.one_of(st.text(max_size=6), st.integers(-5, 5), st.booleans()),
                                              max_size=3))
# (an empty attrs dict, as a CSV row with empty attribute cells gives, keeps the attrs before it in both stores)
_TZ = st.one_of(st.none(), st.sampled_from(["Europe/Paris", "America/New_York", "UTC", ""]))
ROWS = st.lists(st.tuples(st.sampled_from(IDS), _ATTRS, _TZ), min_size=1, max_size=20)


@pytest.fixture(params=["one-redis", "cluster-mode", "real-cluster"])
def open_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """``open_store()``: a fresh RedisStore (a new prefix each call) on one server, on one server with
    ``cluster=True``, or on a real cluster; closed and its keys deleted afterwards."""
    url = request.getfixturevalue("redis_cluster_url" if request.param == "real-cluster" else "redis_url")
    stores: list[Any] = []

    def make() -> Any:
        store = RedisStore(url, prefix=f"pxinfo{uuid.uuid4().hex[:10]}", ttl_s=600,
                           cluster=request.param != "one-redis")
        stores.append(store)
        return store

    yield make
    for store in stores:
        for d in IDS:
            store.r.delete(f"{store.prefix}:{{{d}}}:info")
        store.close()


def _columns(rows: list[tuple[str, Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = [np.empty(len(rows), dtype=object) for _ in range(3)]
    for i, row in enumerate(rows):
        for col, value in zip(out, row, strict=True):
            col[i] = value
    return out[0], out[1], out[2]


def _redis_py_devices(store: Any, ids: list[str]) -> dict[str, Device]:
    """``devices`` as the code before read it: one redis-py ``HMGET`` per device."""
    out = {}
    for d in ids:
        a, z, o = store.r.hmget(f"{store.prefix}:{{{d}}}:info", "a", "z", "o")
        out[d] = Device(d, json.loads(a) if a else {}, z.decode() if z else None, bool(o))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(ROWS, min_size=1, max_size=3), opted=st.sets(st.sampled_from(IDS), max_size=2))
def test_info_round_trip_equals_redis_py_and_the_memory_store(open_store: Callable[[], Any],
                                                               batches: list[list[Any]], opted: set[str]) -> None:
    store, memory = open_store(), MemoryStore()
    for rows in batches:
        cols = _columns(rows)
        store.update_info(*cols)
        memory.update_info(*cols)
    for d in opted:
        store.set_opt_out(d, True)
        memory.set_opt_out(d, True)
    asked = [*IDS, "never-seen", IDS[0]]
    got = store.devices(asked)
    assert got == memory.devices(asked)
    assert got == _redis_py_devices(store, asked)
    # what was written: the latest non-empty attrs (sorted-key JSON) and time zone per device
    for d in {r[0] for rows in batches for r in rows}:
        key = f"{store.prefix}:{{{d}}}:info"
        fields = store.r.hgetall(key)
        attrs = [r[1] for rows in batches for r in rows if r[0] == d and r[1]]
        tzs = [r[2] for rows in batches for r in rows if r[0] == d and r[2]]
        assert fields.get(b"a") == (json.dumps(attrs[-1], sort_keys=True, default=str).encode() if attrs else None)
        assert fields.get(b"z") == (tzs[-1].encode() if tzs else None)
        if attrs or tzs:
            assert 0 < store.r.pttl(key) <= 600_000


def test_devices_and_update_info_of_nothing(open_store: Callable[[], Any]) -> None:
    store = open_store()
    assert store.devices([]) == {}
    none = np.array([None, None], dtype=object)
    store.update_info(np.array(["d1", "d2"], dtype=object), none, none)  # nothing to write: no key made
    assert store.r.exists(f"{store.prefix}:{{d1}}:info") == 0
    assert store.devices(["d1"]) == {"d1": Device("d1", {}, None, False)}


def test_devices_raise_store_unavailable_when_redis_is_away() -> None:
    from proximity.errors import StoreUnavailable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="pxinfo-away")
    with pytest.raises(StoreUnavailable):
        store.devices(["d1"])
    with pytest.raises(StoreUnavailable):
        store.update_info(*_columns([("d1", {"tier": "gold"}, None)]))
    store.close()


def test_a_wrong_type_key_is_a_state_error(redis_url: str, redis_prefix: str) -> None:
    """An error reply (here WRONGTYPE) is a StateError naming it, as before, not a crash."""
    from proximity.errors import StateError

    store = RedisStore(redis_url, prefix=redis_prefix)
    redis.Redis.from_url(redis_url).set(f"{redis_prefix}:{{d1}}:info", b"not a hash")
    with pytest.raises(StateError, match="WRONGTYPE"):
        store.devices(["d1"])
    store.close()


def test_a_batchs_save_reads_its_event_devices_info(open_store: Callable[[], Any], redis_url: str) -> None:
    """The info of the devices with events is read in the batch's save round trip: the next ``devices`` of
    the same thread answers it with no round trip of its own, once, and equals a fresh read. What the thread
    or another one writes after the save (``update_info``, ``set_opt_out``, ``forget``) is read again; a
    WRONGTYPE info key raises from ``devices`` as before."""
    import threading

    from geofence import FenceIndex, load_geojson
    from proximity.batch import PingBatch
    from proximity.engine import Engine

    store = open_store()
    ring = [[2.350, 48.850], [2.352, 48.850], [2.352, 48.852], [2.350, 48.852], [2.350, 48.850]]
    index = FenceIndex(load_geojson(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "s", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]})))
    engine = Engine(index, store=store)
    store.update_info(*_columns([("d1", {"tier": "gold"}, "Europe/Paris"), ("d2", None, "UTC")]))
    store.set_opt_out("d3", True)
    sends: list[int] = []
    real = store._send
    store._send = lambda commands, *a, **k: sends.append(len(commands)) or real(commands, *a, **k)

    def enter(devices: list[str], t0: float) -> None:
        engine.process_pings(PingBatch.from_rows([
            {"device_id": d, "lon": 2.351, "lat": 48.851, "accuracy_m": 5.0, "ts": t0 + 30 * k}
            for d in devices for k in range(12)] + [{"device_id": "far", "lon": 2.4, "lat": 48.9, "accuracy_m": 5.0,
                                                    "ts": t0}]))
        del sends[:]  # (the batch's own load and save)

    enter(["d1", "d2", "d3", "d4"], 1_700_000_000.0)
    fresh = _redis_py_devices(store, ["d1", "d2", "d3", "d4"])
    assert store.devices(["d1", "d2", "d3", "d4"]) == fresh and not sends
    assert fresh["d1"].attrs == {"tier": "gold"} and fresh["d3"].opted_out
    assert store.devices(["d1"]) == {"d1": fresh["d1"]} and sends == [1]  # once: then read again
    assert store.devices(["far"]) == {"far": Device("far")} and sends == [1, 1]  # no event: not read with the save

    enter(["d1", "d2", "d3"], 1_700_001_000.0)  # (exits, then enters again)
    store.update_info(*_columns([("d1", {"tier": "silver"}, None)]))  # this thread, after the save
    other = threading.Thread(target=store.set_opt_out, args=("d2", True))  # another thread
    other.start()
    other.join()
    del sends[:]
    got = store.devices(["d1", "d2", "d3"])
    assert got == _redis_py_devices(store, ["d1", "d2", "d3"]) and sends == [2]  # d1 and d2 read again
    assert got["d1"].attrs == {"tier": "silver"} and got["d2"].opted_out

    enter(["d4"], 1_700_002_000.0)
    store.r.delete(f"{store.prefix}:{{d4}}:info")
    store.r.set(f"{store.prefix}:{{d4}}:info", b"not a hash")
    enter(["d4"], 1_700_003_000.0)  # the save's HMGET gets WRONGTYPE: not kept, the save still stands
    from proximity.errors import StateError

    with pytest.raises(StateError, match="WRONGTYPE"):
        store.devices(["d4"])
    store.r.delete(f"{store.prefix}:{{d4}}:info")
