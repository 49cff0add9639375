"""Where advertisements come from: the radio (bleak) or a JSONL capture.

A :class:`BeaconSource` calls ``on_advertisement(record)`` for each
advertisement heard until it runs out (a capture) or ``stop`` is set (the radio).

:class:`BleakSource` runs bleak's ``BleakScanner`` with a detection callback, in
``active`` or ``passive`` mode (passive mode gives BlueZ the or-patterns of
iBeacon, AltBeacon and Eddystone, which it requires); ``backend=`` passes a custom scanner backend
through to bleak (tests use one that subclasses bleak's ``BaseBleakScanner``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from bleak import BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from beacons.capture import CaptureRecord, read_capture

OnAdvertisement = Callable[[CaptureRecord], None]

#: What passive scanning asks BlueZ to report (BlueZ needs patterns for passive mode):
#: iBeacon (Apple manufacturer data 02 15), AltBeacon (BE AC after any company id), Eddystone (UUID 0xFEAA).
BEACON_OR_PATTERNS = [
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00\x02\x15"),
    OrPattern(2, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xbe\xac"),
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xaa\xfe"),
]


class ScannerError(OSError):
    """The radio could not be used (no adapter, no permission, Bluetooth off)."""


class BeaconSource(Protocol):
    async def run(self, on_advertisement: OnAdvertisement, stop: asyncio.Event) -> None: ...


def record_from_bleak(device: BLEDevice, adv: AdvertisementData, *, ts: float | None = None,
                      gateway_id: str | None = None) -> CaptureRecord:
    return CaptureRecord(
        ts=time.time() if ts is None else ts,
        address=device.address,
        rssi=float(adv.rssi),
        manufacturer_data=dict(adv.manufacturer_data),
        service_data=dict(adv.service_data),
        gateway_id=gateway_id,
        tx_power=adv.tx_power,
        local_name=adv.local_name,
    )


class BleakSource:
    def __init__(self, *, scanning_mode: Literal["active", "passive"] = "active",
                 backend: type[BaseBleakScanner] | None = None, gateway_id: str | None = None,
                 clock: Callable[[], float] = time.time, **scanner_kwargs: Any) -> None:
        self.scanning_mode = scanning_mode
        self.backend = backend
        self.gateway_id = gateway_id
        self.clock = clock
        if scanning_mode == "passive":
            # BlueZ refuses passive scanning without advertisement-monitor patterns; other backends ignore them
            scanner_kwargs.setdefault("bluez", {"or_patterns": BEACON_OR_PATTERNS})
        self.scanner_kwargs = scanner_kwargs

    async def run(self, on_advertisement: OnAdvertisement, stop: asyncio.Event) -> None:
        def detected(device: BLEDevice, adv: AdvertisementData) -> None:
            on_advertisement(record_from_bleak(device, adv, ts=self.clock(), gateway_id=self.gateway_id))

        try:
            scanner = BleakScanner(detection_callback=detected, scanning_mode=self.scanning_mode,
                                   backend=self.backend, **self.scanner_kwargs)
            await scanner.start()
        except (BleakError, OSError) as exc:
            raise ScannerError(f"cannot start the BLE scanner: {exc}") from exc
        try:
            await stop.wait()
        finally:
            await scanner.stop()


class ReplaySource:
    """Replays a JSONL capture; ``speed=0`` as fast as possible, ``1`` in real time, ``10`` ten times faster."""

    def __init__(self, path: str | Path, *, speed: float = 0.0, gateway_id: str | None = None) -> None:
        self.path = Path(path)
        self.speed = speed
        self.gateway_id = gateway_id

    async def run(self, on_advertisement: OnAdvertisement, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        start_wall: float | None = None
        start_ts = 0.0
        for i, record in enumerate(read_capture(self.path)):
            if stop.is_set():
                return
            if self.speed > 0:
                if start_wall is None:
                    start_wall, start_ts = loop.time(), record.ts
                delay = start_wall + (record.ts - start_ts) / self.speed - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        return
                    except TimeoutError:
                        pass
            elif i % 256 == 255:
                await asyncio.sleep(0)
            if record.gateway_id is None and self.gateway_id is not None:
                record = CaptureRecord(record.ts, record.address, record.rssi, record.manufacturer_data,
                                       record.service_data, self.gateway_id, record.tx_power, record.local_name,
                                       record.raw)
            on_advertisement(record)


__all__ = ["BEACON_OR_PATTERNS", "BeaconSource", "BleakSource", "OnAdvertisement", "ReplaySource", "ScannerError", "record_from_bleak"]
