"""Is the lift estimate right? A known true effect, injected, and recovered over many seeds.

One seed: simulate the scenario's day, run its campaigns (holdouts and
variants assigned by the real decider) on presence events, and collect the
decisions. Presence comes from the real engine over the simulated pings
(``presence="engine"``), or, faster, from the ground-truth visits themselves
(``presence="truth"``: an enter at each visit's start, dwell events at the
campaigns' dwell times, an exit at its end).

Every seed is a new experiment: the campaigns' salts get the seed, so the
holdout and the variants are drawn again (the simulated device ids repeat
from seed to seed), with presence from the engine as from the truth. With one
draw for all seeds the seeds' errors share that draw, and the coverage over
seeds measures one assignment, not the interval.

Then the effect (``lift.effect`` of the scenario, per campaign in
``lift.effects``): the *organic* outcome of every exposure is what the
measurement itself calls a conversion (:func:`campaigns.conversions.conversions`
on the day's events). With ``p0`` the organic conversion rate of a campaign's
exposures (both groups: assignment is random), each *treated* exposure that did
not convert gets an extra visit with probability ``effect / (1 - p0)``, so
P(convert | offer) - P(convert | holdout) = ``effect``. The induced visit goes
to one of the campaign's conversion places, lasts long enough to qualify, and
starts at a random time after the exposure, within the window and before the
device's next exposure (so last-exposure attribution gives it to the exposure
that caused it). Held-out devices get none. Induced visits are added to the
events after the decisions: they trigger no further offers.

Finally :func:`campaigns.report.lift_report` estimates each campaign's lift
with its 95% interval from the exposures and the events, as the CLI would.
The checks over seeds: the interval holds the true effect in >= 90% of the
(campaign, seed) pairs, the mean estimate is within 10% of it, and with no
effect >= 90% of the pairs show no significant lift.

``python -m sim.lift [SCENARIO] --seeds 20 [--first-seed 1] [--presence truth|engine]`` prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.scenario import SCENARIO_DIR, Scenario, load_scenario

PRESENCE = ("truth", "engine")


@dataclass
class Day:
    """What one seed's day gave the report: exposures and events in codes, and their names."""

    exposures: Any
    events: Any
    specs: list[Any]
    fence_names: list[str]
    arm_names: list[str]
    n_devices: int
    seconds: float


def _columns(decisions: Sequence[Any], events: Sequence[Any], specs: list[Any], devices: dict[str, int],
             fences: dict[str, int]) -> tuple[Any, Any, list[str]]:
    from campaigns.conversions import KIND_CODES, Events, Exposures, arm_names
    from campaigns.decider import EXPOSED

    arms = arm_names(specs)
    arm_index = {a: i for i, a in enumerate(arms)}
    camp_index = {s.campaign_id: i for i, s in enumerate(specs)}
    rows = [(camp_index[v.campaign_id], arm_index["holdout" if v.outcome == "holdout" else (v.variant or "offer")],
             devices[d.event.device_id], fences[d.event.fence_id], d.event.ts)
            for d in decisions for v in d.verdicts if v.outcome in EXPOSED]
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [[]] * 5
    exposures = Exposures(*(np.asarray(c, np.float64 if i == 4 else np.int64) for i, c in enumerate(cols)))
    store = [e for e in events if e.zone is None]
    ev = Events(np.asarray([KIND_CODES[e.kind] for e in store], np.int8),
                np.asarray([devices[e.device_id] for e in store], np.int64),
                np.asarray([fences[e.fence_id] for e in store], np.int64),
                np.asarray([e.ts for e in store], np.float64), np.asarray([e.dwell_s for e in store], np.float64),
                np.asarray([_probability(e) for e in store], np.float64))
    return exposures, ev, arms


def _probability(event: Any) -> float:
    """The event's presence probability as events.jsonl carries it (NaN when events carry none)."""
    p = event.to_dict().get("probability")
    return float("nan") if p is None else float(p)


def _truth_events(t0: float, world: Any, population: Any, rules: Any) -> list[Any]:
    from proximity.events import Event

    v = population.visits
    ids, stores = population.device_ids, world.ids
    thresholds = rules.dwell_thresholds()
    out = []
    for d, s, a, b in zip(v.device.tolist(), v.store.tolist(), v.start.tolist(), v.end.tolist(), strict=True):
        dev, fence = str(ids[d]), stores[s]
        out.append(Event("enter", dev, fence, t0 + a))
        for dwell in sorted(set(thresholds.get(fence, [])) | set(thresholds.get("*", []))):
            if a + dwell < b:
                out.append(Event("dwell", dev, fence, t0 + a + dwell, dwell_s=dwell))
        out.append(Event("exit", dev, fence, t0 + b, dwell_s=b - a))
    out.sort(key=lambda e: (e.ts, e.device_id, e.kind != "exit"))
    return out


def simulate_day(scenario: Scenario, presence: str = "truth") -> Day:
    """Run the scenario's campaigns over one simulated day (see the module docstring)."""
    import campaigns
    import geofence
    from campaigns.conversions import specs_of
    from sim.mobility import simulate_population
    from sim.runner import simulate
    from sim.world import build_world

    if presence not in PRESENCE:
        raise ValueError(f"presence must be one of {', '.join(PRESENCE)}, not {presence!r}")
    t = time.perf_counter()
    if presence == "truth":  # no pings needed
        world = build_world(scenario)
        population = simulate_population(world, scenario)
    else:
        sim = simulate(scenario)
        world, population = sim.world, sim.population
    fences = geofence.load_geojson(world.to_geojson())
    infos = campaigns.fence_infos(fences)
    path = scenario.campaigns_path()
    if path is None:
        raise ValueError("the lift check needs a scenario with campaigns")
    campaign_set = campaigns.load_campaigns(path, infos)
    # each seed is a new experiment: its own salt, so the groups are drawn again (the device ids repeat)
    campaign_set = dataclasses.replace(campaign_set, campaigns=tuple(
        dataclasses.replace(c, experiment=dataclasses.replace(c.experiment, salt=f"{c.id}:seed{scenario.seed}"))
        if c.experiment is not None else c for c in campaign_set.campaigns))
    decisions: list[Any] = []
    if presence == "truth":
        rules = campaigns.CampaignRules(campaign_set, infos, on_decision=decisions.append, keep=1)
        events = _truth_events(scenario.start_ts, world, population, rules)
        rules.evaluate(events, {}, scenario.start_ts)
    else:
        from sim.runner import EngineFeeder, run_engine

        now = [scenario.start_ts + scenario.run.step_s]
        feeder = EngineFeeder(sim, clock=lambda: now[0])
        # the feeder loads the scenario's campaigns with their own salts: decide with this seed's salts
        # (without this every seed drew the same groups, the device ids repeating from seed to seed)
        feeder.engine.set_rules(campaigns.CampaignRules(campaign_set, infos, on_decision=decisions.append))
        advance = feeder.advance

        def step(t_now: float) -> tuple[list[Any], list[Any]]:
            now[0] = t_now + scenario.run.step_s
            return advance(t_now)

        feeder.advance = step  # type: ignore[method-assign,assignment]
        events = run_engine(sim, feeder).events
    specs = specs_of(campaign_set, infos)
    devices = {str(d): i for i, d in enumerate(population.device_ids)}
    fence_index = {f: i for i, f in enumerate(world.ids)}
    exposures, ev, arms = _columns(decisions, events, specs, devices, fence_index)
    return Day(exposures, ev, specs, list(world.ids), arms, len(devices), time.perf_counter() - t)


def inject(day: Day, effects: dict[str, float], rng: np.random.Generator) -> Any:
    """The day's events plus the visits the offers induced (see the module docstring)."""
    from campaigns.conversions import Events, conversions, visits_of

    ex, ev = day.exposures, day.events
    if not len(ex) or not any(effects.values()):
        return ev
    organic = conversions(ex, visits_of(ev, day.n_devices), day.specs, day.fence_names) >= 0
    holdout = day.arm_names.index("holdout")
    # the device's next exposure (any campaign) bounds where an induced visit may go
    order = np.lexsort((ex.ts, ex.device))
    nxt = np.full(len(ex), np.inf)
    same = ex.device[order][1:] == ex.device[order][:-1]
    nxt[order[:-1][same]] = ex.ts[order][1:][same]
    fence_of = {f: i for i, f in enumerate(day.fence_names)}
    add: list[tuple[int, int, float, float]] = []
    for c, spec in enumerate(day.specs):
        effect = effects.get(spec.campaign_id, 0.0)
        mine = ex.campaign == c
        if effect <= 0 or not mine.any():
            continue
        p0 = float(organic[mine].mean())
        q = min(1.0, effect / (1.0 - p0)) if p0 < 1 else 0.0
        places = sorted(fence_of[p] for p in spec.places) if spec.places is not None else list(range(len(fence_of)))
        for e in np.flatnonzero(mine & (ex.arm != holdout) & ~organic & (rng.random(len(ex)) < q)):
            t0 = float(ex.ts[e])
            room = min(spec.within_s, float(nxt[e]) - t0)
            if room <= 2.0:
                continue
            start = t0 + 1.0 + rng.random() * (room - 2.0)
            dwell = max(spec.min_dwell_s, 60.0) + 600.0 * rng.random()
            add.append((int(ex.device[e]), int(rng.choice(places)), start, dwell))
    if not add:
        return ev
    dev, fence, start, dwell = (np.asarray(c) for c in zip(*add, strict=True))
    k = len(add)
    from campaigns import _kernels as K

    return Events(np.concatenate([ev.kind, np.full(k, K.ENTER, np.int8), np.full(k, K.EXIT, np.int8)]),
                  np.concatenate([ev.device, dev, dev]), np.concatenate([ev.fence, fence, fence]),
                  np.concatenate([ev.ts, start, start + dwell]),
                  np.concatenate([ev.dwell_s, np.zeros(k), dwell]),
                  np.concatenate([ev.probability, np.full(2 * k, np.nan)]))


def effects_of(scenario: Scenario, specs: Sequence[Any], scale: float = 1.0) -> dict[str, float]:
    per = {str(k): float(v) for k, v in scenario.lift.effects.items()}
    return {s.campaign_id: scale * per.get(s.campaign_id, scenario.lift.effect) for s in specs}


def estimate(day: Day, effects: dict[str, float], seed: int) -> list[dict[str, Any]]:
    """One row per campaign: the true effect, the estimate and its interval."""
    from campaigns.report import lift_report

    events = inject(day, effects, np.random.default_rng([seed, 0x11F7]))
    rep = lift_report(day.exposures, events, day.specs, day.fence_names, day.arm_names, min_exposed=1,
                      n_devices=day.n_devices)
    out = []
    for r in rep.lift:
        if r["level"] != "campaign" or r.get("lift") is None:
            continue
        truth = effects.get(r["campaign_id"], 0.0)
        lo, hi = r["lift_ci"]
        out.append({"seed": seed, "campaign_id": r["campaign_id"], "true_lift": truth, "lift": r["lift"],
                    "lo": lo, "hi": hi, "covered": lo <= truth <= hi, "significant": r["status"] == "significant",
                    "exposed": r["exposed"], "holdout_exposed": r["holdout_exposed"], "holdout_rate": r["holdout_rate"]})
    return out


def run(scenario: Scenario, seeds: Sequence[int], *, presence: str = "truth",
        progress: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows with the scenario's effect and rows with no effect, over ``seeds`` (one simulated day each)."""
    effect_rows: list[dict[str, Any]] = []
    null_rows: list[dict[str, Any]] = []
    for seed in seeds:
        day = simulate_day(dataclasses.replace(scenario, seed=int(seed)), presence)
        effect_rows += estimate(day, effects_of(scenario, day.specs), int(seed))
        null_rows += estimate(day, effects_of(scenario, day.specs, 0.0), int(seed))
        if progress is not None:
            print(f"seed {seed}: {len(day.exposures)} exposures, {day.seconds:.1f} s", file=progress, flush=True)
    return effect_rows, null_rows


def summary(effect_rows: list[dict[str, Any]], null_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per campaign (and ``all``: every campaign x seed pair): seeds, true lift, mean estimate, relative
    error, coverage, mean interval width, and the share of seeds with a significant lift when the true
    effect is 0."""
    out = []
    ids = sorted({r["campaign_id"] for r in effect_rows})
    for cid in [*ids, "all"] if len(ids) > 1 else ids:
        rows = [r for r in effect_rows if r["campaign_id"] == cid or cid == "all"]
        nulls = [r for r in null_rows if r["campaign_id"] == cid or cid == "all"]
        truth = float(np.mean([r["true_lift"] for r in rows]))
        mean = float(np.mean([r["lift"] for r in rows]))
        out.append({
            "campaign_id": cid, "seeds": len(rows), "true_lift": truth, "mean_lift": mean,
            "relative_error": (mean - truth) / truth if truth else None,
            "coverage": float(np.mean([r["covered"] for r in rows])),
            "mean_ci_width": float(np.mean([r["hi"] - r["lo"] for r in rows])),
            "exposed": float(np.mean([r["exposed"] for r in rows])),
            "holdout_exposed": float(np.mean([r["holdout_exposed"] for r in rows])),
            "holdout_rate": float(np.mean([r["holdout_rate"] for r in rows])),
            "null_significant": float(np.mean([r["significant"] for r in nulls])) if nulls else None,
        })
    return out


def format_summary(rows: list[dict[str, Any]]) -> str:
    head = ["campaign", "seeds", "treated", "holdout", "holdout rate", "true lift", "mean estimate",
            "error", "95% CI covers", "mean CI width", "effect 0: significant"]
    body = [[r["campaign_id"], str(r["seeds"]), f"{r['exposed']:.0f}", f"{r['holdout_exposed']:.0f}",
             f"{r['holdout_rate'] * 100:.1f}%", f"{r['true_lift'] * 100:+.1f}%", f"{r['mean_lift'] * 100:+.2f}%",
             "-" if r["relative_error"] is None else f"{r['relative_error'] * 100:+.1f}%",
             f"{r['coverage'] * 100:.0f}%", f"{r['mean_ci_width'] * 100:.1f} pts",
             "-" if r["null_significant"] is None else f"{r['null_significant'] * 100:.0f}%"] for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True)))
             for x in [head, ["-" * w for w in widths], *body]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.lift", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="?", default=str(SCENARIO_DIR / "lift.yaml"))
    p.add_argument("--seeds", type=int, default=20, help="how many seeds, one simulated day each")
    p.add_argument("--presence", choices=PRESENCE, default="engine",
                   help="events from the real engine over the pings (default) or from the true visits")
    p.add_argument("--first-seed", type=int, default=1, help="the first seed (seeds FIRST..FIRST+N-1)")
    p.add_argument("--devices", type=int, help="override the scenario's device count")
    args = p.parse_args(argv)
    scenario = load_scenario(args.scenario)
    if args.devices:
        scenario = dataclasses.replace(scenario, devices=args.devices)
    t = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    effect_rows, null_rows = run(scenario, seeds, presence=args.presence, progress=sys.stderr)
    print(f"# {scenario.name}: seeds {seeds.start}..{seeds.stop - 1}, {scenario.devices} devices, {scenario.hours:g} h, "
          f"presence from the {args.presence}, {time.perf_counter() - t:.0f} s")
    print(format_summary(summary(effect_rows, null_rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
