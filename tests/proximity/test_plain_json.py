"""The plain-body reader (``proximity.plain_json``) against the general path it stands in for.

Oracle: ``parse_json`` + ``ping_rows`` + ``PingBatch.from_json`` + ``devices_of`` (orjson, dicts). For any
body the reader either declines (``None``) or gives exactly what the general path gives for a body it
accepts with no bad row: the same columns bit for bit, the same batch_id and devices.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proximity.batch import PingBatch
from proximity.plain_json import plain_pings
from proximity.service.bodies import PLAIN_MIN_ROWS, devices_of, ping_body, ping_rows
from proximity.service.codec import parse_json
from proximity.service.errors import ApiError

MAX_ROWS = 50
COLUMNS = ("lon", "lat", "accuracy_m", "ts", "speed", "foreground", "row")


def general(body: bytes, max_rows: int = MAX_ROWS):
    """What the service's general path makes of ``body``: (batch, errors, batch_id, devices), or None (a 4xx)."""
    try:
        doc = parse_json(body)
        rows, batch_id = ping_rows(doc, max_rows)
    except ApiError:
        return None
    batch, errors = PingBatch.from_json(rows)
    return batch, errors, batch_id, devices_of(rows, "device_id")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check(body: bytes, max_rows: int = MAX_ROWS) -> bool:
    """The reader agrees with the general path on ``body``; returns whether the reader took it."""
    got = plain_pings(body, max_rows)
    if got is None:
        return False
    ref = general(body, max_rows)
    assert ref is not None, body
    batch, errors, batch_id, devices = ref
    assert not errors, (body, errors)
    for name in COLUMNS:
        assert same_bits(getattr(got.batch, name), getattr(batch, name)), (name, body)
    assert got.batch.device_id.tolist() == batch.device_id.tolist()
    assert got.batch.attrs.tolist() == batch.attrs.tolist() and got.batch.timezone.tolist() == batch.timezone.tolist()
    assert got.batch_id == batch_id
    assert got.devices == devices
    return True


ids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
any_ids = st.one_of(ids, st.text(min_size=0, max_size=6))
# numbers as JSON text: shortest floats, integers, exponents, many digits, leading zeros of fractions
finite = st.floats(allow_nan=False, allow_infinity=False)
digits = st.text("0123456789", min_size=1, max_size=22)
number_text = st.one_of(
    finite.map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.tuples(st.sampled_from(["", "-"]), digits, digits).map(lambda t: f"{t[0]}{int(t[1])}.{t[2]}"),
    st.tuples(st.sampled_from(["", "-"]), digits, st.sampled_from(["e", "E", "e+", "e-", "E-"]),
              st.integers(0, 400)).map(lambda t: f"{t[0]}{int(t[1])}{t[2]}{t[3]}"),
    st.sampled_from(["0", "-0", "-0.0", "0.0", "1e22", "1e23", "9007199254740993", "0.1", "-180", "180.0",
                     "1796432905.600001", "48.864548", "2.325098", "1e-22", "4.9e-324", "1.7976931348623157e308"]),
)
in_range = {
    "lon": st.floats(-180, 180).map(repr),
    "lat": st.floats(-90, 90).map(repr),
    "accuracy_m": st.one_of(st.integers(0, 5000).map(str), st.floats(0, 5000).map(repr)),
    "ts": st.one_of(st.floats(0, 1e11).map(repr), st.integers(0, 10**11).map(str),
                    st.decimals(0, 10**10, places=6).map(str)),
}
FIELDS = ("device_id", "lon", "lat", "accuracy_m", "ts")
space = st.sampled_from(["", "", "", " ", "\n", "\t ", "\r\n"])


@st.composite
def ping_text(draw, wild: bool) -> str:
    names = list(FIELDS)
    if wild:
        names = draw(st.lists(st.sampled_from([*FIELDS, "speed", "attrs", "x"]), min_size=0, max_size=7))
    else:
        names = draw(st.permutations(names))
    parts = []
    for name in names:
        if name == "device_id":
            value = json.dumps(draw(any_ids if wild else ids))
        elif wild:
            value = draw(st.one_of(number_text, st.sampled_from(['"1"', "true", "null", "[]", "{}", "01", "1.", "-"])))
        else:
            value = draw(in_range[name] if draw(st.integers(0, 5)) else number_text)  # mostly good values
        parts.append(f'{draw(space)}"{name}"{draw(space)}:{draw(space)}{value}{draw(space)}')
    return "{" + ",".join(parts) + "}"


@st.composite
def body_text(draw, wild: bool) -> bytes:
    rows = draw(st.lists(ping_text(wild), min_size=0 if wild else 1, max_size=8))
    listed = "[" + ",".join(f"{draw(space)}{r}{draw(space)}" for r in rows) + "]"
    shape = draw(st.sampled_from(["object", "object", "bare", "batch_id", "null_id", "sent_at"] if wild else
                                 ["object", "bare", "batch_id", "null_id"]))
    if shape == "bare":
        text = listed
    elif shape == "batch_id":
        text = '{"batch_id":' + json.dumps(draw(any_ids if wild else ids)) + ',"pings":' + listed + "}"
    elif shape == "null_id":
        text = '{"pings":' + listed + ', "batch_id": null}'
    elif shape == "sent_at":
        text = '{"pings":' + listed + ',"sent_at":1700000000}'
    else:
        text = '{"pings":' + listed + "}"
    text = draw(space) + text + draw(space)
    if wild and draw(st.booleans()):  # cut or garble it somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "]", "}", ",", '"', "\\", "é", "x"])) + text[at + 1 :]
    return text.encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_text(wild=False))
def test_plain_bodies_read_as_the_general_path_reads_them(body: bytes) -> None:
    check(body)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_text(wild=True))
def test_any_body_is_read_the_same_or_declined(body: bytes) -> None:
    check(body)


@settings(max_examples=300, deadline=None)
@given(number_text)
def test_numbers_are_the_correctly_rounded_doubles(text: str) -> None:
    body = ('{"pings":[{"device_id":"a","lon":0,"lat":0,"accuracy_m":1,"ts":' + text + "}]}").encode()
    got = plain_pings(body, 1)
    want = json.loads(text)  # exact integers and correctly rounded floats
    ok = isinstance(want, int | float) and 0 <= float(want) <= 1e11
    assert (got is not None) == ok
    if got is not None:
        assert got.batch.ts[0] == float(want)
        assert math.copysign(1, got.batch.ts[0]) == math.copysign(1, float(want))


def test_the_common_bodies_are_taken() -> None:
    row = '{"device_id":"d14680","lon":2.325098,"lat":48.864548,"accuracy_m":8,"ts":1796432905.600001}'
    assert check(('{"pings":[' + ",".join([row] * 20) + "]}").encode())
    assert check(("[" + row + "]").encode())
    assert check(('{"batch_id":"b-1","pings":[' + row + "]}").encode())
    sdk = json.dumps({"batch_id": "x", "pings": [{"device_id": "phone-1", "lon": 2.3250981234567891,
                                                   "lat": 48.86454812345678, "accuracy_m": 12.5, "ts": 1.7e9}]})
    assert check(sdk.encode())  # 17-digit coordinates: converted by float, the same doubles


@pytest.mark.parametrize("body", [
    b'{"pings":[]}', b"[]", b"{}", b"", b"null",
    b'{"pings":[{"device_id":"a","lon":1,"lat":2,"accuracy_m":3,"ts":4,"speed":1}]}',  # an optional field
    b'{"pings":[{"device_id":"a","lon":1,"lat":2,"accuracy_m":3}]}',  # a field missing
    b'{"pings":[{"device_id":"a","lon":1,"lon":1,"lat":2,"accuracy_m":3,"ts":4}]}',  # a field twice
    b'{"pings":[{"device_id":"a\\u0041","lon":1,"lat":2,"accuracy_m":3,"ts":4}]}',  # an escape
    b'{"pings":[{"device_id":" ","lon":1,"lat":2,"accuracy_m":3,"ts":4}]}',  # a blank id
    b'{"pings":[{"device_id":"a","lon":1,"lat":2,"accuracy_m":3,"ts":"2026-01-01T00:00:00Z"}]}',
    b'{"pings":[{"device_id":"a","lon":181,"lat":2,"accuracy_m":3,"ts":4}]}',  # out of range
    b'{"pings":[{"device_id":"a","lon":1,"lat":2,"accuracy_m":3,"ts":4}],"sent_at":5}',
    b'{"pings":[{"device_id":"a","lon":1,"lat":2,"accuracy_m":3,"ts":4}]} x',
    b'{"pings":[{"device_id":"a","lon":01,"lat":2,"accuracy_m":3,"ts":4}]}',
])
def test_bodies_the_reader_leaves_to_the_general_path(body: bytes) -> None:
    assert plain_pings(body, MAX_ROWS) is None


def test_a_bad_batch_id_of_a_plain_body_gets_the_general_400() -> None:
    body = b'{"pings":[{"device_id":"a","lon":1,"lat":2,"accuracy_m":3,"ts":4}],"batch_id":""}'
    with pytest.raises(ApiError) as exc:
        ping_body(body, MAX_ROWS)
    assert exc.value.status == 400 and "batch_id" in str(exc.value.body)
    many = body.replace(b'""', b'"b1"').replace(b"}]", b"}" + b',{"device_id":"b","lon":1,"lat":2,"accuracy_m":3,"ts":4}' * PLAIN_MIN_ROWS + b"]")
    rows, batch_id, devices, doc = ping_body(many, 2 * PLAIN_MIN_ROWS)
    assert isinstance(rows, PingBatch) and batch_id == "b1" and devices == ["a", "b"] and doc is None


def test_small_bodies_go_the_general_way() -> None:
    """(the coalescer reads many small requests' rows in one call, cheaper than a batch each)"""
    row = b'{"device_id":"a","lon":1,"lat":2,"accuracy_m":3,"ts":4}'
    small = b'{"pings":[' + b",".join([row] * (PLAIN_MIN_ROWS - 2)) + b"]}"  # with the envelope's, one "{" short
    rows, _, devices, doc = ping_body(small, 1000)
    assert isinstance(rows, list) and doc is not None and devices == ["a"]
    rows, _, devices, doc = ping_body(small.replace(b"]}", b"," + row + b"]}"), 1000)
    assert isinstance(rows, PingBatch) and doc is None and devices == ["a"]


def test_too_many_rows_are_left_to_the_general_path() -> None:
    row = b'{"device_id":"a","lon":1,"lat":2,"accuracy_m":3,"ts":4}'
    body = b'{"pings":[' + b",".join([row] * 3) + b"]}"
    assert plain_pings(body, 3) is not None
    assert plain_pings(body, 2) is None  # the general path answers 413


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 4), st.booleans()), min_size=1, max_size=5))
def test_parts_read_already_stack_with_json_rows_in_request_order(shape) -> None:
    """A coalesced call's parts, some read as plain batches and some JSON rows (with a bad row or not), make
    the batch and the errors that reading every part's rows as JSON makes."""
    from proximity.service.host import _parse_parts

    parts, as_rows, k = [], [], 0
    for plain, n, bad in shape:
        rows = [{"device_id": f"d{k + i}", "lon": 1.0 + i, "lat": 2.0, "accuracy_m": 5, "ts": 1.7e9 + k + i}
                for i in range(n)]
        k += n
        if bad and not plain:
            rows[0] = {**rows[0], "lat": 123.0}
        as_rows.append(rows)
        parts.append(PingBatch.from_json(rows)[0] if plain else rows)
    base = np.cumsum([0] + [len(p) for p in as_rows[:-1]]).astype(np.int64)
    got, errors = _parse_parts(parts, base)
    want, want_errors = PingBatch.from_json([r for rows in as_rows for r in rows])
    for name in COLUMNS:
        assert same_bits(getattr(got, name), getattr(want, name)), name
    assert got.device_id.tolist() == want.device_id.tolist()
    assert [(e.row, e.field) for e in errors] == [(e.row, e.field) for e in want_errors]


def test_a_body_of_braces_costs_no_more_than_a_full_batch() -> None:
    """(the arrays are sized by the row limit, not by the body's braces: 4 MB of "{" must not mean ~0.5 GB)"""
    import tracemalloc

    body = b'{"pings":[' + b"{" * 4_000_000 + b"]}"
    tracemalloc.start()
    try:
        assert plain_pings(body, 500) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(body)  # the body's bytes once or twice (ids), a few small arrays
