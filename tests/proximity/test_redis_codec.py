"""The Redis store's binary codec, without Redis: encode -> stored values -> parse -> decode round trips
every device's visits exactly (the memory store is the oracle), versions parse from any value, and
``changed`` finds exactly the devices whose bytes differ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence import FenceIndex, circle_fence
from proximity._redis import codec
from proximity._redis.scripts import DROP, SET_DUE, TOUCH
from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.errors import StateError
from proximity.presence import visit_snapshot
from proximity.store import MemoryStore

LON0, LAT0 = 2.35, 48.85
M_LON = 1 / (111_320.0 * math.cos(math.radians(LAT0)))
T0 = 1_700_000_000.0
FENCES = [circle_fence(f"f{i}", LON0 + 120 * i * M_LON, LAT0, 40.0) for i in range(4)]


def as_values(stored: codec.Stored, versions: list[int]) -> tuple[np.ndarray, bytes]:
    """What Redis would hold: ``b"<version>|<body>"`` per device with a body (sizes, concatenation)."""
    values = [b"%d|%b" % (v, stored.body(i)) if stored.length[i] else b"" for i, v in enumerate(versions)]
    return np.array([len(v) for v in values], np.int64), b"".join(values)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 600), st.integers(-60, 500)), max_size=60),
       versions=st.lists(st.integers(1, 10**15), min_size=8, max_size=8))
def test_round_trip_keeps_every_visit(rows: list[tuple[int, int, int]], versions: list[int]) -> None:
    store = MemoryStore()
    eng = Engine(FenceIndex(FENCES), store=store, config=EngineConfig(max_future_skew_s=None))
    rows = sorted(rows, key=lambda r: r[1])
    if rows:
        eng.process_pings(PingBatch.from_arrays(
            [f"d{r[0]}" for r in rows], [LON0 + r[2] * M_LON for r in rows], [LAT0] * len(rows), 5.0,
            [T0 + r[1] for r in rows]))
    state = store.state
    stored = codec.encode(state)
    n = state.n_devices
    sizes, blob = as_values(stored, versions[:n] + [1] * max(0, n - len(versions)))
    back = codec.Stored.parse(sizes, blob)
    has = stored.length > 0
    assert (back.version[has] == np.array(versions[:n] + [1] * max(0, n - 8))[has]).all()
    assert (back.version[~has] == 0).all()
    assert not codec.changed(back, stored).any()
    decoded, place_ids = codec.decode(back, spare=3)
    assert sorted(place_ids.tolist()) == sorted(state.r_place[state.r_dev >= 0].tolist())
    for d in range(n):
        assert visit_snapshot(decoded, d, eng.places) == visit_snapshot(state, d, eng.places)
    again = codec.encode(decoded)
    assert not codec.changed(again, stored).any()
    assert again.buf.tobytes() == stored.buf.tobytes()


@given(st.lists(st.one_of(st.none(), st.tuples(st.integers(1, 10**18 - 1), st.binary(max_size=20))), max_size=12))
def test_parse_reads_the_version_before_the_first_bar(values: list[tuple[int, bytes] | None]) -> None:
    """... of every value, with devices that have none (size 0: version 0, an empty body) anywhere."""
    blobs = [b"" if x is None else b"%d|%b" % x for x in values]
    stored = codec.Stored.parse(np.array([len(b) for b in blobs], np.int64), b"".join(blobs))
    assert stored.version.tolist() == [0 if x is None else x[0] for x in values]
    assert [stored.body(i) for i in range(len(values))] == [b"" if x is None else x[1] for x in values]


@pytest.mark.parametrize("value", [b"12", b"|abc", b"x|abc", b"1234567890123456789|a", b"1a|b", b"7"])
@pytest.mark.parametrize("among", [False, True])
def test_parse_refuses_what_this_version_did_not_write(value: bytes, among: bool) -> None:
    """... alone, or between good values (a value's bar is looked for in that value only: ``12`` then
    ``3|a`` is no version 123)."""
    values = [b"5|ok", value, b"3|a"] if among else [value]
    with pytest.raises(StateError, match="version"):
        codec.Stored.parse(np.array([len(v) for v in values], np.int64), b"".join(values))


def test_decode_refuses_a_body_of_the_wrong_size() -> None:
    body = np.zeros(1, codec.HEADER)
    body["n"] = 2  # claims two visits, holds none
    value = b"1|" + body.tobytes()
    with pytest.raises(StateError, match="wrong size"):
        codec.decode(codec.Stored.parse(np.array([len(value)], np.int64), value), 0)


# any two bodies, and two bodies with a common start (equal first bytes, a difference further on or none)
_PAIR = st.one_of(st.tuples(st.binary(max_size=6), st.binary(max_size=6)),
                  st.tuples(st.binary(max_size=14), st.binary(max_size=3), st.binary(max_size=3)).map(
                      lambda t: (t[0] + t[1], t[0] + t[2])))


@given(st.lists(_PAIR, max_size=10))
def test_changed_is_byte_inequality(pairs: list[tuple[bytes, bytes]]) -> None:
    def stored(bodies: list[bytes]) -> codec.Stored:
        blobs = [b"1|" + b if b else b"" for b in bodies]
        return codec.Stored.parse(np.array([len(x) for x in blobs], np.int64), b"".join(blobs))

    a, b = stored([p[0] for p in pairs]), stored([p[1] for p in pairs])
    assert codec.changed(a, b).tolist() == [x != y for x, y in pairs]


_DEVICE = st.tuples(st.integers(0, 2**53), st.floats(allow_nan=False), st.sampled_from([0, DROP, SET_DUE, TOUCH]),
                    st.binary(max_size=90), st.binary(max_size=40), st.binary(max_size=50))


@settings(max_examples=60, deadline=None)
@given(devices=st.lists(_DEVICE, max_size=12), journal=st.booleans(), tracked=st.booleans(), cuts=st.data())
def test_save_blobs_round_trip(devices: list[tuple[int, float, int, bytes, bytes, bytes]], journal: bool,
                               tracked: bool, cuts: st.DataObject) -> None:
    """SAVE's blobs read back (as the script reads them) give each device's version, due time, flags, the
    state it writes (none when dropped or touched), its entry and filter state, for the whole batch and for
    any run of devices cut out of it (one slot group)."""
    def stored(bodies: list[bytes]) -> codec.Stored:
        # bodies out of order in their buffer, with junk between them: only start/length may be used
        parts = [b"#" + b for b in reversed(bodies)]
        start = np.cumsum([0] + [len(p) for p in parts])[:-1][::-1] + 1
        return codec.Stored(np.zeros(len(bodies), np.int64), np.frombuffer(b"".join(parts), np.uint8),
                            start.astype(np.int64), np.array([len(b) for b in bodies], np.int64))

    n = len(devices)
    version = np.array([d[0] for d in devices], np.int64)
    due = np.array([d[1] for d in devices], np.float64)
    flags = np.array([d[2] for d in devices], np.uint8)
    write = (flags & (DROP | TOUCH)) == 0
    blobs = codec.SaveBlobs.build(version, due, flags, write, stored([d[3] for d in devices]),
                                  [d[4] for d in devices] if journal else None,
                                  stored([d[5] for d in devices]) if tracked else None)
    want = [(v, t, f, s if f & (DROP | TOUCH) == 0 else b"", e if journal else b"", tr if tracked else b"")
            for v, t, f, s, e, tr in devices]
    assert codec.read_save_blobs(*blobs.part(0, n)) == want
    a = cuts.draw(st.integers(0, n))
    b = cuts.draw(st.integers(a, n))
    assert codec.read_save_blobs(*blobs.part(a, b)) == want[a:b]
    assert len(blobs.heads.tobytes()) == n * codec.SAVE_HEAD.itemsize == n * 29  # the script's HEAD
