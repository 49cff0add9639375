"""``entry_problems`` lists every problem of a scan entry: none exactly when the scan body takes the entry,
and always the one the parser names (it stops at an entry's first)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from beacons.scans import entry_problems, scans_from_json

IBEACON = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1"
# an iBeacon advertisement (flags + manufacturer data), as a gateway captures it
RAW = "0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010001c5"
_VALUES: dict[str, tuple[list[Any], list[Any]]] = {  # field: (good values, bad values)
    "ts": ([1_700_000_000, "2026-01-01T00:00:00+00:00"], ["yesterday", None, "2026-01-01T00:00:00"]),
    "rssi": ([-60, -90.5], ["loud", None, 40]),
    "tx_power": ([-59, None], ["strong", []]),
    "observer_id": (["phone-1"], ["", 5]),
    "key": ([IBEACON], ["not a key", 3]),
    "raw": ([RAW], [7, "zz"]),
}


@st.composite
def entries(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from([None, 3, "entry"]))
    entry: dict[str, Any] = {}
    for name, (good, bad) in _VALUES.items():
        if name in ("key", "raw", "tx_power") and ("key" in entry or "raw" in entry) and draw(st.booleans()):
            continue
        choice = draw(st.sampled_from(["good", "good", "bad", "absent"]))
        if choice != "absent":
            entry[name] = draw(st.sampled_from(good if choice == "good" else bad))
    if draw(st.booleans()) and draw(st.booleans()):
        entry["colour"] = 1
    return entry


@settings(max_examples=400, deadline=None)
@given(entries())
def test_problems_are_none_exactly_when_the_entry_is_taken_and_include_the_parsers(entry: Any) -> None:
    body = {"gateway_id": "gw-1", "batch_id": "b", "sent_at": 1_700_000_000, "sightings": [entry]}
    _, errors = scans_from_json(body)
    problems = entry_problems(entry)
    assert (not problems) == (not errors)
    if errors:
        field = errors[0].field or ""
        assert field.removeprefix("sightings[0]").removeprefix(".") in {f for f, _ in problems}
