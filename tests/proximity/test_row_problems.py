"""``ping_row_problems`` lists every problem of a ping row: none exactly when the batch takes the row, and
always the one the batch's parser names (it stops at a row's first)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proximity.batch import PingBatch, ping_row_problems

_VALUES: dict[str, tuple[list[Any], list[Any]]] = {  # field: (good values, bad values)
    "device_id": (["dev-1", "a"], ["", 7, None, "x" * 300]),
    "lon": ([2.35, -180.0, "2.5"], [181.0, "east", None, float("nan")]),
    "lat": ([48.85, 90.0], [-91.0, "north", None, []]),
    "accuracy_m": ([5, 0.5], [-3, "far", None]),
    "ts": ([1_700_000_000, "2026-01-01T00:00:00+00:00"], ["yesterday", "2026-01-01T00:00:00", None, {}]),
    "speed": ([1.5, None], [-1, "fast"]),
    "foreground": ([True, False], ["maybe", 3]),
    "attrs": ([{"tier": "gold"}, None], [[1], "gold"]),
    "timezone": (["Europe/Paris", None], ["Mars/Olympus", 5]),
}


@st.composite
def rows(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from([None, 3, "row", [1, 2]]))
    row: dict[str, Any] = {}
    for name, (good, bad) in _VALUES.items():
        choice = draw(st.sampled_from(["good", "good", "bad", "absent"]))
        if choice != "absent":
            row[name] = draw(st.sampled_from(good if choice == "good" else bad))
    if draw(st.booleans()) and draw(st.booleans()):
        row[draw(st.sampled_from(["colour", "x"]))] = 1
    return row


@settings(max_examples=400, deadline=None)
@given(rows())
def test_problems_are_none_exactly_when_the_row_is_taken_and_include_the_parsers(row: Any) -> None:
    batch, errors = PingBatch.from_json([row])
    problems = ping_row_problems(row)
    assert (len(batch) == 1) == (not problems) == (not errors)
    if errors:
        assert (errors[0].field or "") in {field for field, _ in problems}
    fields = [field for field, _ in problems]
    assert len(fields) == len(set(fields))  # each field once
