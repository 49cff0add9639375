"""The beacon registry: which beacon is where, which gateway is where, and which advertiser is whom.

A YAML file (errors are ``file:line:col: message``)::

    version: 1
    beacons:                      # fixed store beacons that phones see
      - key: ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/100/1
        fence_id: store-01        # the store (a fence id of the fence file)
        zone: entrance
        position: [-73.9857, 40.7484]   # optional: lon, lat (or {lon: .., lat: ..})
        power_1m: -59             # optional: calibrated RSSI at 1 m (dBm)
      - uuid: f7826da6-4fa2-4e98-8024-bc5b71e0893e   # the key may be given as its parts
        major: 100
        minor: 2
        fence_id: store-01
        zone: checkout
    gateways:                     # store gateways that hear advertisers
      - id: gw-store-01
        fence_id: store-01
        zone: checkout            # optional: without it the gateway's place is the store
    advertisers:                  # what a gateway hears -> which device
      - key: altbeacon:00112233445566778899aabbccddeeff00112233
        device_id: tag-0007
      - uuid: 2f234454-cf6d-4a0f-adf2-f4911ba9ffa6   # every iBeacon of the app's uuid
        device_id: "dev-{minor:03d}"                 # fields: major, minor, number (= major * 65536 + minor)
      - namespace: 00112233445566778899            # every Eddystone-UID of a namespace
        device_id: "tag-{instance}"                  # fields: namespace, instance
        power_1m: -62

An exact ``key`` rule wins over a pattern; the first matching pattern wins.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beacons._convert import key_from_fields, normalize_uuid, parse_hex, split_key, to_dbm
from beacons.errors import BeaconError

_TOP = {"version", "beacons", "gateways", "advertisers"}
_BEACON_FIELDS = {"key", "type", "uuid", "major", "minor", "namespace", "instance", "id", "fence_id", "zone",
                  "position", "power_1m", "name"}
_GATEWAY_FIELDS = {"id", "fence_id", "zone", "name"}
_ADVERTISER_FIELDS = {"key", "type", "uuid", "major", "minor", "namespace", "instance", "id", "device_id",
                      "power_1m"}
_TEMPLATE_FIELDS = re.compile(r"{([^{}:!]*)")


@dataclass(frozen=True, slots=True)
class BeaconPlace:
    key: str
    fence_id: str
    zone: str | None
    position: tuple[float, float] | None = None
    power_1m: float | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayPlace:
    gateway_id: str
    fence_id: str
    zone: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class AdvertiserRule:
    """``key`` (exact) or ``kind`` + ``prefix`` (pattern: an iBeacon uuid, an Eddystone namespace)."""

    device_id: str
    key: str | None = None
    kind: str | None = None
    prefix: str | None = None
    power_1m: float | None = None

    def matches(self, key: str) -> bool:
        if self.key is not None:
            return key == self.key
        kind, parts = split_key(key)
        return kind == self.kind and parts[0] == self.prefix

    def device_for(self, key: str) -> str:
        if self.key is not None:
            return self.device_id
        kind, parts = split_key(key)
        if kind == "ibeacon":
            major, minor = int(parts[1]), int(parts[2])
            return self.device_id.format(uuid=parts[0], major=major, minor=minor, number=(major << 16) | minor)
        return self.device_id.format(namespace=parts[0], instance=parts[1])


class BeaconRegistry:
    """Beacons, gateways and advertiser rules; look-ups by canonical key / gateway id."""

    def __init__(self, beacons: Mapping[str, BeaconPlace] | None = None,
                 gateways: Mapping[str, GatewayPlace] | None = None,
                 advertisers: tuple[AdvertiserRule, ...] | list[AdvertiserRule] = (),
                 source: str | None = None) -> None:
        self.beacons: dict[str, BeaconPlace] = dict(beacons or {})
        self.gateways: dict[str, GatewayPlace] = dict(gateways or {})
        self.advertisers: tuple[AdvertiserRule, ...] = tuple(advertisers)
        self.source = source
        self._exact = {r.key: r for r in self.advertisers if r.key is not None}
        self._patterns = [r for r in self.advertisers if r.key is None]

    def __repr__(self) -> str:
        return (f"BeaconRegistry({len(self.beacons)} beacons, {len(self.gateways)} gateways, "
                f"{len(self.advertisers)} advertiser rules)")

    def beacon(self, key: str) -> BeaconPlace | None:
        return self.beacons.get(key)

    def gateway(self, gateway_id: str) -> GatewayPlace | None:
        return self.gateways.get(gateway_id)

    def advertiser(self, key: str) -> tuple[str, float | None] | None:
        """``(device_id, power_1m)`` for an advertiser key a gateway heard, or ``None``."""
        rule = self._exact.get(key)
        if rule is None:
            rule = next((r for r in self._patterns if r.matches(key)), None)
        if rule is None:
            return None
        return rule.device_for(key), rule.power_1m

    def fence_ids(self) -> set[str]:
        return {b.fence_id for b in self.beacons.values()} | {g.fence_id for g in self.gateways.values()}

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> BeaconRegistry:
        """From parsed YAML/JSON; ruamel's round-trip containers give errors a line and column."""
        return _Loader(source).load(data)


def _pos(node: Any, key: Any = None, index: int | None = None) -> tuple[int | None, int | None]:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None, None
    try:
        if index is not None:
            line, col = lc.item(index)
        elif key is not None:
            line, col = lc.value(key) if key in node else (lc.line, lc.col)
        else:
            line, col = lc.line, lc.col
    except (KeyError, IndexError, TypeError, AttributeError):
        return None, None
    return line + 1, col + 1


class _Loader:
    def __init__(self, source: str | None) -> None:
        self.source = source

    def error(self, message: str, node: Any = None, key: Any = None, index: int | None = None,
              field: str | None = None) -> BeaconError:
        line, col = _pos(node, key, index)
        if key is not None and node is not None and key not in node:
            line, col = _pos(node)
        return BeaconError(message, source=self.source, line=line, col=col, field=field)

    def key_error(self, node: Any, name: str, where: str) -> BeaconError:
        lc = getattr(node, "lc", None)
        line = col = None
        if lc is not None:
            try:
                line, col = (p + 1 for p in lc.key(name))
            except (KeyError, TypeError):
                line, col = _pos(node)
        return BeaconError(f"unknown key {name!r} in {where}", source=self.source, line=line, col=col, field=name)

    def check_keys(self, node: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for name in node:
            if name not in allowed:
                raise self.key_error(node, str(name), where)

    def wrap(self, exc: BeaconError, node: Any, where: str) -> BeaconError:
        key = exc.field if exc.field is not None and exc.field in node else None
        line, col = _pos(node, key)
        return BeaconError(f"{where}: {exc.message}", source=self.source, line=line, col=col, field=exc.field)

    def text(self, node: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str | None:
        value = node.get(name)
        if value is None:
            if required:
                raise self.error(f"{where}: {name!r} is required", node, field=name)
            return None
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
            raise self.error(f"{where}: {name!r} must be a non-empty string", node, name, field=name)
        return str(value)

    def power(self, node: Mapping[str, Any], where: str) -> float | None:
        if node.get("power_1m") is None:
            return None
        try:
            value = to_dbm(node["power_1m"], field="power_1m")
        except BeaconError as exc:
            raise self.wrap(exc, node, where) from None
        if value >= 0:
            raise self.error(f"{where}: power_1m is an RSSI at 1 m and must be negative dBm, got {value}",
                             node, "power_1m", field="power_1m")
        return value

    def section(self, data: Mapping[str, Any], name: str) -> list[Any]:
        value = data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(f"{name!r} must be a list", data, name, field=name)
        return value

    def item(self, section: list[Any], i: int, where: str) -> Mapping[str, Any]:
        node = section[i]
        if not isinstance(node, Mapping):
            raise self.error(f"{where} must be a mapping", section, index=i)
        return node

    def load(self, data: Any) -> BeaconRegistry:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise self.error("a beacon registry must be a mapping with beacons, gateways, advertisers", data)
        self.check_keys(data, _TOP, "the registry")
        version = data.get("version", 1)
        if version != 1:
            raise self.error(f"unsupported registry version {version!r} (expected 1)", data, "version",
                             field="version")
        beacons: dict[str, BeaconPlace] = {}
        for i, _ in enumerate(section := self.section(data, "beacons")):
            where = f"beacons[{i}]"
            node = self.item(section, i, where)
            self.check_keys(node, _BEACON_FIELDS, where)
            try:
                key = key_from_fields(node)
            except BeaconError as exc:
                raise self.wrap(exc, node, where) from None
            if key in beacons:
                raise self.error(f"{where}: beacon {key} is registered twice", node, field="key")
            beacons[key] = BeaconPlace(
                key=key,
                fence_id=str(self.text(node, "fence_id", where)),
                zone=self.text(node, "zone", where, required=False),
                position=self.position(node, where),
                power_1m=self.power(node, where),
                name=self.text(node, "name", where, required=False),
            )
        gateways: dict[str, GatewayPlace] = {}
        for i, _ in enumerate(section := self.section(data, "gateways")):
            where = f"gateways[{i}]"
            node = self.item(section, i, where)
            self.check_keys(node, _GATEWAY_FIELDS, where)
            gid = str(self.text(node, "id", where))
            if gid in gateways:
                raise self.error(f"{where}: gateway {gid!r} is registered twice", node, "id", field="id")
            gateways[gid] = GatewayPlace(gid, str(self.text(node, "fence_id", where)),
                                         self.text(node, "zone", where, required=False),
                                         self.text(node, "name", where, required=False))
        rules: list[AdvertiserRule] = []
        for i, _ in enumerate(section := self.section(data, "advertisers")):
            where = f"advertisers[{i}]"
            node = self.item(section, i, where)
            self.check_keys(node, _ADVERTISER_FIELDS, where)
            rules.append(self.advertiser(node, where))
        exact = [r.key for r in rules if r.key is not None]
        if len(exact) != len(set(exact)):
            dup = next(k for k in exact if exact.count(k) > 1)
            raise self.error(f"advertiser {dup} is mapped twice", data, "advertisers", field="advertisers")
        return BeaconRegistry(beacons, gateways, rules, source=self.source)

    def position(self, node: Mapping[str, Any], where: str) -> tuple[float, float] | None:
        value = node.get("position")
        if value is None:
            return None
        if isinstance(value, Mapping):
            lon, lat = value.get("lon"), value.get("lat")
        elif isinstance(value, list) and len(value) == 2:
            lon, lat = value
        else:
            raise self.error(f"{where}: position must be [lon, lat] or {{lon: .., lat: ..}}", node, "position",
                             field="position")
        try:
            lon_f, lat_f = float(lon), float(lat)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise self.error(f"{where}: position must be numbers, got {value!r}", node, "position",
                             field="position") from None
        if not (math.isfinite(lon_f) and -180 <= lon_f <= 180 and math.isfinite(lat_f) and -90 <= lat_f <= 90):
            raise self.error(f"{where}: position out of range (lon -180..180, lat -90..90): {lon_f}, {lat_f}",
                             node, "position", field="position")
        return lon_f, lat_f

    def advertiser(self, node: Mapping[str, Any], where: str) -> AdvertiserRule:
        device = str(self.text(node, "device_id", where))
        power = self.power(node, where)
        try:
            if "key" in node or ("uuid" in node and "major" in node) or "instance" in node or "id" in node:
                return AdvertiserRule(device, key=key_from_fields(node), power_1m=power)
            if "uuid" in node:
                kind, prefix, fields = "ibeacon", normalize_uuid(node["uuid"]), {"uuid", "major", "minor", "number"}
            elif "namespace" in node:
                ns = node["namespace"]
                raw = parse_hex(str(ns), field="namespace")
                if len(raw) != 10:
                    raise BeaconError(f"namespace must be 10 bytes (20 hex digits), got {len(raw)}",
                                      field="namespace")
                kind, prefix, fields = "eddystone", raw.hex(), {"namespace", "instance"}
            else:
                raise BeaconError("an advertiser needs key (or its parts), or a pattern: uuid or namespace",
                                  field="key")
        except BeaconError as exc:
            raise self.wrap(exc, node, where) from None
        for name in _TEMPLATE_FIELDS.findall(device):
            if name not in fields:
                raise self.error(f"{where}: device_id template uses {{{name}}}; available: "
                                 f"{', '.join(sorted(fields))}", node, "device_id", field="device_id")
        sample = ("ibeacon:00000000-0000-0000-0000-000000000000/1/2" if kind == "ibeacon"
                  else "eddystone:00000000000000000000/000000000001")
        rule = AdvertiserRule(device, kind=kind, prefix=prefix, power_1m=power)
        try:
            rule.device_for(sample)
        except (ValueError, KeyError, IndexError) as exc:
            raise self.error(f"{where}: bad device_id template {device!r}: {exc}", node, "device_id",
                             field="device_id") from None
        return rule


def load_registry(path_or_text: str | Path) -> BeaconRegistry:
    """A registry from a YAML file path or YAML text (text is anything with a newline or not a file)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    if isinstance(path_or_text, Path) or ("\n" not in path_or_text and Path(path_or_text).is_file()):
        path = Path(path_or_text)
        source = str(path)
        text = path.read_text(encoding="utf-8")
    else:
        source, text = "<registry>", str(path_or_text)
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise BeaconError(
            f"invalid YAML: {exc.problem or exc.context}",
            source=source,
            line=mark.line + 1 if mark is not None else None,
            col=mark.column + 1 if mark is not None else None,
        ) from None
    except YAMLError as exc:
        raise BeaconError(f"invalid YAML: {exc}", source=source) from None
    return BeaconRegistry.from_dict(data, source=source)


__all__ = ["AdvertiserRule", "BeaconPlace", "BeaconRegistry", "GatewayPlace", "load_registry"]
