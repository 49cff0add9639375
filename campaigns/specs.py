"""The building blocks of the campaign file's declarations (:mod:`campaigns.schema`).

A spec's ``load(node, at, ctx)`` converts a YAML node into plain Python values
(durations to seconds, windows to minute pairs, ...) and records every problem
in ``ctx`` instead of stopping at the first; it returns :data:`INVALID` for a
value it could not read. ``json()`` gives its JSON Schema (draft 2020-12).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import campaigns._convert as _convert
from campaigns.errors import CampaignError


class _Invalid:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"

    def __bool__(self) -> bool:
        return False


INVALID: Any = _Invalid()
"""What a spec returns for a value it could not read (its problem is already recorded)."""


@dataclass(frozen=True, slots=True)
class At:
    """Where a node is: 1-based line and column, and its dotted path in the file."""

    line: int | None
    col: int | None
    path: str


@dataclass
class Context:
    """Collects problems while a file is read."""

    source: str
    problems: list[CampaignError] = field(default_factory=list)
    zones: frozenset[str] | None = None
    """The zone names beacon triggers may use (``None``: not checked)."""

    def problem(self, at: At, message: str) -> None:
        self.problems.append(
            CampaignError(message, source=self.source, line=at.line, col=at.col, field=at.path or None)
        )


class Loaded(dict[str, Any]):
    """A mapping read from the file, remembering where it and each of its keys and values are."""

    at: At
    key_at: dict[str, At]
    value_at: dict[str, At]
    raw: Any = None

    def where(self, key: str) -> At:
        return self.value_at.get(key, self.at)

    def raw_value(self, key: str) -> Any:
        """The YAML node under ``key`` as read (keeps the quoting style of texts)."""
        return self.raw.get(key) if self.raw is not None else self.get(key)


def _lc(node: Any, kind: str, key: Any) -> tuple[int | None, int | None]:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None, None
    try:
        line, col = getattr(lc, kind)(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None, None
    return line + 1, col + 1


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _kind(node: Any) -> str:
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, list):
        return "a list"
    if node is None:
        return "empty"
    if isinstance(node, bool):
        return "a boolean"
    if isinstance(node, int | float):
        return "a number"
    return f"{type(node).__name__} {node!r}" if not isinstance(node, str) else f"the text {node!r}"


class Spec:
    doc: str = ""

    def json(self) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        raise NotImplementedError

    def _with_doc(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.doc:
            schema["description"] = self.doc
        return schema


@dataclass
class Text(Spec):
    doc: str = ""
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    pattern_hint: str = ""
    convert: Callable[[str], Any] | None = None

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "minLength": 1}
        if self.enum:
            out = {"enum": list(self.enum)}
        if self.pattern:
            out["pattern"] = self.pattern
        return self._with_doc(out)

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if not isinstance(node, str) or (not node.strip() and not self.enum):
            ctx.problem(at, f"{at.path} must be {'one of ' + ', '.join(self.enum) if self.enum else 'a non-empty text'}, not {_kind(node)}")
            return INVALID
        if self.enum and node not in self.enum:
            close = difflib.get_close_matches(node, self.enum, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            ctx.problem(at, f"{at.path} must be one of {', '.join(self.enum)}, not {node!r}{hint}")
            return INVALID
        if self.pattern and not re.search(self.pattern, node):
            ctx.problem(at, f"{at.path}: {node!r} is not valid{': ' + self.pattern_hint if self.pattern_hint else ''}")
            return INVALID
        if self.convert is not None:
            try:
                return self.convert(node)
            except ValueError as exc:
                ctx.problem(at, f"{at.path}: {exc}")
                return INVALID
        return str(node)


@dataclass
class Integer(Spec):
    doc: str = ""
    minimum: int | None = None

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        return self._with_doc(out)

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if isinstance(node, bool) or not isinstance(node, int):
            ctx.problem(at, f"{at.path} must be a whole number, not {_kind(node)}")
            return INVALID
        if self.minimum is not None and node < self.minimum:
            what = "zero or negative" if node <= 0 and self.minimum >= 1 else f"less than {self.minimum}"
            ctx.problem(at, f"{at.path} must be at least {self.minimum}, not {node} ({what})")
            return INVALID
        return int(node)


@dataclass
class Number(Spec):
    doc: str = ""
    above: float | None = None
    """Exclusive minimum."""
    maximum: float | None = None

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.above is not None:
            out["exclusiveMinimum"] = self.above
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return self._with_doc(out)

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if isinstance(node, bool) or not isinstance(node, int | float) or node != node:
            ctx.problem(at, f"{at.path} must be a number, not {_kind(node)}")
            return INVALID
        if self.above is not None and not node > self.above:
            what = " (it must be positive)" if self.above == 0 else ""
            ctx.problem(at, f"{at.path} must be above {self.above:g}, not {node:g}{what}")
            return INVALID
        if self.maximum is not None and node > self.maximum:
            ctx.problem(at, f"{at.path} must be at most {self.maximum:g}, not {node:g}")
            return INVALID
        return float(node)


@dataclass
class Boolean(Spec):
    doc: str = ""

    def json(self) -> dict[str, Any]:
        return self._with_doc({"type": "boolean"})

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if not isinstance(node, bool):
            ctx.problem(at, f"{at.path} must be true or false, not {_kind(node)}")
            return INVALID
        return node


@dataclass
class Scalar(Spec):
    """A text, number or boolean (attribute values, offer data)."""

    doc: str = ""

    def json(self) -> dict[str, Any]:
        return self._with_doc({"type": ["string", "number", "boolean"]})

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if isinstance(node, Mapping | list) or node is None:
            ctx.problem(at, f"{at.path} must be a text, number or boolean, not {_kind(node)}")
            return INVALID
        return node if isinstance(node, bool | int | float) else str(node)


@dataclass
class Converted(Spec):
    """A value read by a converter of :mod:`campaigns._convert` (durations, windows, days, zones)."""

    schema: dict[str, Any]
    convert: Callable[[Any], Any]
    doc: str = ""

    def json(self) -> dict[str, Any]:
        return self._with_doc(dict(self.schema))

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        try:
            return self.convert(_plain(node))
        except ValueError as exc:
            ctx.problem(at, f"{at.path}: {exc}")
            return INVALID


@dataclass
class Seq(Spec):
    item: Spec
    doc: str = ""
    min_items: int = 1
    unique: bool = False

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.item.json()}
        if self.min_items:
            out["minItems"] = self.min_items
        if self.unique:
            out["uniqueItems"] = True
        return self._with_doc(out)

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if not isinstance(node, list):
            ctx.problem(at, f"{at.path} must be a list, not {_kind(node)}")
            return INVALID
        if len(node) < self.min_items:
            ctx.problem(at, f"{at.path} must have at least {self.min_items} item{'s' if self.min_items > 1 else ''}")
            return INVALID
        out = []
        seen: set[Any] = set()
        for i, item in enumerate(node):
            line, col = _lc(node, "item", i)
            item_at = At(line, col, _join(at.path, i))
            value = self.item.load(item, item_at, ctx)
            if self.unique and isinstance(value, str | int):
                if value in seen:
                    ctx.problem(item_at, f"{item_at.path}: {value!r} is listed twice")
                seen.add(value)
            out.append(value)
        return out


@dataclass
class Either(Spec):
    """One spec per YAML node kind: ``scalar`` for texts/numbers, ``seq`` for lists, ``mapping`` for mappings."""

    scalar: Spec | None = None
    seq: Spec | None = None
    mapping: Spec | None = None
    doc: str = ""

    def json(self) -> dict[str, Any]:
        return self._with_doc({"anyOf": [s.json() for s in (self.scalar, self.seq, self.mapping) if s]})

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        spec = self.mapping if isinstance(node, Mapping) else self.seq if isinstance(node, list) else self.scalar
        if spec is None:
            kinds = [k for k, s in (("a value", self.scalar), ("a list", self.seq), ("a mapping", self.mapping)) if s]
            ctx.problem(at, f"{at.path} must be {' or '.join(kinds)}, not {_kind(node)}")
            return INVALID
        return spec.load(node, at, ctx)


@dataclass(frozen=True)
class Key:
    spec: Spec
    required: bool = False
    default: Any = None


@dataclass
class Obj(Spec):
    keys: dict[str, Key]
    doc: str = ""
    values: Spec | None = None
    """With ``values``, any key is allowed (a map of names to that spec) and ``keys`` are not used."""
    min_keys: int = 0

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.values is not None:
            out["additionalProperties"] = self.values.json()
        else:
            out["properties"] = {k: v.spec.json() for k, v in self.keys.items()}
            required = [k for k, v in self.keys.items() if v.required]
            if required:
                out["required"] = required
            out["additionalProperties"] = False
        if self.min_keys:
            out["minProperties"] = self.min_keys
        return self._with_doc(out)

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if not isinstance(node, Mapping):
            ctx.problem(at, f"{at.path or 'the file'} must be a mapping, not {_kind(node)}")
            return INVALID
        out = Loaded()
        out.at, out.key_at, out.value_at, out.raw = at, {}, {}, node
        if len(node) < self.min_keys:
            ctx.problem(at, f"{at.path} needs at least {self.min_keys} key{'s' if self.min_keys > 1 else ''}")
        for key, value in node.items():
            kline, kcol = _lc(node, "key", key)
            vline, vcol = _lc(node, "value", key)
            name = str(key)
            key_at = At(kline, kcol, _join(at.path, name))
            value_at = At(vline, vcol, key_at.path)
            out.key_at[name] = key_at
            out.value_at[name] = value_at
            if self.values is not None:
                out[name] = self.values.load(value, value_at, ctx)
                continue
            known = self.keys.get(name)
            if known is None:
                close = difflib.get_close_matches(name, list(self.keys), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                allowed = ", ".join(self.keys)
                ctx.problem(key_at, f"unknown key {name!r} in {at.path or 'the file'}{hint} (allowed: {allowed})")
                continue
            out[name] = known.spec.load(value, value_at, ctx)
        if self.values is None:
            for name, k in self.keys.items():
                if name in out:
                    continue
                if k.required:
                    ctx.problem(at, f"{at.path or 'the file'} needs {name!r}")
                    out[name] = INVALID
                else:
                    out[name] = k.default
        return out


def _plain(node: Any) -> Any:
    """A ruamel node as plain Python (lists and dicts), for converters."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node



# ---------------------------------------------------------------- the format

DURATION = Converted(
    {"anyOf": [{"type": "string", "pattern": _convert.DURATION_PATTERN}, {"type": "number", "exclusiveMinimum": 0}]},
    _convert.parse_duration,
    doc="A duration: seconds, or a text like '90s', '10m', '1h30m', '2d', '1w'.",
)
WINDOW_SCHEMA = {"type": "string", "pattern": _convert.WINDOW_PATTERN}
WINDOWS = Converted(
    {"anyOf": [WINDOW_SCHEMA, {"type": "array", "items": WINDOW_SCHEMA, "minItems": 1}]},
    _convert.parse_windows,
    doc="Local time windows 'HH:MM-HH:MM' (one or a list); '22:00-02:00' crosses midnight and belongs to the day it starts.",
)
DAY_SCHEMA = {"type": "string", "pattern": _convert.DAY_PATTERN}
DAYS = Converted(
    {"anyOf": [DAY_SCHEMA, {"type": "array", "items": DAY_SCHEMA, "minItems": 1}]},
    _convert.parse_days,
    doc="Weekdays: 'mon'...'sun' or ranges like 'mon-fri', one or a list.",
)
TIMEZONE = Converted({"type": "string", "minLength": 1}, _convert.parse_timezone, doc="An IANA time zone such as 'Europe/Paris'.")
DATETIME = Converted(
    {"type": "string", "minLength": 1},
    lambda v: v,  # read by the loader, which knows the schedule's time zone
    doc="An ISO 8601 date-time with an offset ('2026-11-01T09:00:00+01:00', '...Z'), or without one when schedule.timezone is set.",
)
IDENT = Text(
    pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
    pattern_hint="use letters, digits, '_', '-', '.', ':' (starting with a letter or digit)",
)


@dataclass
class Probability(Spec):
    """A number from 0 to 1."""

    doc: str = ""

    def json(self) -> dict[str, Any]:
        return self._with_doc({"type": "number", "minimum": 0, "maximum": 1})

    def load(self, node: Any, at: At, ctx: Context) -> Any:
        if isinstance(node, bool) or not isinstance(node, int | float) or not 0 <= node <= 1:
            ctx.problem(at, f"{at.path} must be a probability from 0 to 1, not {node!r}")
            return INVALID
        return float(node)

