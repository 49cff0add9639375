"""``proximity beacons``: parse advertisements, range sightings, report fleet health."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 30s, 10m, 2h)")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def _coefficients(text: str) -> tuple[float, float, float]:
    try:
        a, b, c = (float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers A,B,C, got {text!r}") from None
    return a, b, c


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "beacons", help="BLE beacon tools: parse advertisements, range sightings, fleet health",
        description="BLE beacon tools: parse advertisements, range sightings, fleet health.")
    sub = parser.add_subparsers(dest="beacons_command", metavar="SUBCOMMAND")
    parser.set_defaults(run=lambda args: (parser.print_help(sys.stderr), 2)[1])

    p = sub.add_parser(
        "parse", help="decode a raw advertising payload (hex) into beacon frames, as JSON",
        description="Decode a raw BLE advertising payload (AD structures, hex; spaces and colons allowed) and "
                    "print a JSON list with one object per beacon frame found (iBeacon, AltBeacon, Eddystone "
                    "UID/URL/TLM/EID). No frame: [] and exit 0. Bad hex or a truncated AD structure: "
                    "'error: ...' on stderr and exit 2.",
        epilog="example: proximity beacons parse 0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00640001c5")
    p.add_argument("hex", nargs="+", metavar="HEX", help="the payload; several arguments are joined")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 2) on a malformed beacon frame instead of skipping it")
    p.set_defaults(run=_run_parse)

    t = sub.add_parser(
        "track", help="range a sightings CSV against a registry: one JSON line per zone sighting",
        description="Resolve and range sightings (CSV: ts,observer_id,key,rssi,tx_power) with a beacon "
                    "registry; print one JSON object per resolved sighting (device_id, fence_id, zone, "
                    "distance_m, proximity, ts, row, ...). Counters go to stderr.")
    t.add_argument("registry", metavar="REGISTRY.yaml")
    t.add_argument("sightings", metavar="SIGHTINGS.csv")
    t.add_argument("--filter", choices=("trimmed", "arma"), default="trimmed",
                   help="RSSI filter (default: trimmed mean over --window)")
    t.add_argument("--window", type=parse_duration, default=20.0, help="trimmed-mean window (default 20s)")
    t.add_argument("--model", choices=("log_distance", "curve_fit"), default="log_distance",
                   help="distance model (default log_distance)")
    t.add_argument("--exponent", type=float, default=2.0, help="path-loss exponent (default 2.0)")
    t.add_argument("--curve", type=_coefficients, default=None, metavar="A,B,C",
                   help="curve-fit coefficients of d = A * (rssi/P1m) ** B + C (default 0.89976,7.7095,0.111)")
    t.add_argument("--immediate-m", type=float, default=0.5,
                   help="closer than this is 'immediate' (default 0.5)")
    t.add_argument("--near-m", type=float, default=3.0, help="closer than this is 'near', else 'far' (default 3.0)")
    t.set_defaults(run=_run_track)

    h = sub.add_parser(
        "health", help="fleet health from a capture: last seen, battery, temperature, silent beacons",
        description="Report, for every beacon of the registry, when it was last heard in a JSONL capture "
                    "(as written by 'proximity gateway --record'), its battery and temperature from Eddystone "
                    "TLM, and whether it is silent or low on battery. Exit 0 when every beacon is ok, 1 when "
                    "some need attention, 2 on bad input.")
    h.add_argument("registry", metavar="REGISTRY.yaml")
    h.add_argument("capture", metavar="CAPTURE.jsonl")
    # defaults resolved when the command runs: importing beacons here loaded numba for every command
    h.add_argument("--silent-after", type=parse_duration, default=None,
                   help="a beacon not heard for this long is silent (default 10m)")
    h.add_argument("--low-battery-mv", type=int, default=None, help="low battery threshold in mV (default 2500)")
    h.add_argument("--now", type=float, default=None,
                   help="evaluate at this epoch time (default: the newest timestamp of the capture)")
    h.add_argument("--json", action="store_true", help="print the report as JSON")
    h.set_defaults(run=_run_health)


def _run_parse(args: argparse.Namespace) -> int:
    from beacons import BeaconError, parse_advertisement

    try:
        frames = parse_advertisement(" ".join(args.hex), strict=args.strict)
    except BeaconError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps([f.to_dict() for f in frames], indent=2))
    return 0


def _run_track(args: argparse.Namespace) -> int:
    from beacons import (
        CurveFitModel,
        ProximityThresholds,
        ProximityTracker,
        load_registry,
        read_sightings_csv,
    )

    thresholds = ProximityThresholds(args.immediate_m, args.near_m)  # ValueError (exit 2) when not ordered
    if args.curve is not None and args.model != "curve_fit":
        raise ValueError("--curve sets the coefficients of --model curve_fit; add --model curve_fit")
    model = CurveFitModel(*args.curve) if args.curve is not None else args.model
    registry = load_registry(args.registry)
    sightings = read_sightings_csv(args.sightings)
    tracker = ProximityTracker(registry, filter=args.filter, model=model, window_s=args.window,
                               path_loss_exponent=args.exponent, thresholds=thresholds)
    order = sightings.ts.argsort(kind="stable")
    zs = tracker.update(sightings.take(order))
    out = sys.stdout
    try:
        for row in zs.to_rows():
            row["row"] = int(order[row["row"]])
            if row["distance_m"] is not None:
                row["distance_m"] = round(row["distance_m"], 3)
            row["rssi"] = round(row["rssi"], 2)
            out.write(json.dumps(row) + "\n")
        out.flush()
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, and keep Python's exit flush from failing too
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    print(json.dumps(dict(sorted(tracker.stats.items()))), file=sys.stderr)
    return 0


def _fmt(value: Any, spec: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _run_health(args: argparse.Namespace) -> int:
    from beacons import fleet_health, load_registry, read_capture
    from beacons.health import LOW_BATTERY_MV, SILENT_AFTER_S

    registry = load_registry(args.registry)
    silent_after = SILENT_AFTER_S if args.silent_after is None else args.silent_after
    low_battery = LOW_BATTERY_MV if args.low_battery_mv is None else args.low_battery_mv
    report = fleet_health(registry, read_capture(args.capture), now=args.now, silent_after_s=silent_after,
                          low_battery_mv=low_battery)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        header = f"{'beacon':<60} {'store':<10} {'zone':<10} {'status':<18} {'last seen':>10} " \
                 f"{'rssi':>5} {'battery':>8} {'temp':>6}"
        print(header)
        for b in report.beacons + report.unregistered:
            ago = None if b.last_seen is None or report.now is None else report.now - b.last_seen
            status = b.status if registry.beacon(b.key) is not None else "unregistered"
            print(f"{b.key:<60} {_fmt(b.fence_id):<10} {_fmt(b.zone):<10} {status:<18} "
                  f"{(_fmt(ago, '.0f') + 's ago') if ago is not None else 'never':>10} "
                  f"{_fmt(b.last_rssi, '.0f'):>5} "
                  f"{(_fmt(b.battery_mv) + 'mV') if b.battery_mv is not None else '-':>8} "
                  f"{_fmt(b.temperature_c, '.1f'):>6}")
        bad = report.problems
        print(f"\n{len(report.beacons)} registered beacons, {len(bad)} need attention, "
              f"{len(report.unregistered)} unregistered heard", file=sys.stderr)
    return 1 if report.problems else 0
