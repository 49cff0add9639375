"""When a campaign may fire, and when quiet hours end.

All checks read the local wall-clock time of one zone (``zoneinfo``): days and
hours windows (a window crossing midnight belongs to the day it starts), the
campaign's start/end, the store's opening hours.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from campaigns._convert import DAYS, in_windows
from campaigns.model import FenceInfo, QuietHours, Schedule

UTC = ZoneInfo("UTC")


def local(ts: float, zone: ZoneInfo | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, zone or UTC)


def _clock(t: dt.datetime) -> tuple[int, int]:
    return t.weekday(), t.hour * 60 + t.minute


def _fmt(ts: float, zone: ZoneInfo | None) -> str:
    return local(ts, zone).isoformat(timespec="minutes")


def schedule_refusal(
    schedule: Schedule, ts: float, zone: ZoneInfo | None, fence: FenceInfo | None = None
) -> str | None:
    """Why ``schedule`` does not allow an offer at ``ts`` (local times in ``zone``), or ``None``."""
    if schedule.start is not None and ts < schedule.start:
        return f"schedule: not started (starts {_fmt(schedule.start, zone)})"
    if schedule.end is not None and ts >= schedule.end:
        return f"schedule: ended ({_fmt(schedule.end, zone)})"
    t = local(ts, zone)
    weekday, minute = _clock(t)
    if schedule.hours is not None:
        if not in_windows(weekday, minute, schedule.days, schedule.hours):
            return f"schedule: outside hours ({DAYS[weekday]} {t:%H:%M} {zone or 'UTC'})"
    elif schedule.days is not None and weekday not in schedule.days:
        return f"schedule: not on {DAYS[weekday]} ({zone or 'UTC'})"
    if schedule.opening_hours and fence is not None and fence.opening is not None:
        store_zone = fence.timezone or zone
        st = local(ts, store_zone)
        sday, smin = _clock(st)
        # Each day's windows belong to that day; one crossing midnight keeps the store open into the next.
        open_now = any(in_windows(sday, smin, frozenset([d]), ws) for d, ws in fence.opening.items())
        if not open_now:
            return f"schedule: store closed ({DAYS[sday]} {st:%H:%M} {store_zone or 'UTC'})"
    return None


def quiet_until(quiet: QuietHours, ts: float, zone: ZoneInfo | None) -> float | None:
    """When the quiet window that contains ``ts`` ends (epoch s), or ``None`` when ``ts`` is not quiet."""
    t = local(ts, zone)
    weekday, minute = _clock(t)
    allowed = quiet.days if quiet.days is not None else frozenset(range(7))
    ends: list[dt.datetime] = []
    for start, end in quiet.windows:
        if start < end:
            if weekday in allowed and start <= minute < end:
                ends.append(_at(t.date(), end))
        else:
            if weekday in allowed and minute >= start:
                ends.append(_at(t.date() + dt.timedelta(days=1), end))
            elif (weekday - 1) % 7 in allowed and minute < end:
                ends.append(_at(t.date(), end))
    if not ends:
        return None
    return max(_wall(d, zone) for d in ends)


def _at(day: dt.date, minute: int) -> dt.datetime:
    """The naive wall-clock time ``minute`` minutes after ``day``'s midnight."""
    return dt.datetime(day.year, day.month, day.day) + dt.timedelta(minutes=minute)


def _wall(naive: dt.datetime, zone: ZoneInfo | None) -> float:
    return naive.replace(tzinfo=zone or UTC).timestamp()
