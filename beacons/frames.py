"""Advertisement frames: iBeacon, AltBeacon and the Eddystone family.

A BLE advertising payload is a sequence of AD structures (``length, type,
data...``). Beacons put their frame in one of them:

- iBeacon: manufacturer data (AD type 0xFF) of Apple (company 0x004C):
  ``02 15 <uuid 16> <major 2> <minor 2> <measured power int8>`` (power at 1 m);
- AltBeacon: manufacturer data of any company:
  ``BE AC <beacon id 20> <reference RSSI int8> <reserved 1>`` (RSSI at 1 m);
- Eddystone: service data (AD type 0x16) for the 16-bit UUID 0xFEAA, frame type
  first: UID ``00``, URL ``10``, TLM ``20`` (version 0 plain, 1 encrypted), EID ``30``.
  Eddystone powers are calibrated at 0 m.

:func:`parse_advertisement` reads a raw payload (bytes or hex text);
:func:`frames_from_bleak` reads bleak's ``AdvertisementData`` (manufacturer data
keyed by company id without the id bytes, service data keyed by 128-bit UUID
text). Both return the same frames: small frozen objects whose ``key`` is the
beacon's canonical identity (see :mod:`beacons._convert`) or ``None`` for frames
that carry no stable identity (Eddystone URL, TLM and EID: a gateway ties TLM to
its beacon through the advertiser's address).

Frames that cannot be recognised are skipped (other vendors' data is not an
error); ``strict=True`` raises :class:`~beacons.errors.FrameError` for a frame
that claims to be a beacon but is malformed (wrong length, reserved URL code).
A payload whose AD structure runs past the data always raises ``FrameError``.

The ``encode_*`` functions are the inverse, used by tests, simulators and
gateways that need to re-emit a payload.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Union

from beacons._convert import (
    altbeacon_key,
    eddystone_key,
    eddystone_power_1m,
    ibeacon_key,
    normalize_uuid,
    parse_hex,
)
from beacons.errors import BeaconError, FrameError

APPLE_COMPANY_ID = 0x004C
EDDYSTONE_UUID16 = 0xFEAA
EDDYSTONE_SERVICE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"

AD_FLAGS = 0x01
AD_UUID16_COMPLETE = 0x03
AD_SERVICE_DATA_16 = 0x16
AD_MANUFACTURER = 0xFF

URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
URL_EXPANSIONS = (
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/",
    ".com", ".org", ".edu", ".net", ".info", ".biz", ".gov",
)  # codes 0x00..0x0D; 0x0E..0x20 and 0x7F..0xFF are reserved


def _i8(b: int) -> int:
    return b - 256 if b > 127 else b


class _PowerAt1m:
    """A frame whose ``tx_power`` is already the power at 1 m (iBeacon, AltBeacon)."""

    __slots__ = ()
    tx_power: int

    @property
    def power_1m(self) -> int:
        return self.tx_power


class _Anonymous:
    """A frame that carries no stable identity of its beacon (``key`` is ``None``)."""

    __slots__ = ()

    @property
    def key(self) -> None:
        return None


class _EddystonePower:
    """An Eddystone frame with a power calibrated at 0 m (``power_1m`` converts it)."""

    __slots__ = ()
    tx_power: int

    @property
    def power_1m(self) -> int:
        return eddystone_power_1m(self.tx_power)


class _Telemetry(_Anonymous):
    """A telemetry frame: no identity, no power."""

    __slots__ = ()

    @property
    def power_1m(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class IBeacon(_PowerAt1m):
    """Apple iBeacon: ``tx_power`` is the measured power at 1 m (dBm)."""

    uuid: str
    major: int
    minor: int
    tx_power: int
    type: ClassVar[str] = "ibeacon"

    @property
    def key(self) -> str:
        return ibeacon_key(self.uuid, self.major, self.minor)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "uuid": self.uuid, "major": self.major, "minor": self.minor,
                "tx_power": self.tx_power}


@dataclass(frozen=True, slots=True)
class AltBeacon(_PowerAt1m):
    """AltBeacon: a 20-byte id (also read as a 16-byte UUID + two 16-bit ids); ``tx_power`` at 1 m."""

    manufacturer: int
    beacon_id: bytes
    tx_power: int
    data: int = 0
    type: ClassVar[str] = "altbeacon"

    @property
    def key(self) -> str:
        return altbeacon_key(self.beacon_id)

    @property
    def id1(self) -> str:
        return normalize_uuid(self.beacon_id[:16])

    @property
    def id2(self) -> int:
        return int.from_bytes(self.beacon_id[16:18], "big")

    @property
    def id3(self) -> int:
        return int.from_bytes(self.beacon_id[18:20], "big")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "manufacturer": self.manufacturer, "id": self.beacon_id.hex(),
                "id1": self.id1, "id2": self.id2, "id3": self.id3, "tx_power": self.tx_power,
                "data": self.data}


@dataclass(frozen=True, slots=True)
class EddystoneUID(_EddystonePower):
    """Eddystone-UID: ``tx_power`` is calibrated at 0 m; ``reserved`` is whether the 2 RFU bytes were sent."""

    namespace: bytes
    instance: bytes
    tx_power: int
    reserved: bool = True
    type: ClassVar[str] = "eddystone_uid"

    @property
    def key(self) -> str:
        return eddystone_key(self.namespace, self.instance)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "namespace": self.namespace.hex(), "instance": self.instance.hex(),
                "tx_power": self.tx_power}


@dataclass(frozen=True, slots=True)
class EddystoneURL(_Anonymous, _EddystonePower):
    url: str
    tx_power: int
    type: ClassVar[str] = "eddystone_url"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "url": self.url, "tx_power": self.tx_power}


@dataclass(frozen=True, slots=True)
class EddystoneTLM(_Telemetry):
    """Unencrypted telemetry (version 0). ``None`` marks a value the beacon does not support."""

    battery_mv: int | None
    temperature_c: float | None
    adv_count: int
    uptime_s: float
    version: int = 0
    type: ClassVar[str] = "eddystone_tlm"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "battery_mv": self.battery_mv,
                "temperature_c": self.temperature_c, "adv_count": self.adv_count, "uptime_s": self.uptime_s}


@dataclass(frozen=True, slots=True)
class EddystoneETLM(_Telemetry):
    """Encrypted telemetry (version 1): the 12 opaque bytes, the salt and the MIC."""

    etlm: bytes
    salt: bytes
    mic: bytes
    version: int = 1
    type: ClassVar[str] = "eddystone_tlm"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "salt": self.salt.hex(), "mic": self.mic.hex(),
                "etlm": self.etlm.hex()}


@dataclass(frozen=True, slots=True)
class EddystoneEID(_Anonymous, _EddystonePower):
    eid: bytes
    tx_power: int
    type: ClassVar[str] = "eddystone_eid"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "eid": self.eid.hex(), "tx_power": self.tx_power}


Frame = Union[IBeacon, AltBeacon, EddystoneUID, EddystoneURL, EddystoneTLM, EddystoneETLM, EddystoneEID]  # noqa: UP007
#: The frame types :func:`parse_advertisement` recognises (``Frame.type`` values).
FRAME_TYPES = ("ibeacon", "altbeacon", "eddystone_uid", "eddystone_url", "eddystone_tlm", "eddystone_eid")


class AdvertisementLike(Protocol):
    """What :func:`frames_from_bleak` reads (bleak's ``AdvertisementData`` has it)."""

    @property
    def manufacturer_data(self) -> Mapping[int, bytes]: ...

    @property
    def service_data(self) -> Mapping[str, bytes]: ...


# ---------------------------------------------------------------------------- parsing


def _malformed(strict: bool, message: str) -> None:
    if strict:
        raise FrameError(message)


def parse_manufacturer(company: int, payload: bytes, *, strict: bool = False) -> Frame | None:
    """The beacon frame in one manufacturer-specific datum (bytes after the company id), or ``None``."""
    if company == APPLE_COMPANY_ID and payload[:2] == b"\x02\x15":
        if len(payload) != 23:
            _malformed(strict, f"iBeacon frame must be 23 bytes after the company id, got {len(payload)}")
            return None
        major, minor = struct.unpack_from(">HH", payload, 18)
        return IBeacon(normalize_uuid(payload[2:18]), major, minor, _i8(payload[22]))
    if payload[:2] == b"\xbe\xac":
        if len(payload) != 24:
            _malformed(strict, f"AltBeacon frame must be 24 bytes after the company id, got {len(payload)}")
            return None
        return AltBeacon(company, bytes(payload[2:22]), _i8(payload[22]), payload[23])
    return None


def _decode_url(scheme: int, body: bytes, strict: bool) -> str | None:
    if scheme >= len(URL_SCHEMES):
        _malformed(strict, f"Eddystone-URL scheme code 0x{scheme:02x} is reserved")
        return None
    out = [URL_SCHEMES[scheme]]
    for b in body:
        if b < len(URL_EXPANSIONS):
            out.append(URL_EXPANSIONS[b])
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            _malformed(strict, f"Eddystone-URL code 0x{b:02x} is reserved")
            return None
    return "".join(out)


def parse_eddystone(payload: bytes, *, strict: bool = False) -> Frame | None:
    """The Eddystone frame in the service data of UUID 0xFEAA (bytes after the UUID), or ``None``."""
    if not payload:
        _malformed(strict, "empty Eddystone service data")
        return None
    kind = payload[0]
    n = len(payload)
    if kind == 0x00:
        if n not in (18, 20):
            _malformed(strict, f"Eddystone-UID frame must be 18 or 20 bytes, got {n}")
            return None
        return EddystoneUID(bytes(payload[2:12]), bytes(payload[12:18]), _i8(payload[1]), reserved=n == 20)
    if kind == 0x10:
        if n < 3:
            _malformed(strict, f"Eddystone-URL frame must be at least 3 bytes, got {n}")
            return None
        url = _decode_url(payload[2], payload[3:], strict)
        return None if url is None else EddystoneURL(url, _i8(payload[1]))
    if kind == 0x20:
        if n < 2:
            _malformed(strict, "Eddystone-TLM frame without a version")
            return None
        version = payload[1]
        if version == 0x00:
            if n != 14:
                _malformed(strict, f"Eddystone-TLM frame must be 14 bytes, got {n}")
                return None
            vbatt, temp, adv, sec = struct.unpack_from(">HhII", payload, 2)
            return EddystoneTLM(
                battery_mv=vbatt or None,
                temperature_c=None if temp == -0x8000 else temp / 256.0,
                adv_count=adv,
                uptime_s=sec / 10.0,
            )
        if version == 0x01:
            if n != 18:
                _malformed(strict, f"encrypted Eddystone-TLM frame must be 18 bytes, got {n}")
                return None
            return EddystoneETLM(bytes(payload[2:14]), bytes(payload[14:16]), bytes(payload[16:18]))
        _malformed(strict, f"Eddystone-TLM version 0x{version:02x} is unknown")
        return None
    if kind == 0x30:
        if n != 10:
            _malformed(strict, f"Eddystone-EID frame must be 10 bytes, got {n}")
            return None
        return EddystoneEID(bytes(payload[2:10]), _i8(payload[1]))
    return None


def ad_structures(data: bytes) -> list[tuple[int, bytes]]:
    """Split a payload into ``(ad_type, data)``; a zero length ends it (the rest is padding)."""
    out: list[tuple[int, bytes]] = []
    i = 0
    n = len(data)
    while i < n:
        length = data[i]
        if length == 0:
            break
        if i + 1 + length > n:
            raise FrameError(
                f"AD structure at byte {i} has length {length} but only {n - i - 1} bytes follow",
                field="data",
            )
        out.append((data[i + 1], bytes(data[i + 2 : i + 1 + length])))
        i += 1 + length
    return out


def parse_advertisement(data: bytes | bytearray | memoryview | str, *, strict: bool = False) -> list[Frame]:
    """Every beacon frame in a raw advertising payload (bytes, or hex with optional spaces/colons)."""
    if isinstance(data, str):
        try:
            raw = parse_hex(data, field="data")
        except BeaconError as exc:
            raise FrameError(exc.message, field="data") from None
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise FrameError(f"advertising data must be bytes or hex text, got {type(data).__name__}")
    frames: list[Frame] = []
    for ad_type, body in ad_structures(raw):
        frame: Frame | None = None
        if ad_type == AD_MANUFACTURER and len(body) >= 2:
            frame = parse_manufacturer(int.from_bytes(body[:2], "little"), body[2:], strict=strict)
        elif (ad_type == AD_SERVICE_DATA_16 and len(body) >= 2
              and int.from_bytes(body[:2], "little") == EDDYSTONE_UUID16):
            frame = parse_eddystone(body[2:], strict=strict)
        if frame is not None:
            frames.append(frame)
    return frames


def frames_from_service_data(service_data: Mapping[str, bytes], *, strict: bool = False) -> list[Frame]:
    frames: list[Frame] = []
    for uuid, payload in service_data.items():
        try:
            is_eddystone = normalize_uuid(uuid) == EDDYSTONE_SERVICE_UUID
        except BeaconError:
            is_eddystone = str(uuid).lower() in ("feaa", "0xfeaa")
        if is_eddystone:
            frame = parse_eddystone(bytes(payload), strict=strict)
            if frame is not None:
                frames.append(frame)
    return frames


def frames_from_manufacturer_data(manufacturer_data: Mapping[int, bytes], *, strict: bool = False) -> list[Frame]:
    frames: list[Frame] = []
    for company, payload in manufacturer_data.items():
        frame = parse_manufacturer(int(company), bytes(payload), strict=strict)
        if frame is not None:
            frames.append(frame)
    return frames


def frames_from_bleak(adv: AdvertisementLike, *, strict: bool = False) -> list[Frame]:
    """Every beacon frame in bleak's ``AdvertisementData`` (manufacturer data first, then service data)."""
    return (frames_from_manufacturer_data(adv.manufacturer_data, strict=strict)
            + frames_from_service_data(adv.service_data, strict=strict))


# ---------------------------------------------------------------------------- encoding


def _u8_power(value: int) -> int:
    if not -128 <= value <= 127:
        raise FrameError(f"tx power must be -128..127 dBm, got {value}", field="tx_power")
    return value & 0xFF


def encode_url(url: str) -> bytes:
    """The scheme byte and compressed body of an Eddystone-URL (longest expansion first)."""
    for code, prefix in sorted(enumerate(URL_SCHEMES), key=lambda p: -len(p[1])):
        if url.startswith(prefix):
            out = bytearray([code])
            rest = url[len(prefix):]
            break
    else:
        raise FrameError(f"Eddystone-URL must start with one of {URL_SCHEMES}: {url!r}", field="url")
    by_length = sorted(enumerate(URL_EXPANSIONS), key=lambda p: -len(p[1]))
    i = 0
    while i < len(rest):
        for code, text in by_length:
            if rest.startswith(text, i):
                out.append(code)
                i += len(text)
                break
        else:
            c = ord(rest[i])
            if not 0x21 <= c <= 0x7E:
                raise FrameError(f"Eddystone-URL cannot carry the character {rest[i]!r}", field="url")
            out.append(c)
            i += 1
    return bytes(out)


def encode_manufacturer(frame: IBeacon | AltBeacon) -> tuple[int, bytes]:
    """``(company id, bytes after it)``: the shape of bleak's ``manufacturer_data`` items."""
    if isinstance(frame, IBeacon):
        import uuid as _uuid

        return APPLE_COMPANY_ID, (b"\x02\x15" + _uuid.UUID(frame.uuid).bytes
                                  + struct.pack(">HHB", frame.major, frame.minor, _u8_power(frame.tx_power)))
    if len(frame.beacon_id) != 20:
        raise FrameError("AltBeacon id must be 20 bytes", field="id")
    return frame.manufacturer, (b"\xbe\xac" + frame.beacon_id
                                + bytes([_u8_power(frame.tx_power), frame.data & 0xFF]))


def encode_eddystone(frame: EddystoneUID | EddystoneURL | EddystoneTLM | EddystoneETLM | EddystoneEID) -> bytes:
    """The Eddystone service data (bytes after the 0xFEAA UUID): the shape of bleak's ``service_data`` values."""
    if isinstance(frame, EddystoneUID):
        return (bytes([0x00, _u8_power(frame.tx_power)]) + frame.namespace + frame.instance
                + (b"\x00\x00" if frame.reserved else b""))
    if isinstance(frame, EddystoneURL):
        return bytes([0x10, _u8_power(frame.tx_power)]) + encode_url(frame.url)
    if isinstance(frame, EddystoneTLM):
        temp = -0x8000 if frame.temperature_c is None else round(frame.temperature_c * 256)
        return bytes([0x20, 0x00]) + struct.pack(
            ">HhII", frame.battery_mv or 0, temp, frame.adv_count, round(frame.uptime_s * 10))
    if isinstance(frame, EddystoneETLM):
        return bytes([0x20, 0x01]) + frame.etlm + frame.salt + frame.mic
    return bytes([0x30, _u8_power(frame.tx_power)]) + frame.eid


def _ad(ad_type: int, body: bytes) -> bytes:
    if len(body) + 1 > 255:
        raise FrameError(f"AD structure too long ({len(body) + 1} bytes)")
    return bytes([len(body) + 1, ad_type]) + body


def encode_advertisement(frames: Iterable[Frame], *, flags: bool = True) -> bytes:
    """A raw advertising payload carrying ``frames`` (flags, Eddystone UUID list, frame AD structures)."""
    frames = list(frames)
    out = bytearray(_ad(AD_FLAGS, b"\x06") if flags else b"")
    if any(f.type.startswith("eddystone") for f in frames):
        out += _ad(AD_UUID16_COMPLETE, EDDYSTONE_UUID16.to_bytes(2, "little"))
    for f in frames:
        if isinstance(f, IBeacon | AltBeacon):
            company, payload = encode_manufacturer(f)
            out += _ad(AD_MANUFACTURER, company.to_bytes(2, "little") + payload)
        else:
            out += _ad(AD_SERVICE_DATA_16, EDDYSTONE_UUID16.to_bytes(2, "little") + encode_eddystone(f))
    return bytes(out)


def bleak_fields(frames: Iterable[Frame]) -> tuple[dict[int, bytes], dict[str, bytes]]:
    """``(manufacturer_data, service_data)`` as bleak reports ``frames`` (one datum per key: last wins)."""
    manufacturer: dict[int, bytes] = {}
    service: dict[str, bytes] = {}
    for f in frames:
        if isinstance(f, IBeacon | AltBeacon):
            company, payload = encode_manufacturer(f)
            manufacturer[company] = payload
        else:
            service[EDDYSTONE_SERVICE_UUID] = encode_eddystone(f)
    return manufacturer, service


__all__ = [
    "APPLE_COMPANY_ID",
    "EDDYSTONE_SERVICE_UUID",
    "EDDYSTONE_UUID16",
    "FRAME_TYPES",
    "URL_EXPANSIONS",
    "URL_SCHEMES",
    "AdvertisementLike",
    "AltBeacon",
    "EddystoneEID",
    "EddystoneETLM",
    "EddystoneTLM",
    "EddystoneUID",
    "EddystoneURL",
    "Frame",
    "IBeacon",
    "ad_structures",
    "bleak_fields",
    "encode_advertisement",
    "encode_eddystone",
    "encode_manufacturer",
    "encode_url",
    "frames_from_bleak",
    "frames_from_manufacturer_data",
    "frames_from_service_data",
    "parse_advertisement",
    "parse_eddystone",
    "parse_manufacturer",
]
