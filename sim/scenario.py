"""Scenarios: every knob of a simulation run, read from YAML with line:col errors.

A scenario is a tree of frozen dataclasses. The YAML file mirrors the tree;
every key is optional (the defaults are the bundled default scenario's values).
Unknown keys, wrong types and out-of-range values raise :class:`SimError` with
the file, line and column (and a did-you-mean for misspelt keys).

``variants`` names alternative settings of the same scenario (dotted keys,
e.g. ``{ble.enabled: false}``) that ``proximity sim run --compare`` runs on the
same seed, side by side.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from sim.errors import SimError

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
#: The bundled default scenario (``sim/scenarios/default.yaml``).
DEFAULT_SCENARIO = SCENARIO_DIR / "default.yaml"


@dataclass(frozen=True)
class CityConfig:
    """A grid city: rectangular blocks separated by streets (local metric frame around the origin)."""

    origin_lon: float = 2.3522
    origin_lat: float = 48.8566
    blocks_x: int = 6
    blocks_y: int = 5
    block_m: float = 160.0
    street_m: float = 20.0  # facade to facade across a street
    lane_offset_m: float = 3.0  # a car's lane centre from the street centre line
    sidewalk_offset_m: float = 7.5  # a pedestrian's line from the street centre line
    timezone: str = "Europe/Paris"


@dataclass(frozen=True)
class StoresConfig:
    """How many stores of each size class; small ones carry beacons."""

    small: int = 16
    medium: int = 12
    large: int = 4
    malls: int = 1
    shops_per_mall: int = 10
    small_size_m: tuple[float, float] = (16.0, 24.0)
    medium_size_m: tuple[float, float] = (35.0, 70.0)
    large_size_m: tuple[float, float] = (90.0, 130.0)
    shop_width_m: tuple[float, float] = (22.0, 34.0)
    shop_depth_m: float = 32.0
    corridor_m: float = 10.0
    beacons: str = "small"  # which stores have beacons: none | small | small+shops | all
    dwell_s: float = 120.0  # the fences' dwell_s property
    # extra GeoJSON properties of the fences, by size class (e.g. {mall: {max_accuracy_m: 40}})
    properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # extra GeoJSON properties of the stores that carry beacons, when ble.enabled (e.g. {max_accuracy_m: 1}:
    # only their beacons enter them)
    beacon_store_properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MobilityConfig:
    """Daily routines: roles (fractions), speeds, visit lengths (minutes), stops."""

    roles: Mapping[str, float] = field(
        default_factory=lambda: {"commuter_walk": 0.3, "commuter_drive": 0.25, "shopper": 0.3, "courier": 0.15}
    )
    walk_speed_mps: tuple[float, float] = (1.0, 1.6)
    drive_speed_mps: tuple[float, float] = (7.0, 13.0)
    visits_per_day: tuple[int, int] = (1, 4)
    visit_min_small: tuple[float, float] = (3.0, 12.0)
    visit_min_medium: tuple[float, float] = (5.0, 25.0)
    visit_min_large: tuple[float, float] = (10.0, 40.0)
    visit_min_mall: tuple[float, float] = (20.0, 70.0)
    parked_min: tuple[float, float] = (2.0, 12.0)
    courier_stops: tuple[int, int] = (4, 10)
    red_light_prob: float = 0.3
    red_light_s: tuple[float, float] = (10.0, 45.0)


@dataclass(frozen=True)
class GpsConfig:
    """GPS fixes. ``sigma_m`` is the outdoor 68 % horizontal error radius (what phones call accuracy)."""

    sigma_m: float = 15.0
    device_spread: float = 0.25  # lognormal sd of a device's quality factor
    indoor_factor: float = 1.8
    correlation_s: float = 45.0  # the error is a Gauss-Markov process, not white noise
    accuracy_noise: float = 0.3  # lognormal sd of reported accuracy / true error radius
    indoor_accuracy_bias: float = 0.8  # phones under-report their error indoors
    interval_s: float = 30.0  # walking, in a store, parked
    drive_interval_s: float = 15.0
    still_interval_s: float = 300.0  # at home or at work
    interval_jitter: float = 0.1
    dropout: float = 0.02
    indoor_dropout: float = 0.08
    speed_noise_mps: float = 0.5


@dataclass(frozen=True)
class BleConfig:
    """Phone-side beacon ranging: log-distance path loss with log-normal shadowing."""

    enabled: bool = True
    entrance_inset_m: float = 1.5  # the entrance beacon, this far inside the door
    checkout_depth: float = 0.7  # the checkout beacon, at this fraction of the store's depth from the door
    scan_interval_s: float = 10.0
    tx_power_1m: float = -59.0
    calibration_error_db: float = 2.0
    path_loss_exponent: float = 2.2
    shadowing_db: float = 5.0
    wall_loss_db: float = 8.0
    sensitivity_dbm: float = -92.0
    detect_prob: float = 0.85
    range_m: float = 45.0


@dataclass(frozen=True)
class MetricsConfig:
    """How detections are scored against the ground truth."""

    tolerance_s: float = 60.0  # an enter counts for a visit if it lands in [start - tol, end + tol]
    exit_tolerance_s: float = 300.0  # an exit is missed when none comes by visit end + this
    pass_radius_m: float = 25.0  # a walk-by / drive-by passes a store within this distance


@dataclass(frozen=True)
class RunConfig:
    """How the engine is fed: time slices of ``step_s`` of simulated time."""

    step_s: float = 30.0
    http_batch: int = 500


@dataclass(frozen=True)
class LiftConfig:
    """A true effect of the campaigns' offers (read by :mod:`sim.lift`): an offer raises the chance that
    the device visits the campaign's conversion places within its window by ``effect`` (absolute; per
    campaign in ``effects``); held-out devices are unaffected."""

    effect: float = 0.0
    effects: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str = "default"
    seed: int = 7
    start: str = "2026-03-02T06:00:00+01:00"
    hours: float = 14.0
    devices: int = 1000
    city: CityConfig = field(default_factory=CityConfig)
    stores: StoresConfig = field(default_factory=StoresConfig)
    mobility: MobilityConfig = field(default_factory=MobilityConfig)
    gps: GpsConfig = field(default_factory=GpsConfig)
    ble: BleConfig = field(default_factory=BleConfig)
    engine: Mapping[str, Any] = field(default_factory=dict)  # EngineConfig keyword arguments
    tracker: Mapping[str, Any] = field(default_factory=dict)  # beacons.ProximityTracker keyword arguments
    campaigns: str | None = None  # a campaigns YAML file, relative to the scenario file
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    lift: LiftConfig = field(default_factory=LiftConfig)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None  # the file it was read from (not a YAML key)

    @property
    def start_ts(self) -> float:
        return parse_time(self.start, field="start")

    @property
    def end_ts(self) -> float:
        return self.start_ts + self.hours * 3600.0

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source and not self.source.startswith("<") else SCENARIO_DIR

    def campaigns_path(self) -> Path | None:
        if not self.campaigns:
            return None
        p = Path(self.campaigns)
        return p if p.is_absolute() else self.base_dir / p

    def with_overrides(self, overrides: Mapping[str, Any], *, source: str = "<overrides>") -> Scenario:
        """A copy with dotted-key overrides applied (``{"gps.sigma_m": 10, "ble.enabled": False}``)."""
        out = self
        for dotted, value in overrides.items():
            out = _replace_dotted(out, str(dotted).split("."), value, str(dotted), source)
        return out

    def variant(self, name: str) -> Scenario:
        if name not in self.variants:
            hint = _did_you_mean(name, list(self.variants))
            raise SimError(f"unknown variant {name!r}{hint}; the scenario has {sorted(self.variants)}", field="variants")
        return dataclasses.replace(self.with_overrides(self.variants[name], source=f"variants.{name}"), name=name)


def parse_time(value: str | float | int, *, field: str = "ts") -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise SimError(f"{field}: not an ISO 8601 time: {value!r}", field=field) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --------------------------------------------------------------------------- loading

_RANGES: dict[str, tuple[float, float]] = {
    "devices": (1, 1_000_000),
    "hours": (0.1, 24 * 14),
    "city.blocks_x": (2, 100),
    "city.blocks_y": (2, 100),
    "city.block_m": (60, 1000),
    "city.street_m": (8, 100),
    "stores.small": (0, 10_000),
    "stores.medium": (0, 10_000),
    "stores.large": (0, 10_000),
    "stores.malls": (0, 1000),
    "stores.shops_per_mall": (2, 40),
    "gps.sigma_m": (0.5, 500),
    "gps.interval_s": (1, 3600),
    "gps.drive_interval_s": (1, 3600),
    "gps.still_interval_s": (1, 7200),
    "gps.dropout": (0, 0.95),
    "gps.indoor_dropout": (0, 0.95),
    "gps.indoor_factor": (1, 20),
    "gps.correlation_s": (0, 3600),
    "ble.scan_interval_s": (1, 600),
    "ble.detect_prob": (0, 1),
    "ble.path_loss_exponent": (1, 6),
    "ble.entrance_inset_m": (0, 20),
    "ble.checkout_depth": (0, 1),
    "metrics.tolerance_s": (0, 3600),
    "run.step_s": (1, 3600),
    "run.http_batch": (1, 100_000),
    "mobility.red_light_prob": (0, 1),
    "lift.effect": (0, 0.95),
}
_CHOICES: dict[str, tuple[str, ...]] = {"stores.beacons": ("none", "small", "small+shops", "all")}
SIZE_CLASSES = ("small", "medium", "large", "mall", "shop")
ROLES = ("commuter_walk", "commuter_drive", "shopper", "courier")


def load_scenario(path_or_text: str | Path | None = None, *, source: str | None = None) -> Scenario:
    """Read a scenario YAML file (``None``: the bundled default) or YAML text."""
    if path_or_text is None:
        path_or_text = DEFAULT_SCENARIO
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str) and "\n" not in path_or_text
                                          and path_or_text.endswith((".yaml", ".yml"))):
        path = Path(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SimError(f"no such scenario file: {path}", source=str(path)) from None
        source = source or str(path)
    else:
        text = str(path_or_text)
        source = source or "<scenario>"
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SimError(
            f"invalid YAML: {exc.problem or exc.context}",
            source=source,
            line=mark.line + 1 if mark else None,
            col=mark.column + 1 if mark else None,
        ) from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, Mapping):
        raise SimError("a scenario is a mapping of settings", source=source, line=1, col=1)
    scenario = _build(Scenario, data, "", source)
    scenario = dataclasses.replace(scenario, source=source)
    _check(scenario, data, source)
    return scenario


def _pos(node: Any, key: Any | None) -> tuple[int | None, int | None]:
    try:
        if key is None:
            return node.lc.line + 1, node.lc.col + 1
        if isinstance(node, CommentedMap):
            line, col, _vl, _vc = node.lc.data[key]
            return line + 1, col + 1
        if isinstance(node, CommentedSeq):
            line, col = node.lc.data[key]
            return line + 1, col + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    return None, None


def _value_pos(node: Any, key: Any) -> tuple[int | None, int | None]:
    try:
        if isinstance(node, CommentedMap):
            _l, _c, line, col = node.lc.data[key]
            return line + 1, col + 1
    except (AttributeError, KeyError, TypeError):
        pass
    return _pos(node, key)


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(cls: type, node: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    kwargs: dict[str, Any] = {}
    for key in node:
        dotted = f"{prefix}{key}"
        if key not in names:
            line, col = _pos(node, key)
            raise SimError(
                f"unknown key {dotted!r}{_did_you_mean(str(key), names)}",
                source=source, line=line, col=col, field=dotted,
            )
        line, col = _value_pos(node, key)
        kwargs[key] = _convert(hints[key], node[key], dotted, source, line, col)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, dotted: str, source: str, line: int | None, col: int | None) -> Any:
    def fail(what: str) -> SimError:
        return SimError(f"{dotted}: {what}, not {value!r}", source=source, line=line, col=col, field=dotted)

    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise fail("expected a mapping")
        return _build(tp, value, f"{dotted}.", source)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, dotted, source, line, col)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("expected an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("expected a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise fail("expected a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, datetime | date):  # YAML reads unquoted ISO times as timestamps
            value = value.isoformat()
        if not isinstance(value, str):
            raise fail("expected a string")
        return str(value)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise fail(f"expected a list of {len(args)} values [low, high]")
        out = tuple(_convert(a, v, f"{dotted}[{i}]", source, line, col) for i, (a, v) in enumerate(zip(args, value, strict=True)))
        if len(out) == 2 and out[0] > out[1]:
            raise fail("expected [low, high] with low <= high")
        return out
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise fail("expected a mapping")
        val_t = args[1] if len(args) == 2 else Any
        return {str(k): (_plain(v) if val_t is Any else _convert(val_t, v, f"{dotted}.{k}", source, *_value_pos(value, k)))
                for k, v in value.items()}
    if tp is Any:
        return _plain(value)
    raise fail(f"unsupported setting type {tp}")  # pragma: no cover


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _lookup(scenario: Scenario, dotted: str) -> Any:
    obj: Any = scenario
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _node_pos(data: Mapping[str, Any], dotted: str) -> tuple[int | None, int | None]:
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node, Mapping) or part not in node:
            return None, None
        node = node[part]
    if isinstance(node, Mapping) and parts[-1] in node:
        return _value_pos(node, parts[-1])
    return None, None


def _check(scenario: Scenario, data: Mapping[str, Any], source: str) -> None:
    def fail(dotted: str, message: str) -> SimError:
        line, col = _node_pos(data, dotted)
        return SimError(f"{dotted}: {message}", source=source, line=line, col=col, field=dotted)

    for dotted, (lo, hi) in _RANGES.items():
        value = _lookup(scenario, dotted)
        if not lo <= value <= hi:
            raise fail(dotted, f"must be between {lo:g} and {hi:g}, not {value!r}")
    for dotted, choices in _CHOICES.items():
        value = _lookup(scenario, dotted)
        if value not in choices:
            raise fail(dotted, f"must be one of {', '.join(choices)}, not {value!r}")
    for cls in scenario.stores.properties:
        if cls not in SIZE_CLASSES:
            node = data.get("stores", {}).get("properties", {}) if isinstance(data.get("stores"), Mapping) else {}
            line, col = _pos(node, cls)
            raise SimError(f"stores.properties: unknown size class {cls!r}{_did_you_mean(cls, list(SIZE_CLASSES))}",
                           source=source, line=line, col=col, field=f"stores.properties.{cls}")
    roles = scenario.mobility.roles
    for name, share in roles.items():
        if name not in ROLES:
            line, col = _node_pos(data, f"mobility.roles.{name}")
            raise SimError(f"mobility.roles: unknown role {name!r}{_did_you_mean(name, list(ROLES))}",
                           source=source, line=line, col=col, field=f"mobility.roles.{name}")
        if share < 0:
            raise fail(f"mobility.roles.{name}", "a share cannot be negative")
    if sum(roles.values()) <= 0:
        raise fail("mobility.roles", "the role shares must add up to more than 0")
    try:
        scenario.start_ts  # noqa: B018 (validates)
    except SimError as exc:
        line, col = _node_pos(data, "start")
        raise SimError(exc.message, source=source, line=line, col=col, field="start") from None
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(scenario.city.timezone)
    except Exception:  # ZoneInfoNotFoundError, ValueError on odd names
        raise fail("city.timezone", f"unknown time zone {scenario.city.timezone!r}") from None
    for name, overrides in scenario.variants.items():
        if not isinstance(overrides, Mapping):
            raise fail(f"variants.{name}", "a variant is a mapping of dotted keys to values")
        try:
            scenario.with_overrides(overrides, source=f"variants.{name}")
        except SimError as exc:
            line, col = _node_pos(data, f"variants.{name}")
            raise SimError(f"variants.{name}: {exc.message}", source=source, line=line, col=col,
                           field=f"variants.{name}") from None


def _replace_dotted(obj: Any, parts: list[str], value: Any, dotted: str, source: str) -> Any:
    head = parts[0]
    if isinstance(obj, Mapping) and not dataclasses.is_dataclass(obj):
        new = dict(obj)
        if len(parts) == 1:
            new[head] = _plain(value)
        else:
            new[head] = _replace_dotted(new.get(head, {}), parts[1:], value, dotted, source)
        return new
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise SimError(f"{dotted}: {head!r} is not a group of settings", source=source, field=dotted)
    names = [f.name for f in dataclasses.fields(obj) if f.name not in ("source", "variants")]
    if head not in names:
        raise SimError(f"unknown setting {dotted!r}{_did_you_mean(head, names)}", source=source, field=dotted)
    if len(parts) == 1:
        tp = typing.get_type_hints(type(obj))[head]
        new_value = _convert(tp, value, dotted, source, None, None)
    else:
        new_value = _replace_dotted(getattr(obj, head), parts[1:], value, dotted, source)
    return dataclasses.replace(obj, **{head: new_value})


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """A JSON-ready dict of every setting (written next to the results)."""
    out = dataclasses.asdict(scenario)
    return _plain(out)
