"""The placeholders of an offer's texts, checked while a campaign file is read (:mod:`campaigns.loader`):
well formed, known (``{store.<property>}`` against the fences, when given) and fillable by the campaign."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from campaigns.model import (
    Audience,
    FenceInfo,
    PlaceholderError,
    Trigger,
    placeholder_fallbacks,
    placeholders,
)
from campaigns.specs import INVALID, At, Context, Loaded


class Fillable:
    """Which placeholders a campaign can always fill: ``{zone}`` only on beacon triggers, ``{device.<x>}``
    (other than ``device.id``) only when the audience requires the attribute, unless the placeholder has a
    fallback or the offer allows empty texts."""

    def __init__(self, trigger: Trigger | None, audience: Audience | None, allow_empty: bool) -> None:
        self.on = trigger.on if trigger is not None else None
        self.allow_empty = allow_empty
        self.guaranteed = {"id"}
        if audience is not None:
            self.guaranteed |= set(audience.attributes)
            if audience.any_segments or audience.all_segments:
                self.guaranteed.add("segments")

    def problem(self, name: str, has_fallback: bool) -> str | None:
        if name == "zone" and self.on is not None and self.on != "beacon":
            return (f"{{zone}} is only filled on beacon triggers (this trigger is 'on: {self.on}'): it would "
                    "never render")
        if has_fallback or self.allow_empty or not name.startswith("device.") or name[7:] in self.guaranteed:
            return None
        return (f"{{{name}}} may render empty: no audience condition requires the device attribute "
                f"{name[7:]!r}; give it a fallback ({{{name}|...}}) or set offer.allow_empty: true")


def check_texts(node: Loaded, ctx: Context, fences: Mapping[str, FenceInfo] | None, fill: Fillable) -> Any:
    """Check the placeholders of an offer's (or variant's) texts; returns its ``data`` node."""
    for key in ("title", "body", "deep_link"):
        if isinstance(node.get(key), str):
            _check_text(node.raw_value(key), node.where(key), ctx, fences, fill)
    data = node.get("data")
    if data and data is not INVALID:
        for key, value in data.items():
            if isinstance(value, str):
                _check_text(data.raw_value(key), data.where(key), ctx, fences, fill)
    return data


def _check_text(text: str, at: At, ctx: Context, fences: Mapping[str, FenceInfo] | None, fill: Fillable) -> None:
    quoted = isinstance(text, DoubleQuotedScalarString | SingleQuotedScalarString)

    def where(offset: int) -> At:
        col = at.col + offset + (1 if quoted else 0) if at.col is not None and "\n" not in text else at.col
        return At(at.line, col, at.path)

    try:
        names = placeholders(str(text))
    except PlaceholderError as exc:
        ctx.problem(where(exc.offset), f"{at.path}: {exc}")
        return
    fallbacks = placeholder_fallbacks(str(text))
    for offset, name in names:
        why = fill.problem(name, fallbacks.get(name, False))
        if why is not None:
            ctx.problem(where(offset), f"{at.path}: {why}")
    if fences is None:
        return
    known = {"name", "id"} | {str(k) for f in fences.values() for k in f.properties}
    for offset, name in names:
        if name.startswith("store.") and name[6:] not in known:
            close = difflib.get_close_matches(name[6:], sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {{store.{close[0]}}}?" if close else ""
            ctx.problem(where(offset), f"{at.path}: unknown placeholder {{{name}}}: no fence has a property {name[6:]!r}{hint}")
