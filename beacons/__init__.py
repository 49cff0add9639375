"""BLE beacons: advertisement frames, ranging, the beacon registry and the store gateway agent.

A leaf package: it imports nothing else of the project.

- :func:`parse_advertisement`, :func:`frames_from_bleak`: raw bytes / bleak data -> frames;
- :class:`Sightings`: columnar batches of (observer, key, rssi, tx_power, ts);
- :func:`load_registry` -> :class:`BeaconRegistry`: beacons, gateways, advertisers;
- :class:`ProximityTracker`: sightings -> :class:`ZoneSightings` (device, store, zone, distance, class);
- :func:`fleet_health`: last seen, battery, temperature per beacon from a capture;
- :mod:`beacons.scans`: the ``POST /v1/scans`` body; :mod:`beacons.gateway`: the agent
  (imports bleak and aiohttp, so it is not imported here).
"""

from beacons._convert import (
    altbeacon_key,
    canonical_key,
    eddystone_key,
    ibeacon_key,
    key_from_fields,
    normalize_uuid,
    parse_hex,
    to_epoch,
)
from beacons.capture import CaptureRecord, CaptureWriter, read_capture
from beacons.errors import BeaconError, FrameError
from beacons.frames import (
    FRAME_TYPES,
    AltBeacon,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    Frame,
    IBeacon,
    bleak_fields,
    encode_advertisement,
    frames_from_bleak,
    parse_advertisement,
)
from beacons.health import (
    LOW_BATTERY_MV,
    SILENT_AFTER_S,
    BeaconHealth,
    HealthReport,
    beacon_problems,
    fleet_health,
)
from beacons.ranging import (
    PROXIMITY_NAMES,
    ArmaFilter,
    CurveFitModel,
    LogDistanceModel,
    ProximityThresholds,
    TrimmedMeanFilter,
)
from beacons.registry import AdvertiserRule, BeaconPlace, BeaconRegistry, GatewayPlace, load_registry
from beacons.scans import (
    SCANS_SCHEMA,
    ScanBatch,
    build_scans_body,
    decode_scans_body,
    parse_scans_body,
    scans_from_json,
)
from beacons.sightings import Sightings, read_sightings_csv
from beacons.tracker import ProximityTracker, ZoneSightings

__all__ = [
    "FRAME_TYPES",
    "LOW_BATTERY_MV",
    "PROXIMITY_NAMES",
    "SCANS_SCHEMA",
    "SILENT_AFTER_S",
    "AdvertiserRule",
    "AltBeacon",
    "ArmaFilter",
    "BeaconError",
    "BeaconHealth",
    "BeaconPlace",
    "BeaconRegistry",
    "CaptureRecord",
    "CaptureWriter",
    "CurveFitModel",
    "EddystoneEID",
    "EddystoneETLM",
    "EddystoneTLM",
    "EddystoneUID",
    "EddystoneURL",
    "Frame",
    "FrameError",
    "GatewayPlace",
    "HealthReport",
    "IBeacon",
    "LogDistanceModel",
    "ProximityThresholds",
    "ProximityTracker",
    "ScanBatch",
    "Sightings",
    "TrimmedMeanFilter",
    "ZoneSightings",
    "altbeacon_key",
    "beacon_problems",
    "bleak_fields",
    "build_scans_body",
    "canonical_key",
    "decode_scans_body",
    "eddystone_key",
    "encode_advertisement",
    "fleet_health",
    "frames_from_bleak",
    "ibeacon_key",
    "key_from_fields",
    "load_registry",
    "normalize_uuid",
    "parse_advertisement",
    "parse_hex",
    "parse_scans_body",
    "read_capture",
    "read_sightings_csv",
    "scans_from_json",
    "to_epoch",
]
