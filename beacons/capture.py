"""JSONL captures of what a scanner heard: ``--record`` writes them, ``--replay`` and ``health`` read them.

One advertisement per line::

    {"ts": 1763900000.125, "address": "C0:FF:EE:00:00:01", "rssi": -63, "gateway_id": "gw-store-01",
     "manufacturer_data": {"76": "0215f7826da6..."}, "service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "20..."},
     "tx_power": null, "local_name": null}

``manufacturer_data`` is keyed by the decimal company id and holds the bytes
after the id, ``service_data`` by service UUID (as bleak reports them); instead
of both a line may give ``"raw": "<hex of the advertising payload>"``.
``gateway_id`` (optional) names the scanner that heard it. Blank lines and
lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beacons._convert import parse_hex, to_dbm, to_epoch
from beacons.errors import BeaconError
from beacons.frames import Frame, frames_from_manufacturer_data, frames_from_service_data, parse_advertisement


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    """One advertisement heard: when, from which address, how loud, by whom, and its data."""

    ts: float
    address: str
    rssi: float
    manufacturer_data: Mapping[int, bytes] = field(default_factory=dict)
    service_data: Mapping[str, bytes] = field(default_factory=dict)
    gateway_id: str | None = None
    tx_power: int | None = None
    local_name: str | None = None
    raw: bytes | None = None

    def frames(self, *, strict: bool = False) -> list[Frame]:
        if self.raw is not None:
            return parse_advertisement(self.raw, strict=strict)
        return (frames_from_manufacturer_data(self.manufacturer_data, strict=strict)
                + frames_from_service_data(self.service_data, strict=strict))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "address": self.address, "rssi": self.rssi}
        if self.gateway_id is not None:
            out["gateway_id"] = self.gateway_id
        if self.raw is not None:
            out["raw"] = self.raw.hex()
        else:
            out["manufacturer_data"] = {str(k): bytes(v).hex() for k, v in self.manufacturer_data.items()}
            out["service_data"] = {str(k): bytes(v).hex() for k, v in self.service_data.items()}
        out["tx_power"] = self.tx_power
        out["local_name"] = self.local_name
        return out

    @classmethod
    def from_json(cls, obj: Any) -> CaptureRecord:
        if not isinstance(obj, Mapping):
            raise BeaconError(f"a capture line must be a JSON object, got {type(obj).__name__}")
        for name in ("ts", "rssi"):
            if name not in obj:
                raise BeaconError(f"{name} is missing", field=name)
        address = obj.get("address", "")
        if not isinstance(address, str):
            raise BeaconError("address must be a string", field="address")
        gateway = obj.get("gateway_id")
        if gateway is not None and not isinstance(gateway, str):
            raise BeaconError("gateway_id must be a string", field="gateway_id")
        tx = obj.get("tx_power")
        if tx is not None and (isinstance(tx, bool) or not isinstance(tx, int)):
            raise BeaconError("tx_power must be an integer or null", field="tx_power")
        local_name = obj.get("local_name")
        raw = None
        manufacturer: dict[int, bytes] = {}
        service: dict[str, bytes] = {}
        if "raw" in obj:
            if not isinstance(obj["raw"], str):
                raise BeaconError("raw must be hex text", field="raw")
            raw = parse_hex(obj["raw"], field="raw")
        else:
            md = obj.get("manufacturer_data") or {}
            sd = obj.get("service_data") or {}
            if not isinstance(md, Mapping) or not isinstance(sd, Mapping):
                raise BeaconError("manufacturer_data and service_data must be objects", field="manufacturer_data")
            for k, v in md.items():
                try:
                    company = int(k)
                except ValueError:
                    raise BeaconError(f"manufacturer_data key must be a company id number, got {k!r}",
                                      field="manufacturer_data") from None
                if not isinstance(v, str):
                    raise BeaconError("manufacturer_data values must be hex text", field="manufacturer_data")
                manufacturer[company] = parse_hex(v, field="manufacturer_data")
            for k, v in sd.items():
                if not isinstance(v, str):
                    raise BeaconError("service_data values must be hex text", field="service_data")
                service[str(k)] = parse_hex(v, field="service_data")
        return cls(ts=to_epoch(obj["ts"]), address=address, rssi=to_dbm(obj["rssi"], field="rssi"),
                   manufacturer_data=manufacturer, service_data=service, gateway_id=gateway, tx_power=tx,
                   local_name=local_name if isinstance(local_name, str) else None, raw=raw)


def read_capture(path: str | Path) -> Iterator[CaptureRecord]:
    """The records of a JSONL capture, in file order; errors name ``file:line:col``."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BeaconError(f"invalid JSON: {exc.msg}", source=str(path), line=lineno, col=exc.colno) from None
            try:
                yield CaptureRecord.from_json(obj)
            except BeaconError as exc:
                raise BeaconError(exc.message, source=str(path), line=lineno, col=1, field=exc.field) from None


class CaptureWriter:
    """Appends records to a JSONL file, one flushed line each (a crash loses at most the line being written)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("a", encoding="utf-8")
        self.count = 0

    def write(self, record: CaptureRecord) -> None:
        self._fh.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CaptureRecord", "CaptureWriter", "read_capture"]
