"""The ``POST /v1/scans`` body: what a store gateway sends, built and parsed here.

The server (service issue) and the gateway agent both use this module, so the
format has one definition::

    {
      "gateway_id": "gw-store-01",          # the registered gateway (observer of every sighting)
      "batch_id": "gw-store-01-5f3c...-42", # unique per batch: a retried batch has the same id
      "sent_at": 1763900000.25,             # epoch seconds (or ISO 8601) when the batch was sealed
      "sightings": [
        {"ts": 1763899998.5, "rssi": -67, "raw": "0201061aff4c000215..."},          # raw advertising payload
        {"ts": 1763899999.0, "rssi": -71, "key": "ibeacon:.../7/42", "tx_power": -59}  # parsed fields
      ]
    }

- ``raw``: hex of the advertising payload (AD structures; spaces/colons allowed).
  Every frame with a beacon identity in it becomes one sighting, its ``tx_power``
  the frame's power at 1 m; raw payloads without one are counted in
  ``ScanBatch.skipped`` and otherwise ignored.
- ``key``: a canonical key (``ibeacon:<uuid>/<major>/<minor>``,
  ``eddystone:<namespace>/<instance>``, ``altbeacon:<id>``) — or its parts as
  fields (``uuid``/``major``/``minor``, ``namespace``/``instance``, ``id``);
  ``tx_power`` is the power at 1 m in dBm or ``null``.
- ``address`` (optional): the advertiser's Bluetooth address, kept for diagnostics.
- ``observer_id`` (optional): who saw the beacon when it is not the gateway: a
  phone that saw a store beacon (its device id, 1 to 256 printable characters),
  exactly as the ``observer_id`` column of a backtest's sightings CSV
  (:func:`beacons.sightings.read_sightings_csv`). Without it the observer is
  ``gateway_id``.

The body may be gzip-compressed (``Content-Encoding: gzip``). A bad body (not an
object, a bad ``gateway_id``/``batch_id``/``sent_at``) is refused whole with a
:class:`BeaconError`. A bad *entry* is refused on its own: the service
(:func:`scans_from_json`) processes the good entries and answers each bad one with
its ``row`` and field (``sightings[3].rssi``), as it does for pings;
:func:`parse_scans_body` (all or nothing) raises on the first. The gateway never
retries a refused batch. At most :data:`MAX_SIGHTINGS` entries per batch.
Idempotency: the server remembers ``batch_id`` and acknowledges a repeat
without processing it again.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from beacons._convert import canonical_key, key_from_fields, to_dbm, to_epoch
from beacons.errors import BeaconError
from beacons.frames import parse_advertisement
from beacons.sightings import Sightings
from proxbase.timestamps import TIMESTAMP_SCHEMA

MAX_SIGHTINGS = 10_000
MAX_BODY_BYTES = 8 * 1024 * 1024
SOURCE = "<scans body>"

_ENTRY_RAW = {"ts", "rssi", "raw", "address", "observer_id"}
_ENTRY_KEY = {"ts", "rssi", "key", "tx_power", "address", "type", "uuid", "major", "minor", "namespace",
              "instance", "id", "observer_id"}
#: every field a sighting entry may have, and those it must have
ENTRY_KEYS = tuple(sorted(_ENTRY_RAW | _ENTRY_KEY))
ENTRY_REQUIRED = ("ts", "rssi")
MAX_OBSERVER_ID = 256
_OBSERVER_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_OBSERVER_ID,
                    "description": "The phone that saw the beacon (its device id); default: the gateway."}

#: The JSON Schema of the ``POST /v1/scans`` body.
SCANS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://proximity.invalid/schemas/scans.json",
    "title": "POST /v1/scans body",
    "type": "object",
    "required": ["gateway_id", "batch_id", "sent_at", "sightings"],
    "additionalProperties": False,
    "properties": {
        "gateway_id": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S",
                       "description": "The gateway: 1 to 256 characters, not all of them spaces."},
        "batch_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "sent_at": {**TIMESTAMP_SCHEMA, "description": "epoch seconds or ISO 8601 with an offset"},
        "sightings": {
            "type": "array",
            "maxItems": MAX_SIGHTINGS,
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["ts", "rssi", "raw"],
                        "additionalProperties": False,
                        "properties": {
                            "ts": TIMESTAMP_SCHEMA,
                            "rssi": {"type": "number", "minimum": -127, "maximum": 127},
                            "raw": {"type": "string", "description": "hex of the advertising payload"},
                            "address": {"type": "string"},
                            "observer_id": _OBSERVER_SCHEMA,
                        },
                    },
                    {
                        "type": "object",
                        "required": ["ts", "rssi"],
                        "additionalProperties": False,
                        "properties": {
                            "ts": TIMESTAMP_SCHEMA,
                            "rssi": {"type": "number", "minimum": -127, "maximum": 127},
                            "key": {"type": "string", "pattern": "^(ibeacon|eddystone|altbeacon):"},
                            "tx_power": {"type": ["integer", "null"], "minimum": -127, "maximum": 127},
                            "address": {"type": "string"},
                            "type": {"enum": ["ibeacon", "eddystone", "eddystone_uid", "altbeacon"]},
                            "uuid": {"type": "string"},
                            "major": {"type": "integer", "minimum": 0, "maximum": 65535},
                            "minor": {"type": "integer", "minimum": 0, "maximum": 65535},
                            "namespace": {"type": "string"},
                            "instance": {"type": "string"},
                            "id": {"type": "string"},
                            "observer_id": _OBSERVER_SCHEMA,
                        },
                    },
                ]
            },
        },
    },
}


@dataclass(frozen=True, eq=False)
class ScanBatch:
    """A parsed body: ``sightings`` (observer = the entry's ``observer_id``, else ``gateway_id``), ``entry`` (int64: the index in the
    body's ``sightings`` list each sighting came from; a raw payload may carry several frames),
    ``entries`` (the list's length) and ``skipped`` (raw payloads without a beacon identity)."""

    gateway_id: str
    batch_id: str
    sent_at: float
    sightings: Sightings
    entries: int
    skipped: int
    entry: np.ndarray


def build_scans_body(gateway_id: str, batch_id: str, sent_at: float,
                     sightings: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON-ready body; each sighting is ``{ts, rssi, raw}`` or ``{ts, rssi, key, tx_power}``."""
    return {"gateway_id": gateway_id, "batch_id": batch_id, "sent_at": sent_at, "sightings": list(sightings)}


def encode_scans_body(body: Mapping[str, Any], *, compress: bool = True) -> bytes:
    data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return gzip.compress(data, compresslevel=5) if compress else data


def decode_scans_body(data: bytes, *, content_encoding: str | None = None, source: str = SOURCE) -> ScanBatch:
    """Parse bytes from the wire, gzip-compressed or not (``content_encoding`` is informational:
    the gzip magic bytes decide, since HTTP servers often decompress before the handler sees the body)."""
    # Decompress by the magic bytes: servers such as aiohttp already undo Content-Encoding: gzip.
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                data = fh.read(MAX_BODY_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise BeaconError(f"bad gzip body: {exc}", source=source) from None
    if len(data) > MAX_BODY_BYTES:
        raise BeaconError(f"body larger than {MAX_BODY_BYTES} bytes", source=source)
    try:
        obj = json.loads(data)
    except UnicodeDecodeError:
        raise BeaconError("body is not UTF-8 JSON", source=source) from None
    except json.JSONDecodeError as exc:
        raise BeaconError(f"invalid JSON: {exc.msg}", source=source, line=exc.lineno, col=exc.colno) from None
    return parse_scans_body(obj, source=source)


def _field(where: str, exc: BeaconError, row: int, source: str) -> BeaconError:
    name = f"{where}.{exc.field}" if exc.field else where
    return BeaconError(exc.message, source=source, field=name, row=row)


def parse_scans_body(obj: Any, *, source: str = SOURCE) -> ScanBatch:
    """Validate a decoded body and turn it into a :class:`ScanBatch` (all or nothing: the first bad
    entry raises)."""
    return _parse_body(obj, source, collect=False)[0]


def scans_from_json(obj: Any, *, source: str = SOURCE) -> tuple[ScanBatch, list[BeaconError]]:
    """The service's seam, twin of ``PingBatch.from_json``: a bad body (not an object, a bad
    ``gateway_id``, ``batch_id`` or ``sent_at``, too many entries) raises; a bad *entry* becomes an
    error naming its row and field (``sightings[3].rssi``), and the good entries are kept (each
    sighting's ``row`` is its entry's index)."""
    return _parse_body(obj, source, collect=True)


def _parse_body(obj: Any, source: str, *, collect: bool) -> tuple[ScanBatch, list[BeaconError]]:
    if not isinstance(obj, Mapping):
        raise BeaconError("the body must be a JSON object", source=source)
    extra = set(obj) - {"gateway_id", "batch_id", "sent_at", "sightings"}
    if extra:
        name = sorted(extra)[0]
        raise BeaconError(f"unknown field {name!r}", source=source, field=name)
    for name in ("gateway_id", "batch_id"):
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            raise BeaconError(f"{name} must be a non-empty string", source=source, field=name)
    if not obj["gateway_id"].strip() or len(obj["gateway_id"]) > 256:  # as SCANS_SCHEMA says
        raise BeaconError("gateway_id must be 1 to 256 characters, not all of them spaces", source=source,
                          field="gateway_id")
    if len(obj["batch_id"]) > 200:
        raise BeaconError("batch_id longer than 200 characters", source=source, field="batch_id")
    if "sent_at" not in obj:
        raise BeaconError("sent_at is missing", source=source, field="sent_at")
    try:
        sent_at = to_epoch(obj["sent_at"], field="sent_at")
    except BeaconError as exc:
        raise exc.located(source=source) from None
    entries = obj.get("sightings")
    if not isinstance(entries, list):
        raise BeaconError("sightings must be a list", source=source, field="sightings")
    if len(entries) > MAX_SIGHTINGS:
        raise BeaconError(f"at most {MAX_SIGHTINGS} sightings per batch, got {len(entries)}", source=source,
                          field="sightings")
    gateway = obj["gateway_id"]
    observers: list[str] = []
    keys: list[str] = []
    rssi: list[float] = []
    txp: list[float] = []
    ts: list[float] = []
    rows: list[int] = []
    errors: list[BeaconError] = []
    skipped = 0
    canon: dict[str, str] = {}
    for i, e in enumerate(entries):
        try:
            found = _entry(e, canon)
        except BeaconError as exc:
            err = _field(f"sightings[{i}]", exc, i, source)
            if not collect:
                raise err from None
            errors.append(err)
            continue
        if not found:
            skipped += 1
        for o, k, r, t, when in found:
            observers.append(o or gateway)
            keys.append(k)
            rssi.append(r)
            txp.append(t)
            ts.append(when)
            rows.append(i)
    n = len(keys)
    observer = np.empty(n, dtype=object)
    observer[:] = observers
    key_arr = np.empty(n, dtype=object)
    key_arr[:] = keys
    entry = np.asarray(rows, dtype=np.int64)
    sightings = Sightings(observer, key_arr, np.asarray(rssi, dtype=np.float64), np.asarray(txp, dtype=np.float64),
                          np.asarray(ts, dtype=np.float64), entry)
    return ScanBatch(gateway, obj["batch_id"], sent_at, sightings, entries=len(entries), skipped=skipped,
                     entry=entry), errors


def _entry(e: Any, canon: dict[str, str]) -> list[tuple[str, str, float, float, float]]:
    """One entry's sightings ``(observer, key, rssi, tx_power, ts)`` (observer ``""``: the gateway): one for
    a key, one per beacon frame for a raw payload (none: skipped)."""
    if not isinstance(e, Mapping):
        raise BeaconError(_not_an_entry(e))
    bad = _unknown_fields(e)
    if bad:
        raise BeaconError(_unknown_message(e, bad[0]), field=bad[0])
    for name in ENTRY_REQUIRED:
        if name not in e:
            raise BeaconError(f"{name} is missing", field=name)
    v: dict[str, Any] = {}
    for name, value, problem in _parsed_fields(e, canon):
        if problem is not None:
            raise problem
        v[name] = value
    obs = v.get("observer_id", "")
    if "raw" in e:
        return [(obs, str(f.key), v["rssi"], math.nan if f.power_1m is None else float(f.power_1m), v["ts"])
                for f in v["raw"]]
    return [(obs, v["key"], v["rssi"], v["tx_power"], v["ts"])]


def entry_problems(e: Any) -> list[tuple[str, str]]:
    """Every problem of one scan entry as ``(field, message)``, each field checked on its own, where
    parsing (:func:`scans_from_json`) stops at the first (``("", message)`` for an entry that is no object)."""
    if not isinstance(e, Mapping):
        return [("", _not_an_entry(e))]
    out = [(name, _unknown_message(e, name)) for name in _unknown_fields(e)]
    out += [(name, f"{name} is missing") for name in ENTRY_REQUIRED if name not in e]
    return out + [(problem.field or name, problem.message) for name, _, problem in _parsed_fields(e, {})
                  if problem is not None]


def _parsed_fields(e: Mapping[str, Any], canon: dict[str, str]) -> Iterator[tuple[str, Any, BeaconError | None]]:
    """Each field an entry has parsed on its own, in the order parsing reports them: ``(name, value, None)``,
    or ``(name, None, error)``; ``raw`` is its beacon frames, ``key`` the canonical key."""
    checks: list[tuple[str, Callable[[], Any]]] = [
        (name, check) for name, check in (("ts", lambda: to_epoch(e["ts"])),
                                          ("rssi", lambda: to_dbm(e["rssi"], field="rssi")),
                                          ("observer_id", lambda: _observer(e["observer_id"]))) if name in e]
    if "raw" in e:
        checks.append(("raw", lambda: _frames(e["raw"])))
    else:
        checks += [("key", lambda: _key(e, canon)),
                   ("tx_power", lambda: to_dbm(e.get("tx_power"), field="tx_power", allow_none=True))]
    for name, check in checks:
        try:
            yield name, check(), None
        except BeaconError as exc:
            yield name, None, exc


def _not_an_entry(e: Any) -> str:
    return f"a sighting must be an object, got {type(e).__name__}"


def _unknown_fields(e: Mapping[str, Any]) -> list[str]:
    return sorted(set(e) - (_ENTRY_RAW if "raw" in e else _ENTRY_KEY))


def _unknown_message(e: Mapping[str, Any], name: str) -> str:
    return f"unknown field {name!r}" + (" next to raw" if "raw" in e else "")


def _frames(raw: Any) -> list[Any]:
    """The beacon frames (with a key) of a raw advertisement payload."""
    try:
        return [f for f in parse_advertisement(_hex_text(raw)) if f.key is not None]
    except BeaconError as exc:
        raise BeaconError(exc.message, field="raw") from None


def _key(e: Mapping[str, Any], canon: dict[str, str]) -> str:
    """The canonical beacon key of an entry: ``key`` text (memoised in ``canon``) or its parts."""
    raw_key = e.get("key")
    if not isinstance(raw_key, str):
        return key_from_fields(e)
    k = canon.get(raw_key)
    if k is None:
        k = canon[raw_key] = canonical_key(raw_key)
    return k


def _observer(value: Any) -> str:
    """An entry's ``observer_id``: a device id as pings have (1 to 256 printable characters)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_OBSERVER_ID or not value.isprintable():
        raise BeaconError(f"observer_id must be 1 to {MAX_OBSERVER_ID} printable characters (a device id), not "
                          f"{value!r:.60}", field="observer_id")
    return value


def _hex_text(value: Any) -> str:
    if not isinstance(value, str):
        raise BeaconError(f"raw must be hex text, got {type(value).__name__}", field="raw")
    return value


__all__ = [
    "ENTRY_KEYS",
    "ENTRY_REQUIRED",
    "MAX_SIGHTINGS",
    "SCANS_SCHEMA",
    "ScanBatch",
    "build_scans_body",
    "decode_scans_body",
    "encode_scans_body",
    "entry_problems",
    "parse_scans_body",
    "scans_from_json",
]
