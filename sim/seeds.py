"""``proximity sim run --seeds N``: the same scenario on N seeds, each metric as mean ± sd, targets on the means.

One figure from one seed says little (a day of 1,000 devices holds a few dozen
drive-by false enters at most), so the targets are judged on the mean over
seeds, and the table also shows each seed's worst value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.report import TARGETS, RunSummary, targets, write_report
from sim.scenario import Scenario
from sim.session import run_one

#: rows of the seeds table: label, path into a run record
ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("precision", ("metrics", "precision")),
    ("recall", ("metrics", "recall")),
    ("drive-by false enter rate", ("metrics", "drive_by_false_enter_rate")),
    ("parked false enter rate", ("metrics", "parked_false_enter_rate")),
    ("walk-by false enter rate", ("metrics", "walk_by_false_enter_rate")),
    ("enter latency median (s)", ("metrics", "enter_latency_s", "median")),
    ("enter latency p90 (s)", ("metrics", "enter_latency_s", "p90")),
    ("ECE (all events)", ("metrics", "calibration", "ece")),
    ("ECE (enters)", ("metrics", "calibration", "by_kind", "enter", "ece")),
    ("split-visit enters", ("metrics", "split_visit_enters")),
    ("false enters", ("metrics", "false_enters")),
    *((f"{c} precision", ("metrics", "by_size", c, "precision")) for c in ("small", "medium", "large", "mall", "shop")),
    *((f"{c} recall", ("metrics", "by_size", c, "recall")) for c in ("small", "medium", "large", "mall", "shop")),
    *((f"oracle precision at engine recall, {c}", ("metrics", "oracle", c, "precision_at_engine_recall"))
      for c in ("medium", "large", "mall")),
    *((f"{c} enter latency {q} (s)", ("metrics", "by_size", c, "enter_latency_s", q))
      for c in ("medium", "large", "mall") for q in ("median", "p90")),
    *((f"oracle at engine precision, {c}: {what}", ("metrics", "oracle", "latency_at_engine_precision", c, *path))
      for c in ("medium", "large", "mall")
      for what, path in (("recall", ("recall",)), ("latency median (s)", ("enter_latency_s", "median")),
                         ("latency p90 (s)", ("enter_latency_s", "p90")))),
)


def _get(rec: Any, path: Sequence[str]) -> float | None:
    for k in path:
        if not isinstance(rec, dict) or k not in rec:
            return None
        rec = rec[k]
    return None if rec is None else float(rec)


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if len(v) == 0:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run_seeds(scenario: Scenario, n: int, **kw: Any) -> list[RunSummary]:
    """The scenario on seeds ``seed, seed + 1, ..., seed + n - 1``."""
    out = []
    for k in range(n):
        sc = dataclasses.replace(scenario.with_overrides({"seed": scenario.seed + k}, source="--seeds"), variants={})
        out.append(run_one(sc, name=f"seed {sc.seed}", **kw))
    return out


def enter_threshold_sweep(scenario: Any, thresholds: Sequence[float], **kw: Any) -> dict[str, Any]:
    """The engine's precision-recall points when its ``enter_probability`` is each of ``thresholds``
    (one run each, same seed): the curve a deployment chooses its threshold on."""
    out: dict[str, Any] = {"threshold": [float(t) for t in thresholds]}
    for t in thresholds:
        sc = dataclasses.replace(scenario, engine={**dict(scenario.engine), "enter_probability": float(t)},
                                 variants={})
        m = run_one(sc, name=f"enter {t:g}", **kw).metrics
        for cls, v in [("all", m), *m["by_size"].items()]:
            out.setdefault(f"{cls}_precision", []).append(v["precision"])
            out.setdefault(f"{cls}_recall", []).append(v["recall"])
    return out


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sd per row, and every target judged on the mean (with each seed's verdict beside it)."""
    rows = {}
    for label, path in ROWS:
        vals = [_get(r, path) for r in records]
        m, s = mean_sd(vals)
        rows[label] = {"mean": m, "sd": s, "per_seed": vals}
    per_seed = [{t["target"]: t for t in targets([r])} for r in records]
    out_targets = []
    for name, (op, goal) in TARGETS.items():
        vals = [ps[name]["value"] for ps in per_seed]
        m, s = mean_sd(vals)
        met = None if m is None else (m >= goal if op == ">=" else m <= goal)
        seeds_met = sum(1 for ps in per_seed if ps[name]["met"])
        out_targets.append({"target": name, "goal": f"{op} {goal:g}", "mean": m, "sd": s, "met": met,
                            "seeds_met": seeds_met, "seeds": len(records), "per_seed": vals})
    return {"seeds": [r["seed"] for r in records], "rows": rows, "targets": out_targets}


def _pm(m: float | None, s: float | None) -> str:
    if m is None:
        return "-"
    digits = 1 if abs(m) >= 10 else 4
    return f"{m:.{digits}f} ± {s or 0:.{digits}f}"


def format_summary(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    lines = [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sd", ""]
    w = max(len(k) for k in summary["rows"])
    for label, r in summary["rows"].items():
        lines.append(f"  {label:<{w}}  {_pm(r['mean'], r['sd']):>20}")
    lines += ["", "targets (on the mean over seeds; seeds meeting it alone in brackets):"]
    for t in summary["targets"]:
        mark = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"  {t['target']:<28} {t['goal']:>8}  {_pm(t['mean'], t['sd']):>20}  {mark:<6} "
                     f"[{t['seeds_met']}/{t['seeds']}]")
    return "\n".join(lines)


def write_seeds(out: Path, summaries: Sequence[RunSummary], *, plots: bool = True) -> dict[str, Any]:
    """Each seed's full report under ``out/seed-K/``; ``out/seeds.json`` and ``out/seeds.txt`` for the summary."""
    records = []
    for s in summaries:
        doc = write_report(out / f"seed-{s.sim.scenario.seed}", [s], plots=plots)
        records.append(doc["runs"][0])
    summary = summarize(records)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "seeds.txt").write_text(format_summary(summary) + "\n", encoding="utf-8")
    return summary


__all__ = ["enter_threshold_sweep", "format_summary", "mean_sd", "run_seeds", "summarize", "write_seeds"]
