"""PingBatch: JSON rows, CSV files and arrays in, validated numpy columns out; bad input names where."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proximity.batch import PingBatch
from proximity.errors import ValidationError, as_json, describe

GOOD = {"device_id": "dev-001", "lon": 2.35, "lat": 48.85, "accuracy_m": 8, "ts": "2026-03-02T09:00:00Z"}


def test_from_rows_converts_timestamps_and_optional_columns() -> None:
    rows = [
        GOOD,
        {**GOOD, "ts": "2026-03-02T10:00:00+01:00", "speed": 1.5, "foreground": True,
         "attrs": {"tier": "gold"}, "timezone": "Europe/Paris"},
        {**GOOD, "ts": 1772442000.5, "foreground": False},
        {**GOOD, "ts": "1772442001"},
    ]
    b = PingBatch.from_rows(rows)
    assert len(b) == 4
    assert b.ts.tolist() == [1772442000.0, 1772442000.0, 1772442000.5, 1772442001.0]
    assert b.device_id.dtype == object and b.device_id[0] == "dev-001"
    assert math.isnan(b.speed[0]) and b.speed[1] == 1.5
    assert b.foreground.tolist() == [-1, 1, 0, -1] and b.foreground.dtype == np.int8
    assert b.attrs[1] == {"tier": "gold"} and b.attrs[0] is None
    assert b.timezone[1] == "Europe/Paris" and b.timezone[0] is None


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"device_id": ""}, "device_id", "required"),
        ({"device_id": "   "}, "device_id", "non-empty"),
        ({"device_id": "a\x00b"}, "device_id", "U+0000"),
        ({"device_id": 42}, "device_id", "string"),
        ({"lat": 91}, "lat", "within"),
        ({"lon": -180.5}, "lon", "within"),
        ({"lon": "east"}, "lon", "number"),
        ({"lat": float("nan")}, "lat", "finite"),
        ({"accuracy_m": -1}, "accuracy_m", "within"),
        ({"accuracy_m": None}, "accuracy_m", "required"),
        ({"ts": "2026-03-02T09:00:00"}, "ts", "UTC offset"),
        ({"ts": "yesterday"}, "ts", "ISO 8601"),
        ({"ts": 1772442000000}, "ts", "milliseconds"),
        ({"ts": True}, "ts", "ISO 8601"),
        ({"speed": -3}, "speed", "within"),
        ({"foreground": "maybe"}, "foreground", "true or false"),
        ({"attrs": [1, 2]}, "attrs", "object"),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ],
)
def test_bad_rows_name_the_row_and_field(change: dict[str, object], field: str, needle: str) -> None:
    rows = [GOOD, GOOD, {**GOOD, **change}]
    with pytest.raises(ValidationError) as info:
        PingBatch.from_rows(rows, source="<request body>")
    err = info.value
    assert (err.row, err.field, err.source) == (2, field, "<request body>")
    assert needle in err.message
    assert as_json(err)["row"] == 2 and as_json(err)["field"] == field
    assert describe(err).startswith("<request body>: ")


def test_missing_field_and_non_object_rows() -> None:
    with pytest.raises(ValidationError, match="lat") as info:
        PingBatch.from_rows([{k: v for k, v in GOOD.items() if k != "lat"}])
    assert info.value.field == "lat" and info.value.row == 0
    with pytest.raises(ValidationError, match="JSON object") as info:
        PingBatch.from_rows([GOOD, [1, 2, 3]])
    assert info.value.row == 1


def test_collect_keeps_good_rows_and_reports_every_bad_one() -> None:
    rows = [GOOD, {**GOOD, "lat": 100}, {**GOOD, "device_id": "dev-002"}, {**GOOD, "ts": "soon"}]
    batch, errors = PingBatch.from_rows(rows, errors="collect")
    assert batch.device_id.tolist() == ["dev-001", "dev-002"]
    assert [(e.row, e.field) for e in errors] == [(1, "lat"), (3, "ts")]
    empty, errors = PingBatch.from_rows([], errors="collect")
    assert len(empty) == 0 and errors == [] and empty.lon.dtype == np.float64


def test_from_csv_with_attribute_columns(tmp_path: Path) -> None:
    p = tmp_path / "pings.csv"
    p.write_text(
        "ts,device_id,lon,lat,accuracy_m,segment,attrs,timezone\n"
        '2026-03-02T09:00:00Z,dev-001,2.35,48.85,8,student,"{""age"": 21}",Europe/Paris\n'
        "\n"
        "2026-03-02T09:00:30Z,dev-002,2.351,48.851,12.5,,,\n"
    )
    b = PingBatch.from_csv(p)
    assert b.device_id.tolist() == ["dev-001", "dev-002"]
    assert b.attrs[0] == {"segment": "student", "age": 21} and b.attrs[1] is None
    assert b.timezone.tolist() == ["Europe/Paris", None]
    assert b.accuracy_m.tolist() == [8.0, 12.5]


def test_from_csv_errors_give_file_line_col(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("ts,device_id,lon,lat,accuracy_m\n"
                 "2026-03-02T09:00:00Z,dev-001,2.35,48.85,8\n"
                 "2026-03-02T09:00:30Z,dev-001,2.35,north,8\n")
    with pytest.raises(ValidationError) as info:
        PingBatch.from_csv(p)
    err = info.value
    assert (err.line, err.col, err.field, err.row) == (3, 35, "lat", 1)
    assert describe(err).startswith(f"{p}:3:35: lat")

    p.write_text("ts,device_id,lon,accuracy_m\n")
    with pytest.raises(ValidationError, match="lat") as info:
        PingBatch.from_csv(p)
    assert info.value.line == 1

    p.write_text("ts,device_id,lon,lat,accuracy_m\n2026-03-02T09:00:00Z,dev-001,2.35\n")
    with pytest.raises(ValidationError, match="expected 5 fields") as info:
        PingBatch.from_csv(p)
    assert info.value.line == 2

    p.write_text("")
    with pytest.raises(ValidationError, match="header"):
        PingBatch.from_csv(p)


def test_from_arrays_validates_vectorially() -> None:
    b = PingBatch.from_arrays(["a", "b"], [2.35, 2.36], [48.85, 48.86], 10.0, [1e9, 1e9 + 1])
    assert b.accuracy_m.tolist() == [10.0, 10.0] and b.foreground.tolist() == [-1, -1]
    with pytest.raises(ValidationError) as info:
        PingBatch.from_arrays(["a", "b"], [2.35, 2.36], [48.85, np.nan], 10.0, [1e9, 1e9])
    assert (info.value.field, info.value.row) == ("lat", 1)
    with pytest.raises(ValidationError) as info:
        PingBatch.from_arrays(["a", ""], [2.35, 2.36], [48.85, 48.0], 10.0, [1e9, 1e9])
    assert (info.value.field, info.value.row) == ("device_id", 1)
    with pytest.raises(ValidationError, match="3 values for 2"):
        PingBatch.from_arrays(["a", "b"], [1.0, 2.0, 3.0], [1.0, 2.0], 1.0, [1e9, 1e9])


def test_take_and_concat() -> None:
    b = PingBatch.from_rows([GOOD, {**GOOD, "device_id": "x", "attrs": {"k": 1}}])
    both = PingBatch.concat([b, b.take(np.array([1]))])
    assert both.device_id.tolist() == ["dev-001", "x", "x"] and both.attrs[2] == {"k": 1}
    assert len(PingBatch.concat([])) == 0


ping_row = st.fixed_dictionaries(
    {
        "device_id": st.text(min_size=1, max_size=12).filter(lambda s: not s.isspace() and s.isprintable()),
        "lon": st.floats(-180, 180),
        "lat": st.floats(-90, 90),
        "accuracy_m": st.floats(0, 5000),
        "ts": st.floats(0, 4e9),
    },
    optional={
        "speed": st.floats(0, 100),
        "foreground": st.booleans(),
        "attrs": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
        "timezone": st.sampled_from(["Europe/Paris", "UTC", "America/New_York"]),
    },
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(ping_row, max_size=20))
def test_rows_round_trip(rows: list[dict[str, object]]) -> None:
    b = PingBatch.from_rows(rows)
    again = PingBatch.from_rows(b.to_rows())
    for name in ("lon", "lat", "accuracy_m", "ts", "speed", "foreground"):
        np.testing.assert_array_equal(getattr(again, name), getattr(b, name))
    assert again.device_id.tolist() == b.device_id.tolist()
    assert again.attrs.tolist() == b.attrs.tolist() and again.timezone.tolist() == b.timezone.tolist()


# -- device id validation over whole arrays ------------------------------------------------------------

id_like = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=" \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u2000\u200a\u3000\x00ab", max_size=6),
    st.text(min_size=250, max_size=260, alphabet="xy"),
    st.integers(), st.none(),
)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(id_like, max_size=40))
def test_array_id_validation_agrees_with_the_per_id_rule(ids: list[object]) -> None:
    from proximity.batch import _is_device_id, _valid_device_ids, _valid_device_ids_array

    arr = np.empty(len(ids), dtype=object)
    arr[:] = ids
    want = [_is_device_id(x) for x in ids]
    assert _valid_device_ids_array(arr).tolist() == want  # the array code, at every size
    assert _valid_device_ids(arr).tolist() == want  # one by one up to SMALL_IDS ids, the array code above


def test_whitespace_table_is_what_str_isspace_says() -> None:
    from proximity.batch import WHITESPACE

    assert sorted(WHITESPACE.tolist()) == [c for c in range(0x110000) if chr(c).isspace()]


def test_from_arrays_names_the_first_bad_id_row() -> None:
    ids = ["ok-1", "ok-2", "  ", "ok-3", ""]
    with pytest.raises(ValidationError) as info:
        PingBatch.from_arrays(ids, [2.35] * 5, [48.85] * 5, 5.0, [1.7e9] * 5)
    assert info.value.field == "device_id" and info.value.row == 2


_BAD = {"lon": 200.0, "lat": -95.0, "accuracy_m": -1.0, "ts": -5.0, "speed": -2.0, "foreground": 3}


@settings(max_examples=200, deadline=None)
@given(bad=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(sorted(_BAD))), max_size=6))
def test_from_arrays_names_the_first_bad_field_in_order_then_its_first_row(bad: list[tuple[int, str]]) -> None:
    """Oracle: the fields in the order lon, lat, accuracy_m, ts, speed, foreground; the first with a bad value
    is named, with its first bad row (whatever other fields hold; all checked before any is named)."""
    cols: dict[str, list[float]] = {"lon": [2.35] * 6, "lat": [48.85] * 6, "accuracy_m": [5.0] * 6,
                                    "ts": [1.7e9] * 6, "speed": [1.0] * 6, "foreground": [1] * 6}
    for row, name in bad:
        cols[name][row] = _BAD[name]
    order = ["lon", "lat", "accuracy_m", "ts", "speed", "foreground"]
    first = next((name for name in order if any(v == _BAD[name] for v in cols[name])), None)

    def build() -> PingBatch:
        return PingBatch.from_arrays([f"d{i}" for i in range(6)], cols["lon"], cols["lat"], cols["accuracy_m"],
                                     cols["ts"], speed=cols["speed"], foreground=cols["foreground"])

    if first is None:
        assert len(build()) == 6
        return
    with pytest.raises(ValidationError) as info:
        build()
    assert (info.value.field, info.value.row) == (first, cols[first].index(_BAD[first]))
