"""``proximity campaigns``: schema, validate, backtest and report on campaign files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_PROBLEMS = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "campaigns",
        help="check campaign YAML files, print their JSON Schema, replay logs through them",
        description="Campaign files: schema, validate, backtest.",
    )
    sub = parser.add_subparsers(dest="campaigns_command", metavar="ACTION")
    parser.set_defaults(run=lambda args: _help(parser))

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema (draft 2020-12) of campaign files",
        description="Print the JSON Schema of campaign files, for editors (completion and checks as you type).",
    )
    p.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2)")
    p.set_defaults(run=run_schema)

    p = sub.add_parser(
        "validate",
        help="check campaign files; print every problem as file:line:col: message",
        description=(
            "Check campaign files. Every problem is printed as file:line:col: message and the exit "
            "code is 1; with no problem a one-line summary is printed and the exit code is 0."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="campaign YAML files (checked together: ids unique across them)")
    p.add_argument("--fences", metavar="FENCES.geojson", help="also check fence ids, tags and {store.*} placeholders against these fences")
    p.add_argument("--beacons", metavar="REGISTRY.yaml", help="also check beacon triggers' zones against this beacon registry")
    p.set_defaults(run=run_validate)

    p = sub.add_parser(
        "backtest",
        help="replay a ping (and sighting) log through the engine and the campaigns",
        description=(
            "Replay a log with a simulated clock through the real engine and campaigns (in memory: no "
            "Redis, no server). Prints a table per campaign: events matched, offers, offers held or "
            "dropped by quiet hours, refusals by schedule, audience and priority, and how often each "
            "cap blocked it. With --out DIR, also writes events.jsonl, offers.jsonl (rendered offers) "
            "and decisions.jsonl (why each matched campaign did or did not fire). Bad input is reported "
            "as file:line:col: message with exit code 2."
        ),
    )
    p.add_argument("campaigns", metavar="CAMPAIGNS.yaml", help="campaign file")
    p.add_argument("--fences", required=True, metavar="FENCES.geojson")
    p.add_argument("--pings", required=True, metavar="PINGS.csv", help="header ts,device_id,lon,lat,accuracy_m (ts ISO 8601 or epoch seconds); optional timezone, "
                   "attrs (a JSON object) and any other column as a device attribute (e.g. age, segments, opt_out)")
    p.add_argument("--sightings", metavar="SIGHTINGS.csv", help="ts,observer_id,key,rssi,tx_power (needs --beacons)")
    p.add_argument("--beacons", metavar="REGISTRY.yaml", help="beacon registry for --sightings")
    p.add_argument("--out", metavar="DIR", help="directory for events.jsonl, offers.jsonl, decisions.jsonl and report.html (the campaigns table and an interactive map replaying the log; created if needed; without it only the table is printed)")
    p.add_argument("--config", metavar="SERVICE.yaml",
                   help="run presence with the engine: and tracker: settings of this 'proximity serve' config "
                        "file (the rules the service runs with; defaults: EngineConfig's)")
    p.add_argument("--slice", type=float, default=60.0, metavar="SECONDS", help="simulated clock step (default 60)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress lines on stderr (by default a line every 5 s once a replay runs that long)")
    p.set_defaults(run=run_backtest)

    p = sub.add_parser(
        "report",
        help="conversions, lift against the holdout and foot traffic, from a backtest's --out DIR",
        description=(
            "Read a backtest's --out DIR (decisions.jsonl, events.jsonl, campaigns.json) and print, per "
            "campaign, variant and store: exposures (offers and holdout decisions), conversions (the first "
            "qualifying visit within the campaign's window after an exposure), the conversion rate, and "
            "the lift against the holdout (absolute and relative, 95%% confidence intervals, incremental "
            "visits); then foot traffic per store and day. A directory without decisions exits with code 2."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="a 'proximity campaigns backtest --out DIR' directory")
    p.add_argument("--campaigns", metavar="CAMPAIGNS.yaml",
                   help="read conversion rules and experiments from this file instead of DIR/campaigns.json (needs --fences)")
    p.add_argument("--fences", metavar="FENCES.geojson", help="fences for --campaigns (tags of conversion places)")
    p.add_argument("--attribution", choices=("last", "each"), default="last",
                   help="who gets a visit when exposures overlap: the last exposure before it (default), "
                        "or each exposure its own first qualifying visit")
    p.add_argument("--min-exposed", type=int, default=30, metavar="N",
                   help="exposures needed in the treated group and in the holdout before a lift is given (default 30)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run_report)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_schema(args: argparse.Namespace) -> int:
    from campaigns import json_schema

    print(json.dumps(json_schema(), indent=args.indent or None))
    return 0


def fence_infos_from(path: str) -> tuple[dict[str, Any], list[Any]]:
    """FenceInfo per fence of a GeoJSON file, and the problems of their campaign-relevant properties."""
    from campaigns import CampaignError, FenceInfo
    from geofence import load_geojson

    infos: dict[str, Any] = {}
    problems = []
    for fence in load_geojson(path):
        try:
            infos[fence.id] = FenceInfo.from_fence(fence)
        except ValueError as exc:
            problems.append(CampaignError(f"fence {fence.id!r}: {exc}", source=path, field=f"{fence.id}.properties"))
    return infos, problems


def run_validate(args: argparse.Namespace) -> int:
    from campaigns import CampaignError, parse_file
    from campaigns.loader import merge

    fences = zones = None
    problems: list[Any] = []
    if args.fences:
        fences, problems = fence_infos_from(args.fences)
    if args.beacons:
        from beacons import load_registry

        registry = load_registry(Path(args.beacons))  # errors name file:line:col
        zones = {b.zone for b in registry.beacons.values() if b.zone} | {
            g.zone for g in registry.gateways.values() if g.zone}
    files = list({Path(f).resolve(): f for f in reversed(args.files)}.values())[::-1]  # a file given twice: once
    sets = []
    for path in files:
        if not Path(path).is_file():
            raise CampaignError("no such file", source=path)
        cs, errs = parse_file(path, fences, zones=zones, partial=True)
        problems.extend(errs)
        if cs is not None:
            sets.append(cs)
    problems.extend(merge(sets)[1])  # ids across files, also when a file has other problems
    n_files = f"{len(files)} file{'s' if len(files) != 1 else ''}"
    if problems:
        for p in sorted(problems, key=lambda p: (str(p.source), p.line or 0, p.col or 0)):
            print(p)
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {n_files}", file=sys.stderr)
        return EXIT_PROBLEMS
    n = sum(len(s.campaigns) for s in sets)
    active = sum(1 for s in sets for c in s.campaigns if c.status == "active")
    checked = "".join(f", {what} checked against {path}" for what, path in (("fences", args.fences), ("zones", args.beacons)) if path)
    print(f"ok: {n} campaign{'s' if n != 1 else ''} ({active} active) in {n_files}{checked}")
    return 0


def run_backtest(args: argparse.Namespace) -> int:
    from campaigns import CampaignFileError, CampaignRules, MemoryLimiter, load_campaigns
    from campaigns.backtest import format_table, replay
    from geofence import FenceIndex, load_geojson
    from proximity.batch import PingBatch
    from proximity.engine import Engine, EngineConfig
    from proximity.progress import Progress

    if args.sightings and not args.beacons:
        raise ValueError("--sightings needs --beacons (the registry that maps beacon keys to stores and zones)")
    if not args.slice > 0:
        raise ValueError(f"--slice must be a positive number of seconds, not {args.slice:g}")
    fences = load_geojson(args.fences)
    infos, problems = fence_infos_from(args.fences)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    try:
        campaign_set = load_campaigns(args.campaigns, infos)
    except CampaignFileError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    service = None
    if args.config:
        from proximity.service.config import load_config

        service = load_config(args.config)  # errors (engine: and tracker: too) name file:line:col
    pings = PingBatch.from_csv(args.pings)
    tracker = sightings = None
    if args.sightings:
        from beacons import ProximityTracker, load_registry, read_sightings_csv

        tracker = ProximityTracker(load_registry(Path(args.beacons)),
                                   **(service.tracker_settings() if service else {}))
        sightings = read_sightings_csv(args.sightings)  # errors name file:line:col
    rules = CampaignRules(campaign_set, infos, limiter=MemoryLimiter())
    # a replay runs on the log's clock: no wall-clock skew check
    settings = service.engine_settings(max_future_skew_s=None) if service else {"max_future_skew_s": None}
    engine = Engine(FenceIndex(fences), tracker=tracker, rules=rules, config=EngineConfig(**settings))
    rows = len(pings) + (len(sightings) if sightings is not None else 0)
    progress = Progress(f"backtest {Path(args.pings).name}", 1.0, bar=False) if args.progress else None
    report = replay(engine, rules, pings, sightings, slice_s=args.slice, out=args.out,
                    progress=progress.update if progress else None)
    if progress:
        progress.close(f"{rows:,} rows")
    if args.out:  # the console's map, offline: the replayed devices moving, their events and offers
        from proximity.service.static_map import backtest_page

        report.outputs.append(str(backtest_page(Path(args.out), report, args.fences, pings)))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_table(report))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from campaigns.report import lift_report
    from campaigns.report_files import format_report, read_dir

    if args.min_exposed < 1:
        raise ValueError(f"--min-exposed must be at least 1, not {args.min_exposed}")
    specs = None
    if args.campaigns:
        from campaigns import CampaignFileError, load_campaigns
        from campaigns.conversions import specs_of

        if not args.fences:
            raise ValueError("--campaigns needs --fences (conversion places are fences and their tags)")
        infos, problems = fence_infos_from(args.fences)
        try:
            if problems:
                raise CampaignFileError(problems)
            specs = specs_of(load_campaigns(args.campaigns, infos), infos)
        except CampaignFileError as exc:
            print(exc.report(), file=sys.stderr)
            return 2
    data = read_dir(args.dir, specs)
    report = lift_report(data.exposures, data.events, data.specs, data.fence_names, data.arm_names,
                         attribution=args.attribution, min_exposed=args.min_exposed, timezone=data.timezone,
                         n_devices=len(data.device_names))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0
