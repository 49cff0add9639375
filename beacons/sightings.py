"""Sightings: a columnar batch of "observer heard beacon key at rssi, at ts".

Two shapes are both real and share this type:

- a phone running the SDK saw a fixed store beacon: ``observer`` is the device id;
- a store gateway heard an advertiser (a phone advertising an app-assigned
  iBeacon, a tag): ``observer`` is the gateway id.

Columns are numpy arrays of equal length. ``tx_power`` is the beacon's
calibrated power **at 1 m** in dBm (NaN when unknown): Eddystone's 0 m
calibration is converted when frames become sightings. ``row`` is each
sighting's row in the input it came from (default ``0..n-1``; a scan body's raw
entry with two frames gives two sightings of one row): whatever is refused later
is reported by that row.

:meth:`Sightings.from_json` is the twin of ``PingBatch.from_json``: JSON rows in,
``(sightings of the good rows, [BeaconError per bad row])`` out.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beacons._convert import canonical_key, key_from_fields, to_dbm, to_epoch
from beacons.errors import BeaconError
from beacons.frames import Frame

CSV_COLUMNS = ("ts", "observer_id", "key", "rssi", "tx_power")


def _object_array(values: Iterable[Any]) -> np.ndarray:
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclass(frozen=True, eq=False)
class Sightings:
    observer: np.ndarray
    key: np.ndarray
    rssi: np.ndarray
    tx_power: np.ndarray
    ts: np.ndarray
    row: np.ndarray = None  # type: ignore[assignment]  # (None: 0..n-1, set in __post_init__)

    def __post_init__(self) -> None:
        n = len(self.observer)
        if self.row is None:
            object.__setattr__(self, "row", np.arange(n, dtype=np.int64))
        for name in ("key", "rssi", "tx_power", "ts", "row"):
            if len(getattr(self, name)) != n:
                raise BeaconError(f"column {name!r} has {len(getattr(self, name))} values, observer has {n}",
                                  field=name)

    def __len__(self) -> int:
        return len(self.observer)

    @classmethod
    def empty(cls) -> Sightings:
        return cls.from_columns([], [], [], [], [])

    @classmethod
    def from_columns(
        cls,
        observer: Sequence[str] | np.ndarray,
        key: Sequence[str] | np.ndarray,
        rssi: Sequence[float] | np.ndarray,
        tx_power: Sequence[float] | np.ndarray | None,
        ts: Sequence[float] | np.ndarray,
    ) -> Sightings:
        """Arrays as given (keys must already be canonical); ``tx_power=None`` means all unknown."""
        rssi_a = np.asarray(rssi, dtype=np.float64)
        return cls(
            observer=np.asarray(observer, dtype=object).reshape(-1) if len(observer) else _object_array([]),
            key=np.asarray(key, dtype=object).reshape(-1) if len(key) else _object_array([]),
            rssi=rssi_a,
            tx_power=(np.full(len(rssi_a), np.nan) if tx_power is None
                      else np.asarray(tx_power, dtype=np.float64)),
            ts=np.asarray(ts, dtype=np.float64),
        )

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], *, source: str | None = None,
                  observer: str | None = None) -> Sightings:
        """From dicts: ``observer`` (or ``observer_id``; or the ``observer`` argument for all rows),
        ``key`` (or its parts: ``uuid/major/minor``, ``namespace/instance``, ``id``), ``rssi``,
        ``tx_power`` (optional, ``None`` = unknown), ``ts`` (epoch seconds or ISO 8601 with an offset).

        A bad row raises :class:`BeaconError` naming the row (0-based) and the field.
        """
        return cls._parse_rows(rows, source, observer, collect=False)[0]

    @classmethod
    def from_json(cls, rows: Iterable[Any], *, source: str | None = "<request body>",
                  observer: str | None = None) -> tuple[Sightings, list[BeaconError]]:
        """Like :meth:`from_rows`, but each bad row becomes an error (naming its row and field) and the
        good ones are kept, each with its input row in ``row``."""
        return cls._parse_rows(rows, source, observer, collect=True)

    @classmethod
    def _parse_rows(cls, rows: Iterable[Any], source: str | None, observer: str | None,
                    *, collect: bool) -> tuple[Sightings, list[BeaconError]]:
        obs: list[str] = []
        keys: list[str] = []
        rssi: list[float] = []
        txp: list[float] = []
        ts: list[float] = []
        good: list[int] = []
        errors: list[BeaconError] = []
        canon: dict[str, str] = {}
        for i, row in enumerate(rows):
            try:
                if not isinstance(row, Mapping):
                    raise BeaconError(f"a sighting must be an object, got {type(row).__name__}")
                o = row.get("observer", row.get("observer_id", observer))
                if not isinstance(o, str) or not o:
                    raise BeaconError("observer must be a non-empty string", field="observer")
                raw_key = row.get("key")
                if isinstance(raw_key, str):
                    k = canon.get(raw_key)
                    if k is None:
                        k = canon[raw_key] = canonical_key(raw_key)
                else:
                    k = key_from_fields(row)
                if "rssi" not in row:
                    raise BeaconError("rssi is missing", field="rssi")
                if "ts" not in row:
                    raise BeaconError("ts is missing", field="ts")
                r = to_dbm(row["rssi"], field="rssi")
                t = to_dbm(row.get("tx_power"), field="tx_power", allow_none=True)
                when = to_epoch(row["ts"])
            except BeaconError as exc:
                if not collect:
                    raise exc.located(source=source, row=i) from None
                errors.append(exc.located(source=source, row=i))
                continue
            obs.append(o)
            keys.append(k)
            rssi.append(r)
            txp.append(t)
            ts.append(when)
            good.append(i)
        return cls(_object_array(obs), _object_array(keys), np.asarray(rssi, dtype=np.float64),
                   np.asarray(txp, dtype=np.float64), np.asarray(ts, dtype=np.float64),
                   np.asarray(good, dtype=np.int64)), errors

    @classmethod
    def from_frames(cls, records: Iterable[tuple[str, float, float, Frame]]) -> Sightings:
        """From ``(observer, ts, rssi, frame)``; frames without a beacon identity (URL, TLM, EID) are skipped.

        ``tx_power`` is the frame's power at 1 m (Eddystone's 0 m calibration minus 41 dB).
        """
        rows = [(o, t, r, f) for o, t, r, f in records if f.key is not None]
        return cls(
            _object_array(o for o, _, _, _ in rows),
            _object_array(f.key for _, _, _, f in rows),
            np.asarray([r for _, _, r, _ in rows], dtype=np.float64),
            np.asarray([math.nan if f.power_1m is None else float(f.power_1m) for _, _, _, f in rows],
                       dtype=np.float64),
            np.asarray([t for _, t, _, _ in rows], dtype=np.float64),
        )

    @classmethod
    def concat(cls, parts: Sequence[Sightings]) -> Sightings:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("observer", "key", "rssi", "tx_power", "ts", "row")))

    def take(self, index: np.ndarray | slice) -> Sightings:
        return Sightings(self.observer[index], self.key[index], self.rssi[index], self.tx_power[index],
                         self.ts[index], self.row[index])

    def to_rows(self) -> list[dict[str, Any]]:
        return [
            {"observer": o, "key": k, "rssi": float(r), "tx_power": None if math.isnan(t) else float(t),
             "ts": float(s)}
            for o, k, r, t, s in zip(self.observer, self.key, self.rssi, self.tx_power, self.ts, strict=True)
        ]


def read_sightings_csv(path: str | Path) -> Sightings:
    """A CSV with header ``ts,observer_id,key,rssi,tx_power`` (tx_power may be empty).

    Errors name ``file:line:col`` (line of the file, column of the field, both 1-based).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise BeaconError("empty file: expected a header " + ",".join(CSV_COLUMNS), source=str(path), line=1)
        header = [h.strip() for h in header]
        missing = [c for c in CSV_COLUMNS if c not in header and c != "tx_power"]
        if missing:
            raise BeaconError(f"missing column {missing[0]!r} (header must have {','.join(CSV_COLUMNS)})",
                              source=str(path), line=1, col=1, field=missing[0])
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise BeaconError(f"expected {len(header)} fields, got {len(values)}", source=str(path),
                                  line=reader.line_num, col=1, row=len(rows))
            row: dict[str, Any] = {h: v.strip() for h, v in zip(header, values, strict=True)}
            if row.get("tx_power", "") == "":
                row["tx_power"] = None
            rows.append(row)
            lines.append(reader.line_num)
    try:
        return Sightings.from_rows(rows)
    except BeaconError as exc:
        line = lines[exc.row] if exc.row is not None else None
        col = None
        if exc.field is not None:
            name = "observer_id" if exc.field == "observer" else exc.field
            col = header.index(name) + 1 if name in header else None
        raise BeaconError(exc.message, source=str(path), line=line, col=col, field=exc.field, row=exc.row) from None


__all__ = ["CSV_COLUMNS", "Sightings", "read_sightings_csv"]
