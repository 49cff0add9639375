"""Schedules, opening hours and quiet hours in local time."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns import FenceInfo, QuietHours, Schedule
from campaigns._convert import in_windows, parse_days, parse_duration, parse_window
from campaigns.schedule import quiet_until, schedule_refusal

PARIS = ZoneInfo("Europe/Paris")
NY = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *args: int) -> float:
    return dt.datetime(*args, tzinfo=zone).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("250ms", 0.25), (45, 45), (1.5, 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10", "ten minutes", "5 x", "-5m", 0, -3, True, None, float("nan")])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_days_and_ranges() -> None:
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days(["sat", "sun"]) == frozenset({5, 6})
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})  # wraps around the week
    with pytest.raises(ValueError):
        parse_days("weekday")


def brute(weekday: int, minute: int, days: frozenset[int] | None, windows: tuple[tuple[int, int], ...]) -> bool:
    """Oracle: expand every window into the (day, minute) slots it covers over the week."""
    allowed = days if days is not None else frozenset(range(7))
    covered = set()
    for d in allowed:
        for start, end in windows:
            length = (end - start) % 1440 or 1440
            for k in range(length):
                m = start + k
                covered.add(((d + m // 1440) % 7, m % 1440))
    return (weekday, minute) in covered


clock = st.integers(0, 1439)


@given(
    weekday=st.integers(0, 6),
    minute=clock,
    days=st.none() | st.frozensets(st.integers(0, 6), min_size=1),
    windows=st.lists(st.tuples(clock, st.integers(1, 1440)).filter(lambda w: w[0] != w[1] % 1440), min_size=1, max_size=3),
)
def test_windows_match_a_brute_force_week(weekday: int, minute: int, days: frozenset[int] | None, windows: list[tuple[int, int]]) -> None:
    w = tuple(windows)
    assert in_windows(weekday, minute, days, w) == brute(weekday, minute, days, w)


def test_window_crossing_midnight_belongs_to_its_start_day() -> None:
    s = Schedule(days=frozenset({4}), hours=(parse_window("22:00-02:00"),))  # Friday nights
    assert schedule_refusal(s, at(PARIS, 2026, 3, 6, 23, 0), PARIS) is None  # Friday 23:00
    assert schedule_refusal(s, at(PARIS, 2026, 3, 7, 1, 30), PARIS) is None  # Saturday 01:30: still Friday's night
    assert "outside hours" in (schedule_refusal(s, at(PARIS, 2026, 3, 7, 2, 0), PARIS) or "")
    assert "outside hours" in (schedule_refusal(s, at(PARIS, 2026, 3, 6, 1, 0), PARIS) or "")  # Friday 01:00 is Thursday's night


def test_start_end_and_zone() -> None:
    s = Schedule(start=at(PARIS, 2026, 6, 1, 9, 0), end=at(PARIS, 2026, 6, 2, 9, 0), hours=(parse_window("09:00-12:00"),))
    assert "not started" in (schedule_refusal(s, at(PARIS, 2026, 6, 1, 8, 59), PARIS) or "")
    assert schedule_refusal(s, at(PARIS, 2026, 6, 1, 9, 0), PARIS) is None
    assert "ended" in (schedule_refusal(s, at(PARIS, 2026, 6, 2, 9, 0), PARIS) or "")
    # the same instant is 03:00 in New York: outside the hours there
    assert "outside hours" in (schedule_refusal(s, at(PARIS, 2026, 6, 1, 9, 30), NY) or "")


def test_opening_hours_from_the_fence() -> None:
    shop = FenceInfo.create("s", "Shop", (), {"timezone": "Europe/Paris", "opening_hours": {"mon-fri": "09:00-20:00", "sat": "10:00-13:00", "sun": "closed"}})
    bar = FenceInfo.create("b", "Bar", (), {"timezone": "Europe/Paris", "opening_hours": {"fri": "18:00-02:00"}})
    s = Schedule(opening_hours=True)
    assert schedule_refusal(s, at(PARIS, 2026, 3, 9, 9, 0), None, shop) is None  # Monday 09:00 (zone from the fence)
    assert "store closed" in (schedule_refusal(s, at(PARIS, 2026, 3, 9, 20, 0), None, shop) or "")
    assert "store closed" in (schedule_refusal(s, at(PARIS, 2026, 3, 8, 12, 0), None, shop) or "")  # Sunday
    assert schedule_refusal(s, at(PARIS, 2026, 3, 14, 12, 59), None, shop) is None  # Saturday
    assert schedule_refusal(s, at(PARIS, 2026, 3, 14, 1, 0), None, bar) is None  # Saturday 01:00: Friday's night
    assert "store closed" in (schedule_refusal(s, at(PARIS, 2026, 3, 13, 1, 0), None, bar) or "")
    nohours = FenceInfo.create("n", "No hours")
    assert schedule_refusal(s, at(PARIS, 2026, 3, 8, 3, 0), None, nohours) is None  # unknown hours: not restricted


def test_bad_fence_properties_raise() -> None:
    with pytest.raises(ValueError, match="time zone"):
        FenceInfo.create("x", properties={"timezone": "Nowhere/City"})
    with pytest.raises(ValueError, match="window"):
        FenceInfo.create("x", properties={"opening_hours": {"mon": "9-5"}})


def test_quiet_until_the_end_of_the_window_in_local_time() -> None:
    q = QuietHours(windows=(parse_window("21:30-08:00"),))
    assert quiet_until(q, at(PARIS, 2026, 3, 9, 21, 29), PARIS) is None
    assert quiet_until(q, at(PARIS, 2026, 3, 9, 21, 30), PARIS) == at(PARIS, 2026, 3, 10, 8, 0)
    assert quiet_until(q, at(PARIS, 2026, 3, 10, 3, 0), PARIS) == at(PARIS, 2026, 3, 10, 8, 0)
    assert quiet_until(q, at(PARIS, 2026, 3, 10, 8, 0), PARIS) is None
    # across the spring-forward night (29 March 2026): 08:00 local is CEST
    assert quiet_until(q, at(PARIS, 2026, 3, 28, 23, 0), PARIS) == at(PARIS, 2026, 3, 29, 8, 0)
    weekend = QuietHours(windows=(parse_window("00:00-24:00"),), days=frozenset({6}))
    assert quiet_until(weekend, at(PARIS, 2026, 3, 8, 15, 0), PARIS) == at(PARIS, 2026, 3, 9, 0, 0)
