"""Conversions from the YAML's human forms to numbers, done once at load time.

Durations (``90s``, ``10m``, ``1h30m``, ``2d``, or a number of seconds), clock
windows (``09:00-20:00``, ``22:00-02:00`` crossing midnight), weekdays
(``mon``, ``mon-fri``, ``sat-sun``), date-times with a zone, IANA time zones.
Each function raises ``ValueError`` with a message fit for the user; the loader
adds the location.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

CLOCK_PATTERN = r"([01]\d|2[0-3]):[0-5]\d|24:00"
WINDOW_PATTERN = rf"^\s*({CLOCK_PATTERN})\s*-\s*({CLOCK_PATTERN})\s*$"
_WINDOW_RE = re.compile(WINDOW_PATTERN)

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_PATTERN = r"^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?$"


def parse_duration(value: object) -> float:
    """Seconds in a duration: a positive number of seconds or ``5m``, ``1h30m``, ``250ms``, ``2d``, ``1w``."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like '10m', '1h30m', '2d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.match(value):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(value))
    else:
        raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like '10m', '1h30m', '2d'")
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"duration {value!r} must be greater than zero")
    return seconds


PERCENT_PATTERN = r"^\s*\d+(\.\d+)?\s*%\s*$"
_PERCENT_RE = re.compile(PERCENT_PATTERN)


def parse_share(value: object) -> float:
    """A share strictly between 0% and 100%, written ``'10%'`` or ``'2.5%'``, as a fraction (``0.1``)."""
    if not isinstance(value, str) or not _PERCENT_RE.match(value):
        raise ValueError(f"bad share {value!r}: write a percentage like '10%'")
    share = float(value.strip().rstrip("%").strip()) / 100.0
    if not 0.0 < share < 1.0:
        raise ValueError(f"{value.strip()} must be above 0% and below 100% (a holdout of 0% has no control group, "
                         "one of 100% sends nothing)")
    return share


def parse_clock(text: str) -> int:
    """Minutes after midnight for ``HH:MM`` (``24:00`` is 1440)."""
    h, m = text.strip().split(":")
    return int(h) * 60 + int(m)


def parse_window(value: object) -> tuple[int, int]:
    """``(start, end)`` minutes after midnight for ``HH:MM-HH:MM``; ``end < start`` crosses midnight."""
    if not isinstance(value, str):
        raise ValueError(f"bad time window {value!r}: expected 'HH:MM-HH:MM' like '09:00-20:00'")
    m = _WINDOW_RE.match(value)
    if not m:
        raise ValueError(f"bad time window {value!r}: expected 'HH:MM-HH:MM' like '09:00-20:00' or '22:00-02:00'")
    start, end = parse_clock(m.group(1)), parse_clock(m.group(3))
    if start == 1440:
        start = 0
    if start == end or (start == 0 and end == 0):
        raise ValueError(f"empty time window {value!r}: start and end are the same time")
    return start, end


def parse_windows(value: object) -> tuple[tuple[int, int], ...]:
    """One window or a list (or comma-separated string) of windows."""
    items: list[object]
    if isinstance(value, str):
        items = [v for v in value.split(",")]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"bad time windows {value!r}: expected 'HH:MM-HH:MM' or a list of them")
    if not items:
        raise ValueError("empty list of time windows")
    return tuple(parse_window(v) for v in items)


def parse_days(value: object) -> frozenset[int]:
    """Weekday numbers (Monday 0) from ``mon``, ``mon-fri``, ``fri-mon`` (wrapping), or a list of those."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(f"bad days {value!r}: expected a list like [mon, tue] or a range like 'mon-fri'")
    out: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        if not re.match(DAY_PATTERN, text):
            raise ValueError(f"bad day {item!r}: use mon, tue, wed, thu, fri, sat, sun or a range like 'mon-fri'")
        first, _, last = text.partition("-")
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        i = a
        while True:
            out.add(i)
            if i == b:
                break
            i = (i + 1) % 7
    return frozenset(out)


def parse_timezone(value: object) -> ZoneInfo:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"bad time zone {value!r}: expected an IANA name like 'Europe/Paris'")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        import difflib

        close = difflib.get_close_matches(value, sorted(available_timezones()), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown time zone {value!r}{hint}") from None


def parse_datetime(value: object, zone: dt.tzinfo | None) -> float:
    """Epoch seconds of a date-time with an offset (or a date / naive date-time read in ``zone``)."""
    when: dt.datetime
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"bad date-time {value!r}: expected ISO 8601 like '2026-11-01T09:00:00+01:00'"
            ) from None
    else:
        raise ValueError(f"bad date-time {value!r}: expected ISO 8601 like '2026-11-01T09:00:00+01:00'")
    if when.tzinfo is None or when.utcoffset() is None:
        if zone is None:
            raise ValueError(
                f"date-time {value!r} has no zone: add an offset (e.g. '+01:00' or 'Z') or set schedule.timezone"
            )
        when = when.replace(tzinfo=zone)
    return when.timestamp()


def parse_opening_hours(value: object) -> dict[int, tuple[tuple[int, int], ...]]:
    """A fence's ``opening_hours`` (``{"mon-fri": "09:00-20:00", "sat": "10:00-19:00", "sun": "closed"}``)
    as weekday -> windows; days not listed are closed."""
    if not isinstance(value, dict):
        raise ValueError(f"opening_hours must be a mapping like {{'mon-fri': '09:00-20:00'}}, not {value!r}")
    out: dict[int, tuple[tuple[int, int], ...]] = {}
    for days, windows in value.items():
        day_set = parse_days([d.strip() for d in str(days).split(",")])
        spans = () if str(windows).strip().lower() in {"closed", "off", ""} else parse_windows(windows)
        for d in day_set:
            out[d] = out.get(d, ()) + spans
    return out


def in_windows(weekday: int, minute: int, days: frozenset[int] | None, windows: tuple[tuple[int, int], ...]) -> bool:
    """Whether local ``weekday`` (Monday 0) and ``minute`` fall in one of ``windows`` on allowed ``days``.

    A window crossing midnight (``22:00-02:00``) belongs to the day it starts on:
    Friday's late window covers Saturday 01:00 even when only Friday is allowed.
    """
    allowed = days if days is not None else frozenset(range(7))
    for start, end in windows:
        if start < end:
            if weekday in allowed and start <= minute < end:
                return True
        else:
            if weekday in allowed and minute >= start:
                return True
            if (weekday - 1) % 7 in allowed and minute < end:
                return True
    return False
