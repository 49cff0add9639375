"""One ``proximity sim run``: the scenario and its compared variants, run and scored on the same seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from proximity.progress import is_terminal
from sim.caps import audit_caps
from sim.diagnose import what_if
from sim.errors import SimError
from sim.http import HttpFeeder
from sim.metrics import EventColumns, score
from sim.presence_report import presence_metrics
from sim.report import RunSummary
from sim.runner import VIAS, EngineFeeder, EngineRun, Feeder, Simulation, _chunks, run_engine, simulate
from sim.scenario import Scenario


def run(sim: Simulation, *, via: str = "memory", redis_url: str | None = None, redis_prefix: str | None = None,
        workers: int = 2, progress: TextIO | None = None, label: str = "sim") -> EngineRun:
    """Run the engine over a simulation ``via`` memory, redis or http (see the module docstring)."""
    if via not in VIAS:
        raise SimError(f"--via must be one of {', '.join(VIAS)}, not {via!r}", field="via")
    clock_now = [sim.scenario.start_ts]

    def clock() -> float:
        return clock_now[0]

    feeder: Feeder
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if via == "memory":
        feeder = EngineFeeder(sim, clock=clock)
    elif via == "redis":
        import uuid

        import redis as redis_py

        from campaigns import RedisLimiter
        from proximity.store import RedisStore

        url = redis_url or "redis://127.0.0.1:6379/0"
        prefix = redis_prefix or f"sim:{uuid.uuid4().hex[:10]}"
        client = redis_py.Redis.from_url(url)
        try:
            client.ping()
        except redis_py.RedisError as exc:
            raise SimError(f"cannot reach Redis at {url}: {exc}", field="redis") from None
        store = RedisStore(client, prefix=f"{prefix}:presence")
        limiter = RedisLimiter(client, prefix=f"{prefix}:caps")
        feeder = EngineFeeder(sim, store=store, limiter=limiter, clock=clock)
        owns_prefix = redis_prefix is None

        def cleanup() -> None:
            if owns_prefix:
                for chunk in _chunks(list(client.scan_iter(match=f"{prefix}:*", count=1000)), 500):
                    client.delete(*chunk)
            client.close()
    else:
        feeder = HttpFeeder(sim, workers=workers, redis_url=redis_url, redis_prefix=redis_prefix)
    # the engine's clock follows the simulation (its clock-skew check compares with it)
    original_advance = feeder.advance

    def advance(now: float) -> tuple[list[Any], list[Any]]:
        clock_now[0] = now + sim.scenario.run.step_s
        return original_advance(now)

    feeder.advance = advance  # type: ignore[method-assign]
    clock_now[0] = sim.scenario.start_ts + sim.scenario.run.step_s
    try:
        result = run_engine(sim, feeder, progress=progress, label=label)
    finally:
        feeder.close()
        cleanup()
    result.via = via
    return dataclasses.replace(result, via=via)




def run_one(scenario: Scenario, *, name: str | None = None, via: str = "memory", redis_url: str | None = None,
            redis_prefix: str | None = None, workers: int = 2, progress: TextIO | None = None) -> RunSummary:
    """Simulate, run the engine, score the events and audit the caps."""
    label = name or scenario.name
    if progress is not None and not is_terminal(progress):  # a log: say what the first seconds are spent on
        progress.write(f"{label}: simulating {scenario.devices:,} devices over {scenario.hours:g} h\n")
        progress.flush()
    sim = simulate(scenario)
    result = run(sim, via=via, redis_url=redis_url, redis_prefix=redis_prefix, workers=workers, progress=progress,
                 label=f"{label:>12}")
    cols = EventColumns.from_events(
        result.events,
        {d: i for i, d in enumerate(sim.population.device_ids)},
        {f: i for i, f in enumerate(sim.world.ids)},
        scenario.start_ts,
    )
    details: dict[str, np.ndarray] = {}
    metrics = score(sim.truth, cols, tolerance_s=scenario.metrics.tolerance_s,
                    exit_tolerance_s=scenario.metrics.exit_tolerance_s, details=details)
    metrics["what_if"] = what_if(sim.world, sim.truth, cols, sim.pings, scenario.start_ts,
                                 tolerance_s=scenario.metrics.tolerance_s)
    metrics.update(presence_metrics(sim, cols, metrics, tolerance_s=scenario.metrics.tolerance_s))
    caps: dict[str, Any] = (audit_caps(result.offers, result.campaigns) if result.campaigns is not None
                            else {"offers": len(result.offers), "violations": 0, "by_cap": {}, "offers_by_campaign": {}})
    return RunSummary(label, sim, result, metrics, caps, details)


def run_session(scenario: Scenario, *, compare: Sequence[str] = (), **kw: Any) -> list[RunSummary]:
    """The scenario, then each named variant (same seed, same devices), in that order."""
    out = [run_one(scenario, name=scenario.name, **kw)]
    for name in compare:
        variant = dataclasses.replace(scenario.variant(name), variants={})
        out.append(run_one(variant, name=name, **kw))
    return out
