"""``proximity sim``: run the simulation harness (a synthetic city with ground truth) on the real engine."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import sys
from pathlib import Path
from typing import Any


def _sim(module: str) -> Any:
    """A module of the ``sim`` harness, loaded when the command runs.

    ``sim/`` sits on top of the product (it uses only the public API) and no
    product module depends on it, so it is loaded here as a plug-in, by name.
    """
    return importlib.import_module(f"sim.{module}")

EPILOG = """\
examples:
  proximity sim run                                   # the bundled default scenario, in memory
  proximity sim run --devices 200 --hours 4 --out /tmp/sim
  proximity sim run --compare gps-only                # beacons vs GPS only, same seed
  proximity sim run --seeds 5                         # seeds 1-5: mean ± sd, targets on the means
  proximity sim run --compare --set gps.sigma_m=10    # every variant of the scenario
  proximity sim run --via redis --redis redis://127.0.0.1:6379/0
  proximity sim run --via http --workers 2            # starts and stops 'proximity serve' itself

The scenario YAML (sim/scenarios/default.yaml is the default) sets the city,
the stores, the mobility, the GPS and BLE models, EngineConfig settings
(engine:), the campaigns file and the named variants that --compare runs.
Outputs in --out: metrics.json, report.html, table.md, map.png, latency.png,
accuracy.png (compare.png with --compare), events.jsonl, offers.jsonl,
truth_visits.csv, fences.geojson, beacons.yaml.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="simulation harness: synthetic city, ground truth, metrics, report",
                       description=__doc__)
    simsub = p.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    r = simsub.add_parser("run", help="run a scenario on the engine and score it",
                          description="Build a synthetic city, simulate a day of devices in it, run the real "
                                      "engine with the scenario's campaigns in simulated time, and score its "
                                      "events against the ground truth.",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("scenario", nargs="?", help="scenario YAML (default: the bundled default scenario)")
    r.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    r.add_argument("--seeds", type=int, metavar="N",
                   help="run N seeds (1..N, or --seed S and the N-1 after it) and report each metric as "
                        "mean ± sd, the targets judged on the means (each seed's report in OUT/seed-K/)")
    r.add_argument("--devices", type=int, help="number of devices (default: the scenario's)")
    r.add_argument("--hours", type=float, help="simulated hours (default: the scenario's)")
    r.add_argument("--via", choices=("memory", "redis", "http"), default="memory",
                   help="engine in process with memory state, with Redis state, or real 'proximity serve' workers")
    r.add_argument("--out", metavar="DIR", default="sim-out", help="output directory (default: ./sim-out)")
    r.add_argument("--compare", nargs="?", const="*", default=None, metavar="NAME[,NAME]",
                   help="also run these variants of the scenario (all of them without a value) on the same seed")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set gps.sigma_m=10 --set engine.gps_debounce_s=90 (YAML value)")
    r.add_argument("--pr-sweep", dest="pr_sweep", metavar="P[,P]",
                   help="also run the scenario with these enter_probability values (e.g. 0.5,0.6,0.8,0.9) and "
                        "plot the engine's precision-recall points against the oracle's curve")
    r.add_argument("--redis", metavar="URL", help="Redis for --via redis/http (default redis://127.0.0.1:6379/0)")
    r.add_argument("--redis-prefix", dest="redis_prefix",
                   help="key prefix in Redis (default: a fresh one, deleted afterwards)")
    r.add_argument("--workers", type=int, default=2, help="'proximity serve' workers for --via http (default 2)")
    r.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    r.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show progress on stderr (the default): a bar on a terminal, a line every 5 s "
                        "elsewhere (e.g. '2>&1 | tee log')")
    r.add_argument("--no-progress", dest="progress", action="store_false")
    r.add_argument("--json", action="store_true", help="print the metrics document as JSON instead of the table")
    r.add_argument("--check", action="store_true", help="exit 1 when a target of the issue is missed")
    r.set_defaults(run=_run)
    p.set_defaults(run=lambda args: (p.print_help(sys.stderr), 2)[1])


def _overrides(items: list[str]) -> dict[str, Any]:
    from ruamel.yaml import YAML

    SimError = _sim("errors").SimError
    out: dict[str, Any] = {}
    yaml = YAML(typ="safe")
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SimError(f"--set wants KEY=VALUE, not {item!r}", source="--set", field=item)
        parsed = yaml.load(value) if value.strip() else None
        # YAML reads unquoted ISO times as timestamps: keep them as the text that was given
        out[key.strip()] = value.strip() if isinstance(parsed, datetime.date) else parsed
    return out


def _default_enter() -> float:
    from proximity.engine import EngineConfig

    return float(EngineConfig().enter_probability)


def _run_seeds(args: argparse.Namespace, scenario: Any, compare: list[str], progress: Any) -> int:
    seeds = _sim("seeds")
    SimError = _sim("errors").SimError
    if args.seeds < 1:
        raise SimError(f"--seeds wants a number of seeds >= 1, not {args.seeds}", source="--seeds", field="seeds")
    if compare:
        raise SimError("--seeds runs the scenario only: leave out --compare", source="--seeds", field="compare")
    if args.seed is None:
        scenario = scenario.with_overrides({"seed": 1}, source="--seeds")
    runs = seeds.run_seeds(scenario, args.seeds, via=args.via, redis_url=args.redis, redis_prefix=args.redis_prefix,
                           workers=args.workers, progress=progress)
    out = Path(args.out)
    summary = seeds.write_seeds(out, runs, plots=args.plots)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        sc = scenario
        print(f"proximity sim: {sc.name} ({sc.devices:,} devices, {sc.hours:g} h, via {args.via})")
        print(seeds.format_summary(summary))
        print(f"\nsummary: {out / 'seeds.txt'}  per seed: {out}/seed-K/report.html")
    missed = [t for t in summary["targets"] if t["met"] is False]
    return 1 if (args.check and missed) else 0


def _run(args: argparse.Namespace) -> int:
    report, runner = _sim("report"), _sim("runner")
    load_scenario = _sim("scenario").load_scenario
    run_session = _sim("session").run_session
    format_table, format_targets, write_report = report.format_table, report.format_targets, report.write_report
    default_progress = runner.default_progress

    scenario = load_scenario(args.scenario)
    flags = {k: v for k, v in (("seed", args.seed), ("devices", args.devices), ("hours", args.hours)) if v is not None}
    overrides = {**flags, **_overrides(args.set)}
    if overrides:
        scenario = scenario.with_overrides(overrides, source="command line")
        # keep the variants' own overrides on top of the command line's
        scenario = dataclasses.replace(scenario, variants={
            name: {**{k: v for k, v in overrides.items() if k not in var}, **var}
            for name, var in scenario.variants.items()})
    compare: list[str] = []
    if args.compare == "*":
        compare = list(scenario.variants)
    elif args.compare:
        compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    for name in compare:
        scenario.variant(name)  # unknown names fail before any work
    progress = default_progress() if args.progress is None else (sys.stderr if args.progress else None)
    if args.seeds is not None:
        return _run_seeds(args, scenario, compare, progress)
    summaries = run_session(scenario, compare=compare, via=args.via, redis_url=args.redis,
                            redis_prefix=args.redis_prefix, workers=args.workers, progress=progress)
    if args.pr_sweep:
        points = sorted({float(x) for x in args.pr_sweep.split(",") if x.strip()}
                        | {float(summaries[0].sim.scenario.engine.get("enter_probability", _default_enter()))})
        summaries[0].metrics["engine_sweep"] = _sim("seeds").enter_threshold_sweep(
            summaries[0].sim.scenario, points, via=args.via, redis_url=args.redis, redis_prefix=args.redis_prefix,
            workers=args.workers, progress=progress)
    out = Path(args.out)
    doc = write_report(out, summaries, plots=args.plots)
    if args.json:
        print(json.dumps({k: doc[k] for k in ("runs", "targets", "notes")}, indent=2))
    else:
        sc = summaries[0].sim.scenario
        print(f"proximity sim: {sc.name} (seed {sc.seed}, {sc.devices:,} devices, {sc.hours:g} h, via {args.via})")
        print(format_table(doc["runs"]))
        print()
        print(format_targets(doc["targets"]))
        what_if = report.format_what_if(doc["runs"][0])
        if what_if:
            print()
            print(what_if)
        for note in doc["notes"]:
            print(f"note: {note}")
        print(f"\nreport: {out / 'report.html'}  metrics: {out / 'metrics.json'}")
    missed = [t for t in doc["targets"] if t["met"] is False]
    return 1 if (args.check and missed) else 0
