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
from proximity._redis import _kernels_codec as KC
from proximity._redis import codec
from proximity._redis.scripts import DROP, SET_DUE, TOUCH
from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.errors import StateError
from proximity.presence import PresenceState, visit_snapshot
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
    # the same blobs with the offsets taken from the heads
    again = codec.SaveBlobs(blobs.heads, blobs.states, blobs.entries, blobs.tracks)
    assert [list(x) for x in again.offsets] == [list(x) for x in blobs.offsets]
    assert again.part(a, b) == blobs.part(a, b)
    assert len(blobs.heads.tobytes()) == n * codec.SAVE_HEAD.itemsize == n * 29  # the script's HEAD


# -- the loops against a per-device reference in numpy (structured arrays, one device at a time) -------------

FIELDS = codec.RECORD.names or ()


def reference_decode(stored: codec.Stored, spare: int) -> tuple[PresenceState, list[int]]:
    """A fresh table with ``spare`` free records, each device's visits taken off the front of its free
    list in stored order (so records 0, 1, ... in device order), as a store's state is after a load."""
    bodies = [stored.body(i) for i in range(len(stored))]
    n_rec = sum(max(0, len(b) - codec.HEADER.itemsize) // codec.RECORD.itemsize for b in bodies)
    state = PresenceState(len(stored), 0)
    state.grow_records(n_rec + spare)
    slot = 0
    for d, body in enumerate(bodies):
        if not body:
            continue
        head = np.frombuffer(body[: codec.HEADER.itemsize], codec.HEADER)
        state.d_last[d] = head["last"][0]
        state.d_fix[d] = head["fix"][0]
        recs = np.frombuffer(body[codec.HEADER.itemsize :], codec.RECORD)
        if len(recs):
            state.d_head[d] = slot
        for j in range(len(recs)):
            for name in FIELDS:
                getattr(state, f"r_{name}")[slot] = recs[name][j]
            state.r_dev[slot] = d
            state.r_next[slot] = slot + 1 if j + 1 < len(recs) else -1
            slot += 1
    if n_rec:
        state.meta[0] = n_rec if n_rec < len(state.r_place) else -1
        state.meta[1] -= n_rec
    return state, state.r_place[:n_rec].tolist()


def reference_encode(state: PresenceState) -> list[bytes]:
    """Each device's body: its header, then its records in pool order (b"" when it has none and no finite
    last evidence time)."""
    out = []
    for d in range(state.n_devices):
        at = np.flatnonzero(state.r_dev == d)
        if not len(at) and not np.isfinite(state.d_last[d]):
            out.append(b"")
            continue
        head = np.zeros(1, codec.HEADER)
        head["last"], head["n"], head["fix"] = state.d_last[d], len(at), state.d_fix[d]
        recs = np.zeros(len(at), codec.RECORD)
        for name in FIELDS:
            recs[name] = getattr(state, f"r_{name}")[at]
        out.append(head.tobytes() + recs.tobytes())
    return out


def assert_same_state(a: PresenceState, b: PresenceState) -> None:
    """Every array of the two tables, bit for bit (NaNs with their payloads), dtypes and shapes included."""
    assert vars(a).keys() == vars(b).keys()
    for name, x in vars(a).items():
        y = getattr(b, name)
        assert (name, x.dtype, x.shape, x.tobytes()) == (name, y.dtype, y.shape, y.tobytes())


def body(draw: st.DrawFn) -> bytes:
    """Any bits in every field (NaNs, infinities, negative place ids ...), with a consistent visit count."""
    n = draw(st.integers(0, 4))
    head = bytearray(draw(st.binary(min_size=codec.HEADER.itemsize, max_size=codec.HEADER.itemsize)))
    head[8:12] = n.to_bytes(4, "little")
    size = n * codec.RECORD.itemsize
    return bytes(head) + draw(st.binary(min_size=size, max_size=size))


@st.composite
def stored_states(draw: st.DrawFn) -> codec.Stored:
    values = [b"%d|%b" % (draw(st.integers(1, 10**12)), body(draw)) if draw(st.booleans()) else b""
              for _ in range(draw(st.integers(0, 9)))]
    return codec.Stored.parse(np.array([len(v) for v in values], np.int64), b"".join(values))


@settings(max_examples=150, deadline=None)
@given(stored=stored_states(), spare=st.integers(0, 70))
def test_decode_is_the_per_device_reference(stored: codec.Stored, spare: int) -> None:
    """... with the whole table compared (free list, heads, chains, counters, unused rows), and encoding
    the decoded table gives the stored bytes back."""
    state, place_ids = codec.decode(stored, spare)
    want, want_ids = reference_decode(stored, spare)
    assert_same_state(state, want)
    assert place_ids.dtype == np.int32 and place_ids.tolist() == want_ids
    again = codec.encode(state)
    assert [again.body(i) for i in range(len(again))] == [written(stored.body(i)) for i in range(len(stored))]


def written(body: bytes) -> bytes:
    """What encoding a stored body's state writes back: the body itself, except for a device with no visit and no
    finite last time, which is written as nothing (``encode``'s empty body; ``body`` draws such headers too)."""
    if len(body) == codec.HEADER.itemsize:
        head = np.frombuffer(body, codec.HEADER)[0]
        if head["n"] == 0 and not np.isfinite(head["last"]):
            return b""
    return body


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(0, 9), pool=st.integers(0, 40))
def test_encode_is_the_per_device_reference(data: st.DataObject, n: int, pool: int) -> None:
    """A table as the transition kernel leaves it: records of any device anywhere in the pool (free ones
    between them), any bits in every field; its buffer holds the bodies one after the other."""
    state = PresenceState(n, pool)
    state.d_dev[:] = np.frombuffer(data.draw(st.binary(min_size=state.d_dev.nbytes, max_size=state.d_dev.nbytes)),
                                   np.float64).reshape(state.d_dev.shape)
    size = len(state.r_dev)
    state.r_dev[:] = data.draw(st.lists(st.integers(-1, n - 1), min_size=size, max_size=size))
    recs = np.frombuffer(data.draw(st.binary(min_size=size * codec.RECORD.itemsize,
                                             max_size=size * codec.RECORD.itemsize)), codec.RECORD)
    for name in FIELDS:
        getattr(state, f"r_{name}")[:] = recs[name]
    got = codec.encode(state)
    want = reference_encode(state)
    assert [got.body(i) for i in range(n)] == want
    assert got.buf.tobytes() == b"".join(want) and got.start.tolist() == np.cumsum([0, *map(len, want)])[:-1].tolist()
    assert got.version.tolist() == [0] * n


def test_encode_refuses_a_record_of_a_device_it_does_not_have() -> None:
    state = PresenceState(2, 1)
    state.r_dev[0] = 2
    with pytest.raises(ValueError, match="device"):
        codec.encode(state)


def test_the_loops_share_the_layout_of_the_dtypes() -> None:
    assert (codec.HEADER.itemsize, codec.RECORD.itemsize, codec.SAVE_HEAD.itemsize) == (
        KC.HEADER_SIZE, KC.RECORD_SIZE, KC.SAVE_HEAD_SIZE)
