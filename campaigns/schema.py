"""The campaign file's structure, written once.

The same declarations drive the loader's checks (with ``file:line:col`` for
each problem) and :func:`json_schema` (draft 2020-12, for editors): there is no
second, hand-copied description of the format to drift away from this one.

The building blocks (specs, :data:`INVALID`, :class:`Context`, ...) live in
:mod:`campaigns.specs`; the offer, experiment and conversion declarations in
:mod:`campaigns.schema_offer`. Both are re-exported here.
"""

from __future__ import annotations

from typing import Any

from campaigns.schema_offer import (
    CONTENT,
    CONVERSION,
    DEFAULT_MAX_EVENT_AGE_S,
    EXPERIMENT,
    MAX_EVENT_AGE,
    OFFER,
    OFFER_TIMING,
    VARIANT,
    VARIANT_OFFER,
)
from campaigns.specs import (
    DATETIME,
    DAYS,
    DURATION,
    IDENT,
    INVALID,
    TIMEZONE,
    WINDOWS,
    At,
    Boolean,
    Context,
    Converted,
    Either,
    Integer,
    Key,
    Loaded,
    Number,
    Obj,
    Probability,
    Scalar,
    Seq,
    Spec,
    Text,
)

SCHEMA_ID = "https://proximity-engine.invalid/schemas/campaigns.json"

CAP = Obj(
    {
        "max": Key(Integer(minimum=1, doc="How many offers the window allows."), required=True),
        "window": Key(DURATION, required=True),
        "kind": Key(
            Text(
                enum=("rolling", "calendar"),
                doc="rolling: the last `window` before now; calendar: whole days in the device's time zone (window in days).",
            ),
            default="rolling",
        ),
    },
    doc="At most `max` offers per `window`.",
)
CAPS = Either(mapping=CAP, seq=Seq(CAP), doc="One cap or a list of caps.")

QUIET_HOURS = Obj(
    {
        "hours": Key(WINDOWS, required=True),
        "days": Key(DAYS),
        "mode": Key(Text(enum=("hold", "drop"), doc="hold: deliver when the window ends; drop: no offer."), default="hold"),
    },
    doc="Hours (device's local time) when no offer is delivered.",
)

DEFAULTS = Obj(
    {
        "timezone": Key(TIMEZONE),
        "limits": Key(
            Obj({"per_device": Key(CAPS)}, doc="Caps across all campaigns."),
        ),
        "quiet_hours": Key(QUIET_HOURS),
    },
    doc="Global settings: caps across campaigns and quiet hours.",
)

TRIGGER = Obj(
    {
        "on": Key(Text(enum=("enter", "exit", "dwell", "beacon"), doc="The presence event that fires the campaign."), required=True),
        "fences": Key(Seq(IDENT, unique=True, doc="Fence ids.")),
        "tags": Key(Seq(Text(), unique=True, doc="Fence tags (any of them).")),
        "dwell": Key(DURATION),
        "zones": Key(Seq(Text(), unique=True, doc="Beacon zones (e.g. entrance, checkout).")),
        "proximity": Key(Text(enum=("immediate", "near", "far"), doc="The farthest beacon proximity that fires.")),
        "min_probability": Key(Probability(
            doc="Only events whose visit probability is at least this fire (default 0: every event the engine "
                "emits; the engine itself enters at its enter_probability, 0.7 in the streaming profile).")),
    },
    doc="What fires the campaign.",
)

SCHEDULE = Obj(
    {
        "start": Key(DATETIME),
        "end": Key(DATETIME),
        "days": Key(DAYS),
        "hours": Key(WINDOWS),
        "timezone": Key(TIMEZONE),
        "opening_hours": Key(Boolean(doc="Only while the store is open (its `opening_hours` property).")),
    },
    doc="When the campaign runs; local times in `timezone`, else the store's, else the device's, else defaults.timezone, else UTC.",
)

CONDITION = Obj(
    {
        "equals": Key(Scalar()),
        "in": Key(Seq(Scalar())),
        "min": Key(Number()),
        "max": Key(Number()),
    },
    min_keys=1,
    doc="A condition on one device attribute.",
)

AUDIENCE = Obj(
    {
        "segments": Key(
            Obj(
                {
                    "any": Key(Seq(Text(), unique=True)),
                    "all": Key(Seq(Text(), unique=True)),
                    "none": Key(Seq(Text(), unique=True)),
                },
                min_keys=1,
                doc="Device segments (the device attribute `segments`).",
            )
        ),
        "attributes": Key(Obj({}, values=CONDITION, min_keys=1, doc="Attribute name -> condition.")),
    },
    doc="Who gets the offer (opted-out devices never do).",
)

LIMITS = Obj(
    {
        "per_device": Key(CAPS),
        "cooldown": Key(DURATION),
        "budget": Key(
            Obj(
                {"total": Key(Integer(minimum=1)), "per_day": Key(Integer(minimum=1))},
                min_keys=1,
                doc="Campaign-wide budget (per_day counts calendar days in schedule.timezone, else defaults.timezone, else UTC).",
            )
        ),
    },
    doc="Caps of this campaign.",
)

CAMPAIGN = Obj(
    {
        "id": Key(IDENT, required=True),
        "name": Key(Text()),
        "description": Key(Text()),
        "status": Key(Text(enum=("active", "paused")), default="active"),
        "priority": Key(Integer(doc="Higher wins when several campaigns match one event."), default=0),
        "trigger": Key(TRIGGER, required=True),
        "schedule": Key(SCHEDULE),
        "audience": Key(AUDIENCE),
        "offer": Key(OFFER, required=True),
        "limits": Key(LIMITS),
        "experiment": Key(EXPERIMENT),
        "conversion": Key(CONVERSION),
        "max_event_age": Key(MAX_EVENT_AGE),
    },
    doc="One campaign.",
)

CAMPAIGN_FILE = Obj(
    {
        "defaults": Key(DEFAULTS),
        "campaigns": Key(Seq(CAMPAIGN, min_items=0), required=True),
    },
    doc="A proximity campaign file.",
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a campaign file, generated from :data:`CAMPAIGN_FILE`."""
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Proximity campaigns",
    }
    out.update(CAMPAIGN_FILE.json())
    return out


__all__ = [
    "CAMPAIGN", "CAMPAIGN_FILE", "CONTENT", "CONVERSION", "DATETIME", "DAYS", "DEFAULT_MAX_EVENT_AGE_S", "DURATION",
    "EXPERIMENT", "IDENT", "INVALID", "MAX_EVENT_AGE", "OFFER", "OFFER_TIMING", "SCHEMA_ID", "TIMEZONE", "VARIANT",
    "VARIANT_OFFER", "WINDOWS", "At", "Boolean", "Context", "Converted", "Either", "Integer", "Key", "Loaded",
    "Number", "Obj", "Probability", "Scalar", "Seq", "Spec", "Text", "json_schema",
]

