"""The declarations of a campaign's offer (its texts and timing), experiment and conversion.

Part of the campaign file's format (:mod:`campaigns.schema` assembles it); the building blocks are in
:mod:`campaigns.specs`.
"""

from __future__ import annotations

import campaigns._convert as _convert
from campaigns.model import DEFAULT_MAX_EVENT_AGE_S
from campaigns.specs import DURATION, IDENT, Boolean, Converted, Key, Number, Obj, Scalar, Seq, Text

CONTENT = {
    "title": Key(Text(doc="Push title; {placeholders} allowed, with a fallback: {device.first_name|there}."), required=True),
    "body": Key(Text(doc="Push body; {placeholders} allowed.")),
    "deep_link": Key(Text(doc="App link; {placeholders} allowed.")),
    "data": Key(Obj({}, values=Scalar(), doc="Extra key/values for the app; text values take {placeholders}.")),
}
"""The offer's texts (a variant replaces some of them)."""

OFFER_TIMING = {
    "expires_in": Key(Converted(
        DURATION.schema, DURATION.convert,
        doc="The offer is worth this long after its event: held by quiet hours, delayed or queued past it, "
            "it is dropped (and counted) instead of delivered. Default: never expires.")),
    "delay": Key(Converted(
        DURATION.schema, DURATION.convert,
        doc="Deliver this long after the event (e.g. '20m' after an exit); cancelled when the device enters "
            "the same place again before then.")),
    "allow_empty": Key(Boolean(
        doc="Let a {placeholder} with no value and no fallback render as an empty text. Default false: such "
            "an offer is not sent; the decision is recorded as 'template_empty'.")),
}
"""When the offer is delivered, and until when it is worth delivering."""

OFFER = Obj(
    {**CONTENT, **OFFER_TIMING},
    doc="The push offer. Placeholders: {store.name}, {store.id}, {store.<property>}, {device.id}, "
        "{device.<attribute>}, {zone} (beacon triggers), {campaign.id}, {campaign.name}, {dwell_min}; "
        "'{name|fallback}' renders the fallback when the value is missing or empty.",
)

MAX_EVENT_AGE = Converted(
    DURATION.schema, DURATION.convert,
    doc="Live service only: an event whose evidence is older than this by the service's clock gets no offer "
        f"(the decision is recorded as 'stale'). Default {DEFAULT_MAX_EVENT_AGE_S / 60:g}m. Backtests replay in simulated time and never "
        "count an event as stale.",
)

VARIANT_OFFER = Obj(
    {name: Key(key.spec) for name, key in CONTENT.items()},
    min_keys=1,
    doc="The fields of the campaign's offer this variant replaces (data: keys added or replaced).",
)

VARIANT = Obj(
    {
        "id": Key(IDENT, required=True),
        "weight": Key(Number(above=0, doc="Relative share of the treated devices (default 1)."), default=1.0),
        "offer": Key(VARIANT_OFFER),
    },
    doc="One variant of the offer.",
)

EXPERIMENT = Obj(
    {
        "holdout": Key(Converted(
            {"type": "string", "pattern": _convert.PERCENT_PATTERN}, _convert.parse_share,
            doc="Control group: this share of devices ('10%') passes every check but gets no push; "
                "the decision is recorded as 'holdout'.",
        )),
        "variants": Key(Seq(VARIANT, doc="Variants of the offer; each treated device gets one, by weight.")),
        "salt": Key(Text(doc="Salt of the assignment hash (default: the campaign id); change it to re-draw the groups.")),
    },
    min_keys=1,
    doc="Holdout and variants. Assignment is a salted hash of (campaign, device): stable, no state.",
)

CONVERSION = Obj(
    {
        "visit": Key(Obj(
            {
                "fences": Key(Seq(IDENT, unique=True, doc="Fence ids.")),
                "tags": Key(Seq(Text(), unique=True, doc="Fence tags (any of them).")),
            },
            min_keys=1,
            doc="Where a visit converts (default: the campaign's own fences and tags).",
        )),
        "min_dwell": Key(DURATION),
        "min_probability": Key(Number(above=0, maximum=1, doc="Only visits whose presence probability reaches this (when events carry one).")),
        "within": Key(DURATION, required=True),
    },
    doc="A conversion: the first qualifying visit within `within` after an exposure (an offer or a holdout decision).",
)
