"""The campaign model: what a campaign file means once read.

Everything here is plain, immutable domain data with times already converted
(durations in seconds, windows in minutes after local midnight, zones as
``ZoneInfo``); :mod:`campaigns.loader` builds it from YAML, and the decider
reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

import campaigns._convert as _convert

TriggerOn = Literal["enter", "exit", "dwell", "beacon"]
CapKind = Literal["rolling", "calendar"]
PROXIMITY_RANK = {"immediate": 1, "near": 2, "far": 3}



def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``max`` offers per ``window_s``: the last ``window_s`` seconds (rolling), or the
    current and preceding local calendar days making up ``window_s`` (calendar)."""

    max: int
    window_s: float
    kind: CapKind = "rolling"

    @property
    def label(self) -> str:
        """``3/24h`` (rolling), ``1/1d calendar``."""
        if self.kind == "calendar":
            return f"{self.max}/{round(self.window_s / 86400)}d calendar"
        return f"{self.max}/{_human(self.window_s)}"


@dataclass(frozen=True, slots=True)
class Trigger:
    on: TriggerOn
    fences: frozenset[str] | None = None
    tags: frozenset[str] | None = None
    dwell_s: float | None = None
    zones: frozenset[str] | None = None
    proximity: str | None = None
    min_probability: float = 0.0


@dataclass(frozen=True, slots=True)
class Schedule:
    start: float | None = None
    end: float | None = None
    days: frozenset[int] | None = None
    hours: tuple[tuple[int, int], ...] | None = None
    timezone: ZoneInfo | None = None
    opening_hours: bool = False


@dataclass(frozen=True, slots=True)
class Condition:
    equals: Any = None
    one_of: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None

    def test(self, value: Any) -> bool:
        """Whether a device attribute ``value`` meets the condition. A text value (attributes read from a
        CSV column or a form) also matches a number or boolean it spells: ``"3"`` equals ``3``, ``"true"`` is ``true``."""
        if value is None:
            return False
        if self.equals is not None and not _same(value, self.equals):
            return False
        if self.one_of is not None and not any(_same(value, x) for x in self.one_of):
            return False
        if self.min is not None or self.max is not None:
            if isinstance(value, bool):
                return False
            try:
                number = float(value)
            except (TypeError, ValueError):
                return False
            if self.min is not None and number < self.min:
                return False
            if self.max is not None and number > self.max:
                return False
        return True


def _same(value: Any, expected: Any) -> bool:
    if value == expected and isinstance(value, bool) == isinstance(expected, bool):
        return True
    if not isinstance(value, str) or isinstance(expected, str):
        return False
    text = value.strip()
    if isinstance(expected, bool):
        return text.lower() == ("true" if expected else "false")
    try:
        return float(text) == float(expected)
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class Audience:
    any_segments: frozenset[str] | None = None
    all_segments: frozenset[str] | None = None
    none_segments: frozenset[str] | None = None
    attributes: Mapping[str, Condition] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class OfferTemplate:
    title: str
    body: str | None = None
    deep_link: str | None = None
    data: Mapping[str, Any] = field(default_factory=_empty)
    expires_in_s: float | None = None
    """Past ``event time + expires_in_s`` a held, delayed or queued offer is dropped instead of delivered."""
    delay_s: float | None = None
    """Deliver ``delay_s`` after the event; cancelled when the device enters the same place again first."""
    allow_empty: bool = False
    """Whether a placeholder with no value and no fallback may render as an empty text."""


@dataclass(frozen=True, slots=True)
class Limits:
    per_device: tuple[Cap, ...] = ()
    cooldown_s: float | None = None
    budget_total: int | None = None
    budget_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant of a campaign's offer: its share of the treated devices and its own offer."""

    id: str
    weight: float
    offer: OfferTemplate


@dataclass(frozen=True, slots=True)
class Experiment:
    """A control group (``holdout``, a fraction) and variants; assignment is in :mod:`campaigns.experiments`."""

    holdout: float = 0.0
    variants: tuple[Variant, ...] = ()
    salt: str = ""


#: How old an event's evidence may be (by the service's clock) for a live offer, by default.
DEFAULT_MAX_EVENT_AGE_S = 600.0

#: The attribution window of a campaign without a ``conversion:`` section.
DEFAULT_CONVERSION_WINDOW_S = 86400.0


@dataclass(frozen=True, slots=True)
class Conversion:
    """What counts as a conversion of an exposure: a visit to ``fences`` or a fence with one of ``tags``
    (both ``None``: the campaign's own places) starting within ``within_s`` after it, staying at least
    ``min_dwell_s``, with a presence probability of at least ``min_probability`` (when events carry one)."""

    within_s: float = DEFAULT_CONVERSION_WINDOW_S
    fences: frozenset[str] | None = None
    tags: frozenset[str] | None = None
    min_dwell_s: float = 0.0
    min_probability: float = 0.0


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    trigger: Trigger
    offer: OfferTemplate
    name: str = ""
    status: Literal["active", "paused"] = "active"
    priority: int = 0
    schedule: Schedule = field(default_factory=Schedule)
    audience: Audience = field(default_factory=Audience)
    limits: Limits = field(default_factory=Limits)
    experiment: Experiment | None = None
    conversion: Conversion = field(default_factory=Conversion)
    max_event_age_s: float = DEFAULT_MAX_EVENT_AGE_S
    source: str | None = None
    line: int | None = None
    col: int | None = None
    """Where the campaign's id is in its file."""

    def conversion_places(self, fences: Mapping[str, FenceInfo]) -> frozenset[str] | None:
        """The fence ids where a visit converts (``None``: any fence): the ``conversion.visit``
        fences and tags, else the trigger's."""
        conv = self.conversion
        ids, tags = (conv.fences, conv.tags) if conv.fences is not None or conv.tags is not None else (
            self.trigger.fences, self.trigger.tags)
        if ids is None and tags is None:
            return None
        return frozenset(
            f.id for f in fences.values() if (ids is None or f.id in ids) and (tags is None or f.tags & tags)
        ) | (frozenset(ids) if tags is None and ids is not None else frozenset())


@dataclass(frozen=True, slots=True)
class QuietHours:
    windows: tuple[tuple[int, int], ...]
    days: frozenset[int] | None = None
    mode: Literal["hold", "drop"] = "hold"


@dataclass(frozen=True, slots=True)
class Defaults:
    timezone: ZoneInfo | None = None
    per_device: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True, slots=True)
class CampaignSet:
    """Every campaign of one or more files, with the file's defaults."""

    campaigns: tuple[Campaign, ...]
    defaults: Defaults = field(default_factory=Defaults)
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.campaigns)

    def by_id(self, campaign_id: str) -> Campaign:
        for c in self.campaigns:
            if c.id == campaign_id:
                return c
        raise KeyError(campaign_id)


@dataclass(frozen=True, slots=True)
class FenceInfo:
    """What campaigns need to know of a fence: its id, name, tags and properties.

    ``timezone`` and ``opening`` (weekday -> windows) are read from the
    properties ``timezone`` and ``opening_hours``; use :meth:`from_fence` on a
    ``geofence.Fence`` (or anything with ``id, name, tags, properties``).
    """

    id: str
    name: str = ""
    tags: frozenset[str] = frozenset()
    properties: Mapping[str, Any] = field(default_factory=_empty)
    timezone: ZoneInfo | None = None
    opening: Mapping[int, tuple[tuple[int, int], ...]] | None = None

    @classmethod
    def create(
        cls, id: str, name: str = "", tags: Any = (), properties: Mapping[str, Any] | None = None
    ) -> FenceInfo:
        """Build one, reading ``timezone`` and ``opening_hours`` from ``properties`` (raises ``ValueError``)."""
        props = dict(properties or {})
        zone = _convert.parse_timezone(props["timezone"]) if props.get("timezone") else None
        opening = _convert.parse_opening_hours(props["opening_hours"]) if props.get("opening_hours") else None
        return cls(
            id=str(id),
            name=str(name or props.get("name") or id),
            tags=frozenset(str(t) for t in (tags or ())),
            properties=MappingProxyType(props),
            timezone=zone,
            opening=MappingProxyType(opening) if opening is not None else None,
        )

    @classmethod
    def from_fence(cls, fence: Any) -> FenceInfo:
        return cls.create(
            fence.id, getattr(fence, "name", "") or "", getattr(fence, "tags", ()) or (),
            getattr(fence, "properties", None) or {},
        )


def fence_infos(fences: Any) -> dict[str, FenceInfo]:
    """``{fence id: FenceInfo}`` from ``geofence.Fence`` objects (or ``FenceInfo`` themselves)."""
    out: dict[str, FenceInfo] = {}
    for f in fences:
        info = f if isinstance(f, FenceInfo) else FenceInfo.from_fence(f)
        out[info.id] = info
    return out


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0 and (unit != "d" or seconds >= 172800):
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# ------------------------------------------------------------ placeholders

PLACEHOLDER_ROOTS = ("store.name", "store.id", "store.<property>", "device.id", "device.<attribute>",
                     "zone", "campaign.id", "campaign.name", "dwell_min")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^(store|device)\.[A-Za-z_][A-Za-z0-9_-]*$|^(zone|dwell_min|campaign\.id|campaign\.name)$")


def placeholders(text: str) -> list[tuple[int, str]]:
    """``(offset, name)`` of each placeholder; raises ``ValueError`` (with the offset) for a malformed one."""
    out = []
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        if tok in ("{", "}"):
            raise PlaceholderError(m.start(), f"unmatched {tok!r} (write '{tok}{tok}' for a literal brace)")
        name = m.group(1).partition("|")[0].strip()
        if not _NAME.match(name):
            raise PlaceholderError(m.start(), f"unknown placeholder {{{name}}}{_did_you_mean(name)}")
        out.append((m.start(), name))
    return out


class PlaceholderError(ValueError):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


def _did_you_mean(name: str) -> str:
    import difflib

    known = ["store.name", "store.id", "device.id", "zone", "campaign.id", "campaign.name", "dwell_min"]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    options = "{store.name}, {store.id}, {store.<property>}, {device.id}, {device.<attribute>}, {zone}, {campaign.id}, {campaign.name}, {dwell_min}"
    return f"; did you mean {{{close[0]}}}?" if close else f" (use one of {options})"


def render(text: str, values: Mapping[str, Any], empty: list[str] | None = None) -> str:
    """Fill ``{placeholders}`` from ``values``. ``{name|fallback}`` renders ``fallback`` when the value is
    missing or empty; otherwise a missing value renders as an empty string and its name is appended to
    ``empty`` (when given)."""

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        if m.group(1) is None:
            return tok
        name, bar, fallback = m.group(1).partition("|")
        value = values.get(name.strip())
        text = "" if value is None else str(value)
        if text == "" and bar:
            return fallback.strip()
        if text == "" and empty is not None:
            empty.append(name.strip())
        return text

    return _TOKEN.sub(sub, text)


def placeholder_fallbacks(text: str) -> dict[str, bool]:
    """``{name: has a fallback}`` of each placeholder in ``text`` (a name used both ways: ``False``)."""
    out: dict[str, bool] = {}
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            name, bar, _ = m.group(1).partition("|")
            out[name.strip()] = out.get(name.strip(), True) and bool(bar)
    return out
