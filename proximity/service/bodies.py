"""The shape of the ingest bodies, checked before any work: every problem of a body in one answer.

:func:`ping_rows` and :func:`scan_body` check the envelope of a ``POST /v1/pings``
or ``POST /v1/scans`` body (its fields, types and row count) and raise one
:class:`~proximity.service.errors.ApiError` listing *every* problem (``errors``:
each with its ``field`` and, for a row, its ``row``), never only the first.
:func:`complete_row_errors` adds, to the rows the engine refused, the other
problems of the same rows (missing and unknown fields, bad values), so a bad row
is fixed in one round trip. :func:`devices_of` names the devices a body carries (what the per-device
rate limit charges). The OpenAPI document (:mod:`proximity.service.openapi`)
states the same rules; a contract test checks the two agree.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from proxbase.timestamps import parse_ts
from proximity.batch import PingBatch
from proximity.errors import as_json
from proximity.plain_json import plain_pings
from proximity.service.codec import parse_json
from proximity.service.errors import ApiError

PING_BODY_KEYS = ("batch_id", "pings", "sent_at")
SCAN_BODY_KEYS = ("gateway_id", "batch_id", "sent_at", "sightings")
MAX_BATCH_ID = 200


def problem(field: str, message: str, row: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": message, "field": field}
    if row is not None:
        out["row"] = row
    return out


def refuse(status: int, problems: Sequence[dict[str, Any]], **extra: Any) -> ApiError:
    """One error answer for every problem: the first in ``error``/``field``/``row``, all in ``errors``."""
    first = problems[0]
    more = f" (and {len(problems) - 1} more problem(s); see errors)" if len(problems) > 1 else ""
    return ApiError(status, first["error"] + more, field=first.get("field"), row=first.get("row"),
                    reason="too_many_rows" if status == 413 else "bad_body", errors=list(problems[:100]), **extra)


def _batch_id_problems(doc: Mapping[str, Any], required: bool) -> list[dict[str, Any]]:
    bid = doc.get("batch_id")
    if bid is None:
        return [problem("batch_id", "batch_id is missing (a string of 1 to 200 characters, the same on every "
                                    "retry of the batch)")] if required else []
    if not isinstance(bid, str) or not bid or len(bid) > MAX_BATCH_ID:
        return [problem("batch_id", "batch_id must be a string of 1 to 200 characters")]
    return []


def _sent_at_problems(doc: Mapping[str, Any], required: bool) -> list[dict[str, Any]]:
    if "sent_at" not in doc:
        return [problem("sent_at", "sent_at is missing (epoch seconds or ISO 8601 when the batch was sealed)")] \
            if required else []
    try:
        parse_ts(doc["sent_at"])
    except ValueError as exc:
        return [problem("sent_at", str(exc).replace("timestamp", "sent_at", 1))]
    return []


def _unknown(doc: Mapping[str, Any], known: Sequence[str], what: str) -> list[dict[str, Any]]:
    if doc.keys() <= set(known):  # the common case, without sorting the body's keys
        return []
    return [problem(str(k), f"unknown field {str(k)!r}; {what} has {', '.join(known)}")
            for k in sorted(map(str, doc)) if k not in known]


def _rows_problems(rows: Any, name: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Problems of the row list ``name`` and the status they call for (413 beyond ``limit``)."""
    if rows is None:
        return [problem(name, f"missing field {name!r} (a list)")], 400
    if not isinstance(rows, list):
        return [problem(name, f"{name} must be a list, not {type(rows).__name__}")], 400
    if not rows:
        return [problem(name, f"{name} is empty")], 400
    if len(rows) > limit:
        return [problem(name, f"{len(rows)} {name} is over the batch limit of {limit}; split the batch")], 413
    return [], 400


def ping_rows(doc: Any, max_batch: int) -> tuple[list[Any], str | None]:
    """The rows and ``batch_id`` of a ``POST /v1/pings`` body (an object ``{batch_id?, sent_at?, pings}`` or a
    bare list of pings); one 400 (413: too many rows) naming every problem of the envelope otherwise."""
    if isinstance(doc, list):
        rows: Any = doc
        problems: list[dict[str, Any]] = []
    elif isinstance(doc, dict):
        rows = doc.get("pings")
        problems = [*_unknown(doc, PING_BODY_KEYS, "a batch"), *_batch_id_problems(doc, False),
                    *_sent_at_problems(doc, False)]
    else:
        raise refuse(400, [problem("body", "the body must be a JSON object {batch_id, pings} or a list of pings")])
    found, status = _rows_problems(rows, "pings", max_batch)
    problems += found
    if problems:
        over = status == 413 and len(problems) == 1
        raise refuse(413 if over else 400, problems, **({"limit": max_batch} if over else {}))
    return rows, (doc.get("batch_id") if isinstance(doc, dict) else None)


def scan_body(doc: Any, max_rows: int) -> tuple[str, str]:
    """``(gateway_id, batch_id)`` of a ``POST /v1/scans`` body; one 400 (413: too many rows) naming every
    problem of the envelope otherwise (its entries are checked one by one later, see ``beacons.scans``)."""
    if not isinstance(doc, dict):
        raise refuse(400, [problem("body", "the body must be a JSON object {gateway_id, batch_id, sent_at, "
                                           "sightings}")])
    problems = _unknown(doc, SCAN_BODY_KEYS, "a scan batch")
    gateway = doc.get("gateway_id")
    if not isinstance(gateway, str) or not gateway.strip() or len(gateway) > 256:
        problems.append(problem("gateway_id", "gateway_id must be a non-empty string of at most 256 characters"))
    problems += _batch_id_problems(doc, True) + _sent_at_problems(doc, True)
    rows = doc.get("sightings")
    found, status = _rows_problems(rows, "sightings", max_rows) if rows != [] else ([], 400)  # [] is a heartbeat
    problems += found
    if problems:
        over = status == 413 and len(problems) == 1
        raise refuse(413 if over else 400, problems, **({"limit": max_rows} if over else {}))
    return gateway, doc["batch_id"]  # type: ignore[return-value]


def phones_only(rows: Sequence[Any], key_name: str) -> None:
    """A key without the ``gateway`` scope (an app's ``sdk`` key) may send phones' sightings only: 403 listing
    every sighting without its ``observer_id``."""
    problems = [problem(f"sightings[{i}].observer_id", f"key {key_name!r} has no gateway scope: each sighting "
                        "must name the phone that saw it (observer_id)", i)
                for i, row in enumerate(rows) if not (isinstance(row, Mapping) and "observer_id" in row)]
    if problems:
        raise ApiError(403, problems[0]["error"] + (f" ({len(problems)} sightings lack it; see errors)"
                                                     if len(problems) > 1 else ""),
                       field=problems[0]["field"], row=problems[0]["row"], reason="forbidden",
                       errors=problems[:100])


def complete_row_errors(rows: Sequence[Any], errors: Sequence[BaseException],
                        problems_of: Callable[[Any], list[tuple[str, str]]], prefix: str = "") -> list[dict[str, Any]]:
    """The rejected rows as JSON, plus, for each refused row, its other problems: ``problems_of(row)``
    checks each field on its own (missing, unknown, bad values), where the parsers stop at a row's first
    problem; only refused rows are looked at again."""
    out = [as_json(e) for e in errors]
    named = {(e.get("row"), e.get("field")) for e in out}
    extra: list[dict[str, Any]] = []
    for i in sorted({e["row"] for e in out if isinstance(e.get("row"), int)}):
        if not 0 <= i < len(rows):
            continue
        for name, message in problems_of(rows[i]):
            field = prefix.format(row=i) + name
            if name and (i, field) not in named and (i, name) not in named:
                named.add((i, field))
                extra.append(problem(field, message, i))
    if not extra:
        return out
    return sorted([*out, *extra], key=lambda e: e.get("row", -1) if isinstance(e.get("row"), int) else -1)


#: the fewest pings a body has for :func:`ping_body` to read it as plain (below, per request, the general way's
#: rows read together with the other requests of a coalesced call cost less: measured with 1 and 10 pings)
PLAIN_MIN_ROWS = 64


def ping_body(body: bytes, max_batch: int) -> tuple[list[Any] | PingBatch, str | None, list[str], Any]:
    """A ``POST /v1/pings`` body read: ``(rows, batch_id, devices, doc)``. A body of plain pings (see
    :mod:`proximity.plain_json`) comes as a :class:`~proximity.batch.PingBatch` with ``doc`` ``None`` (it was
    not parsed as JSON); any other body is parsed (:func:`~proximity.service.codec.parse_json`) and its
    envelope checked (:func:`ping_rows`), so a bad body gets the same 400 or 413 as before.

    A body of fewer than :data:`PLAIN_MIN_ROWS` pings goes the general way too: the coalescer reads many small
    requests' rows in one ``PingBatch.from_json`` call, cheaper than a batch built per request."""
    plain = plain_pings(body, max_batch, min_rows=PLAIN_MIN_ROWS)
    if plain is not None and not _batch_id_problems({"batch_id": plain.batch_id}, False):
        return plain.batch, plain.batch_id, plain.devices, None
    doc = parse_json(body)
    rows, batch_id = ping_rows(doc, max_batch)
    return rows, batch_id, devices_of(rows, "device_id"), doc


def devices_of(rows: Sequence[Any], field: str) -> list[str]:
    """The distinct devices a batch's rows name in ``field``, in order of first appearance; rows that name
    none in a usable form are not charged (they are refused, or, for a scan, the gateway's own)."""
    try:  # every row an object with a hashable value or none: read in C (no Python loop per row)
        found = dict.fromkeys(map(operator.methodcaller("get", field), rows))
    except (AttributeError, TypeError):  # a row that is no object, or a list/object as the value
        found = dict.fromkeys(v for v in (r.get(field) if isinstance(r, Mapping) else None for r in rows)
                              if isinstance(v, str))
    return [d for d in found if isinstance(d, str) and d]


__all__ = ["PING_BODY_KEYS", "PLAIN_MIN_ROWS", "SCAN_BODY_KEYS", "complete_row_errors", "devices_of", "phones_only", "ping_body",
           "ping_rows", "problem", "refuse", "scan_body"]
