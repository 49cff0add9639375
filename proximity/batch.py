"""Columnar batches of location pings: JSON rows, CSV files and arrays in, numpy columns out.

A :class:`PingBatch` is what the engine consumes: equal-length numpy arrays, one
element per ping. Build one from dicts (the HTTP body), from a CSV ping log, or
from arrays you already have (the simulator, benchmarks). Every conversion
(ISO 8601 timestamps, numbers in text, zone names) happens here, once; bad
input raises :class:`proximity.errors.ValidationError` naming the row (0-based
record index), the field and, for files, ``file:line:col``.

Columns: ``device_id`` (object, str), ``lon``, ``lat``, ``accuracy_m`` and ``ts``
(float64, UTC epoch seconds), ``speed`` (float64 m/s, NaN when unknown),
``foreground`` (int8: 1, 0, or -1 unknown), ``attrs`` (object: dict or None) and
``timezone`` (object: IANA name or None), and ``row`` (int64: the ping's row in the
request or file it came from, carried through the engine so that whatever is
refused later, e.g. a future timestamp, is reported by the row the client sent).

:meth:`PingBatch.from_json` is the service's seam: JSON rows in, ``(batch of the
good rows, [ValidationError per bad row])`` out.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from proximity.convert import (
    DEVICE_ID_RULE,
    MAX_DEVICE_ID_LEN,
    parse_bool,
    parse_device_id,
    parse_float,
    parse_timezone,
    parse_ts,
)
from proximity.errors import ValidationError

#: Columns a CSV ping log must have; any other column (besides the optional ones) becomes a device attribute.
CSV_REQUIRED = ("ts", "device_id", "lon", "lat", "accuracy_m")
CSV_OPTIONAL = ("speed", "foreground", "timezone", "attrs")
MAX_ACCURACY_M = 1e6


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _not_a_row(r: Any) -> str:
    return f"a ping must be a JSON object, not {type(r).__name__}"


def _parsed_fields(r: Mapping[str, Any]) -> Iterator[tuple[str, Any, str | None]]:
    """Each field of a ping row parsed on its own, in ``_ROW_FIELDS`` order: ``(name, value, None)``, or
    ``(name, None, message)`` when its parser refuses the value (a missing required one included)."""
    for name, parse in _ROW_FIELDS:
        try:
            yield name, parse(r.get(name)), None
        except ValueError as exc:
            text = str(exc)
            yield name, None, text if text.startswith(name) else f"{name}: {text}"


def _ping_from_row(r: Any) -> tuple[str, float, float, float, float, float, int, dict[str, Any] | None, str | None]:
    if not isinstance(r, Mapping):
        raise _FieldError("", _not_a_row(r))
    vals: list[Any] = []
    for name, value, problem in _parsed_fields(r):
        if problem is not None:
            raise _FieldError(name, problem)
        vals.append(value)
    return tuple(vals)


def ping_row_problems(r: Any) -> list[tuple[str, str]]:
    """Every problem of one JSON ping row as ``(field, message)``: each field whose value the batch's
    parsers refuse (a missing required one included) and each unknown field, checked one by one, where
    parsing stops at the first (``("", message)`` for a row that is no object)."""
    if not isinstance(r, Mapping):
        return [("", _not_a_row(r))]
    out = [(name, problem) for name, _, problem in _parsed_fields(r) if problem is not None]
    return out + [(str(k), _unknown_field(k)) for k in r if k not in PING_KEYS]


def _unknown_field(name: Any) -> str:
    return f"unknown field {str(name)!r}; a ping has {', '.join(PING_KEYS)} (put other device facts under attrs)"


def _required(name: str, parse: Any) -> Any:
    def run(v: Any) -> Any:
        if v is None or v == "":
            raise ValueError(f"{name} is required")
        return parse(v)

    return run


def _speed(v: Any) -> float:
    if v is None or v == "":
        return math.nan
    return parse_float(v, "speed", lo=0.0, hi=1e4)


def _attrs(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise ValueError(f"attrs must be an object, not {type(v).__name__}")
    return dict(v)


_ROW_FIELDS: tuple[tuple[str, Any], ...] = (
    ("device_id", _required("device_id", parse_device_id)),
    ("lon", _required("lon", lambda v: parse_float(v, "lon", lo=-180.0, hi=180.0))),
    ("lat", _required("lat", lambda v: parse_float(v, "lat", lo=-90.0, hi=90.0))),
    ("accuracy_m", _required("accuracy_m", lambda v: parse_float(v, "accuracy_m", lo=0.0, hi=MAX_ACCURACY_M))),
    ("ts", _required("ts", parse_ts)),
    ("speed", _speed),
    ("foreground", lambda v: parse_bool(v, "foreground")),
    ("attrs", _attrs),
    ("timezone", parse_timezone),
)


def _object_array(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclass(frozen=True, eq=False)
class PingBatch:
    """Equal-length numpy columns, one element per location ping (see the module docstring)."""

    device_id: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    accuracy_m: np.ndarray
    ts: np.ndarray
    speed: np.ndarray
    foreground: np.ndarray
    attrs: np.ndarray
    timezone: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        device_id: Sequence[str] | np.ndarray,
        lon: Any,
        lat: Any,
        accuracy_m: Any,
        ts: Any,
        *,
        speed: Any = None,
        foreground: Any = None,
        attrs: Sequence[Mapping[str, Any] | None] | np.ndarray | None = None,
        timezone: Sequence[str | None] | np.ndarray | None = None,
        row: Any = None,
        source: str = "<arrays>",
        ids_checked: bool = False,
    ) -> PingBatch:
        """A batch from columns (numbers already parsed: epoch seconds, degrees, metres), validated vectorially.

        ``row`` numbers the pings for error reports (default ``0..n-1``); errors name the index given.
        ``ids_checked``: the caller has checked that every id is a valid device id (strings, see
        :data:`~proximity.convert.DEVICE_ID_RULE`), as :mod:`proximity.plain_json` does while it reads them."""
        ids = device_id if isinstance(device_id, np.ndarray) and device_id.dtype == object else _object_array(list(device_id))
        n = len(ids)

        def col(x: Any, name: str, fill: float | None = None) -> np.ndarray:
            if x is None:
                if fill is None:
                    raise ValidationError(f"{name} is required", source=source, field=name)
                return np.full(n, fill)
            a = np.asarray(x, dtype=np.float64)
            a = np.full(n, float(a)) if a.ndim == 0 else np.ascontiguousarray(a)
            if a.shape != (n,):
                raise ValidationError(f"{name} has {a.shape[0] if a.ndim else 0} values for {n} pings",
                                      source=source, field=name)
            return a

        lon_a, lat_a = col(lon, "lon"), col(lat, "lat")
        acc_a, ts_a = col(accuracy_m, "accuracy_m"), col(ts, "ts")
        speed_a = col(speed, "speed", math.nan)
        fg = np.full(n, -1, np.int8) if foreground is None else np.asarray(foreground, dtype=np.int8)
        checks = (
            ("lon", lon_a, ~((lon_a >= -180.0) & (lon_a <= 180.0)), "lon must be a finite number within [-180, 180]"),
            ("lat", lat_a, ~((lat_a >= -90.0) & (lat_a <= 90.0)), "lat must be a finite number within [-90, 90]"),
            ("accuracy_m", acc_a, ~((acc_a >= 0.0) & (acc_a <= MAX_ACCURACY_M)), "accuracy_m must be finite and >= 0"),
            ("ts", ts_a, ~((ts_a >= 0.0) & (ts_a <= 1e11)), "ts must be finite epoch seconds"),
            ("speed", speed_a, (speed_a < 0) | np.isinf(speed_a), "speed must be >= 0 m/s"),
            ("foreground", fg, (fg < -1) | (fg > 1), "foreground must be 1, 0 or -1 (unknown)"),
        )
        if functools.reduce(operator.or_, [bad for _n, _v, bad, _m in checks]).any():  # (one any(): 9 -> 4 us)
            for name, values, bad, message in checks:  # the first field with a bad value, its first bad row
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise ValidationError(f"{message}, not {values[row]!r}", source=source, field=name, row=row)
        ok_ids = _valid_device_ids(ids) if not ids_checked else None
        if ok_ids is not None and not ok_ids.all():
            row = int(np.flatnonzero(~ok_ids)[0])
            raise ValidationError(f"{DEVICE_ID_RULE}, not {ids[row]!r}", source=source, field="device_id", row=row)
        # (an object array is made holding None: np.empty's 0.3 us against np.full's 3)
        attrs_a = np.empty(n, dtype=object) if attrs is None else _object_array(list(attrs))
        tz_a = np.empty(n, dtype=object) if timezone is None else _object_array(list(timezone))
        if len(attrs_a) != n or len(tz_a) != n:
            raise ValidationError("attrs and timezone must have one value per ping", source=source)
        row_a = np.arange(n, dtype=np.int64) if row is None else np.asarray(row, dtype=np.int64)
        if row_a.shape != (n,):
            raise ValidationError("row must have one value per ping", source=source, field="row")
        return cls(ids, lon_a, lat_a, acc_a, ts_a, speed_a, fg, attrs_a, tz_a, row_a)

    @overload
    @classmethod
    def from_rows(cls, rows: Iterable[Any], source: str = ..., errors: Literal["raise"] = ...) -> PingBatch: ...

    @overload
    @classmethod
    def from_rows(
        cls, rows: Iterable[Any], source: str = ..., errors: Literal["collect"] = ...
    ) -> tuple[PingBatch, list[ValidationError]]: ...

    @classmethod
    def from_rows(
        cls, rows: Iterable[Any], source: str = "<rows>", errors: Literal["raise", "collect"] = "raise"
    ) -> PingBatch | tuple[PingBatch, list[ValidationError]]:
        """A batch from dicts (JSON rows). ``ts`` is ISO 8601 with an offset or epoch seconds.

        ``errors="raise"`` (default) raises the first bad row's :class:`ValidationError`;
        ``errors="collect"`` returns ``(batch_of_good_rows, [ValidationError, ...])``.
        """
        if errors not in ("raise", "collect"):
            raise ValueError(f"errors must be 'raise' or 'collect', not {errors!r}")
        parsed: list[tuple[Any, ...]] = []
        good: list[int] = []
        found: list[ValidationError] = []
        for i, r in enumerate(rows):
            try:
                parsed.append(_ping_from_row(r))
                good.append(i)
            except _FieldError as exc:
                err = ValidationError(str(exc), source=source, field=exc.field or None, row=i)
                if errors == "raise":
                    raise err from None
                found.append(err)
        batch = cls._from_parsed(parsed, good)
        return (batch, found) if errors == "collect" else batch

    @classmethod
    def from_json(cls, rows: Sequence[Any], source: str = "<request body>") -> tuple[PingBatch, list[ValidationError]]:
        """The service's seam: JSON rows (decoded dicts) -> ``(batch of the good rows, [error per bad row])``.

        Each good ping keeps its request row in ``batch.row``; each error names its row and field.
        The common case (every row exactly ``{device_id, lon, lat, accuracy_m, ts}`` with JSON
        numbers) is built as columns and validated vectorially; anything else goes row by row
        (:meth:`from_rows`). Both paths accept and refuse exactly the same rows (a property test).
        """
        fast = _plain_columns(rows, source)
        if fast is not None:
            return fast, []
        batch, errors = cls.from_rows(rows, source=source, errors="collect")
        # a field a ping does not have is refused (as a scan's is), never dropped silently: put extra
        # device facts under "attrs"
        known = set(PING_KEYS)
        unknown = {i: sorted(k for k in r if k not in known) for i, r in enumerate(rows)
                   if isinstance(r, Mapping) and not known.issuperset(r)}
        if unknown:
            keep = np.flatnonzero(~np.isin(batch.row, list(unknown)))
            if len(keep) < len(batch):
                batch = batch.take(keep)
            bad = {getattr(e, "row", None) for e in errors}
            errors = sorted([*errors, *(ValidationError(_unknown_field(names[0]), source=source,
                                                        field=str(names[0]), row=i)
                for i, names in unknown.items() if i not in bad)], key=lambda e: getattr(e, "row", 0) or 0)
        return batch, errors

    @classmethod
    def from_csv(cls, path: str | Path) -> PingBatch:
        """A batch from a CSV ping log with header ``ts,device_id,lon,lat,accuracy_m`` (+ optional columns).

        Optional columns: ``speed``, ``foreground``, ``timezone``, ``attrs`` (a JSON object);
        any other column becomes a device attribute (non-empty text values).
        Errors name ``file:line:col`` and the column.
        """
        path = Path(path)
        src = str(path)
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise ValidationError("empty file: expected a header row", source=src, line=1, col=1) from None
            header = [h.strip() for h in header]
            missing = [c for c in CSV_REQUIRED if c not in header]
            if missing:
                raise ValidationError(f"header lacks column(s) {', '.join(missing)}; expected {','.join(CSV_REQUIRED)}",
                                      source=src, line=1, col=1)
            extra = [(j, h) for j, h in enumerate(header) if h not in CSV_REQUIRED and h not in CSV_OPTIONAL and h]
            parsed: list[tuple[Any, ...]] = []
            data_row = 0
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if len(fields) != len(header):
                    raise ValidationError(f"expected {len(header)} fields, found {len(fields)}",
                                          source=src, line=line, col=1, row=data_row)
                rec: dict[str, Any] = dict(zip(header, fields, strict=True))
                attrs: dict[str, Any] = {k: fields[j] for j, k in extra if fields[j] != ""}
                raw_attrs = rec.pop("attrs", "")
                if raw_attrs:
                    try:
                        loaded = json.loads(raw_attrs)
                    except json.JSONDecodeError as exc:
                        raise ValidationError(f"attrs is not valid JSON: {exc.msg}", source=src, line=line,
                                              col=_col(fields, header.index("attrs")), field="attrs",
                                              row=data_row) from None
                    if not isinstance(loaded, dict):
                        raise ValidationError("attrs must be a JSON object", source=src, line=line,
                                              col=_col(fields, header.index("attrs")), field="attrs", row=data_row)
                    attrs.update(loaded)
                rec["attrs"] = attrs or None
                try:
                    parsed.append(_ping_from_row(rec))
                except _FieldError as exc:
                    col = _col(fields, header.index(exc.field)) if exc.field in header else 1
                    raise ValidationError(str(exc), source=src, line=line, col=col, field=exc.field,
                                          row=data_row) from None
                data_row += 1
        return cls._from_parsed(parsed, range(len(parsed)))

    @classmethod
    def _from_parsed(cls, parsed: list[tuple[Any, ...]], rows: Sequence[int]) -> PingBatch:
        n = len(parsed)
        cols = list(zip(*parsed, strict=True)) if n else [()] * 9
        return cls(
            _object_array(cols[0]),
            np.array(cols[1], dtype=np.float64),
            np.array(cols[2], dtype=np.float64),
            np.array(cols[3], dtype=np.float64),
            np.array(cols[4], dtype=np.float64),
            np.array(cols[5], dtype=np.float64),
            np.array(cols[6], dtype=np.int8),
            _object_array(cols[7]),
            _object_array(cols[8]),
            np.asarray(rows, dtype=np.int64).reshape(n),
        )

    # -- operations ---------------------------------------------------------------------------

    def take(self, idx: np.ndarray) -> PingBatch:
        """The pings at ``idx`` (an index or boolean array), in that order."""
        return PingBatch(*(getattr(self, f)[idx] for f in _FIELDS))

    @classmethod
    def concat(cls, batches: Sequence[PingBatch]) -> PingBatch:
        if not batches:
            return cls._from_parsed([], [])
        return cls(*(np.concatenate([getattr(b, f) for b in batches]) for f in _FIELDS))

    def to_rows(self) -> list[dict[str, Any]]:
        """JSON-ready dicts (epoch seconds), the inverse of :meth:`from_rows`."""
        out = []
        for i in range(len(self)):
            r: dict[str, Any] = {
                "device_id": self.device_id[i],
                "lon": float(self.lon[i]),
                "lat": float(self.lat[i]),
                "accuracy_m": float(self.accuracy_m[i]),
                "ts": float(self.ts[i]),
            }
            if not math.isnan(self.speed[i]):
                r["speed"] = float(self.speed[i])
            if self.foreground[i] >= 0:
                r["foreground"] = bool(self.foreground[i])
            if self.attrs[i] is not None:
                r["attrs"] = self.attrs[i]
            if self.timezone[i] is not None:
                r["timezone"] = self.timezone[i]
            out.append(r)
        return out


_FIELDS = ("device_id", "lon", "lat", "accuracy_m", "ts", "speed", "foreground", "attrs", "timezone", "row")
_REQUIRED = ("device_id", "lon", "lat", "accuracy_m", "ts")
_REQUIRED_OF = operator.itemgetter(*_REQUIRED)
_NUMBER_TYPES = {int, float}


def _plain_columns(rows: Sequence[Any], source: str) -> PingBatch | None:
    """The common case, fast: every row exactly ``{device_id, lon, lat, accuracy_m, ts}`` with JSON numbers,
    as columns (list comprehensions in C) validated by :meth:`PingBatch.from_arrays`. ``None`` for anything
    else (optional fields, numeric strings, ISO times, any bad row): the caller goes row by row."""
    try:
        if set(map(type, rows)) != {dict} or set(map(len, rows)) != {5}:
            return None
        ids, *cols = zip(*map(_REQUIRED_OF, rows), strict=True)  # rows -> columns, in C
    except (KeyError, TypeError, ValueError):
        return None
    for col in cols:
        if not set(map(type, col)) <= _NUMBER_TYPES:
            return None
    try:
        return PingBatch.from_arrays(ids, *cols, source=source)
    except (ValueError, OverflowError):
        return None


#: the fields of a ping in JSON (anything else in a row is refused)
PING_KEYS = ("device_id", "lon", "lat", "accuracy_m", "ts", "speed", "foreground", "attrs", "timezone")


def _is_device_id(x: Any) -> bool:
    return isinstance(x, str) and 0 < len(x) <= MAX_DEVICE_ID_LEN and not x.isspace() and x.isprintable()


#: the code points ``str.isspace`` is true for
WHITESPACE = np.array([*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
                       0x2029, 0x202F, 0x205F, 0x3000], np.uint32)


#: up to this many ids, :func:`_valid_device_ids` asks :func:`_is_device_id` of each (16 us -> 1-5 us for the 1 to
#: 30 ids of a phone's request; the array code's fixed cost is its joins and allocations)
SMALL_IDS = 32


def _valid_device_ids(ids: np.ndarray) -> np.ndarray:
    """:func:`_is_device_id` of every id: one by one for a few, else :func:`_valid_device_ids_array`."""
    if len(ids) <= SMALL_IDS:
        return np.fromiter(map(_is_device_id, ids), dtype=bool, count=len(ids))
    return _valid_device_ids_array(ids)


def _valid_device_ids_array(ids: np.ndarray) -> np.ndarray:
    """:func:`_is_device_id` of every id, as array code over the ids' code points (one ``join``, one ``encode``)."""
    n = len(ids)
    try:
        text = "\x00".join(ids.tolist())
    except TypeError:  # some id is not a string: find which, one by one
        return np.fromiter(map(_is_device_id, ids), dtype=bool, count=n)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    cuts = np.flatnonzero(codes == 0)
    if len(cuts) != max(n - 1, 0):  # some id holds a NUL
        return np.fromiter(map(_is_device_id, ids), dtype=bool, count=n)
    if n == 0:
        return np.zeros(0, bool)
    if not ((codes >= 0x20) & (codes < 0x7F) | (codes == 0)).all():  # beyond printable ASCII: ask str
        return np.fromiter(map(_is_device_id, ids), dtype=bool, count=n)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(codes)]])
    visible = np.zeros(len(codes) + 1, np.int64)
    np.cumsum(codes > 0x20, out=visible[1:])  # printable ASCII (checked above): only " " is whitespace, NUL cuts
    lens = ends - starts
    return (lens > 0) & (lens <= MAX_DEVICE_ID_LEN) & (visible[ends] > visible[starts])


def _col(fields: list[str], j: int) -> int:
    """1-based character column where field ``j`` starts (exact for unquoted rows)."""
    return 1 + sum(len(f) + 1 for f in fields[:j])


__all__ = ["CSV_OPTIONAL", "CSV_REQUIRED", "PingBatch", "ping_row_problems"]
