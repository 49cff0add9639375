"""How far the engine's presence can be trusted: calibration, the oracle's bound, the issue's targets.

:func:`presence_metrics` adds to a run's metrics the calibration of the events'
``probability`` (:mod:`sim.calibration`), the engine's precision-recall curve
over ``min_probability``, and the oracle's best precision at the engine's recall
per store size class (:mod:`sim.oracle`). :func:`presence_plots` draws the
reliability diagram and the precision-recall curves; :data:`PRESENCE_TARGETS`
are the targets checked on the default scenario (means over seeds with
``proximity sim run --seeds N``, see :mod:`sim.seeds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibration import calibration_metrics, plot_reliability, precision_recall
from sim.metrics import EventColumns
from sim.oracle import latency_at_precision, oracle_metrics, plot_pr
from sim.runner import Simulation

#: target name -> (comparison, goal); values come from :func:`target_values`
PRESENCE_TARGETS: dict[str, tuple[str, float]] = {
    "precision": (">=", 0.95),
    "recall": (">=", 0.95),
    "drive_by_false_enter_rate": ("<=", 0.003),
    "parked_false_enter_rate": ("<=", 0.05),
    "lowest_size_class_precision": (">=", 0.85),
    "enter_latency_median_s": ("<=", 60.0),
    "enter_latency_p90_s": ("<=", 180.0),
    "ece": ("<=", 0.03),
    "gps_only_gap_to_oracle": ("<=", 0.02),
}
#: store classes that GPS alone enters in the default scenario (beacon stores enter by their beacons)
GPS_ONLY_CLASSES = ("medium", "large", "mall")
THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.0, 1.0, 0.02))


def presence_metrics(sim: Simulation, cols: EventColumns, metrics: Mapping[str, Any], *,
                     tolerance_s: float) -> dict[str, Any]:
    cal = calibration_metrics(sim.truth, cols, tolerance_s=tolerance_s)
    pr = precision_recall(sim.truth, cols, THRESHOLDS, tolerance_s=tolerance_s)
    engine_recall = {"all": metrics["recall"], **{k: v["recall"] for k, v in metrics["by_size"].items()}}
    oracle = oracle_metrics(sim, engine_recall=engine_recall)
    gap = {}
    for cls in GPS_ONLY_CLASSES:
        o = oracle.get(cls, {}).get("precision_at_engine_recall")
        e = metrics["by_size"].get(cls, {}).get("precision")
        if o is not None and e is not None:
            gap[cls] = round(o - e, 4)
    # the oracle's enter latency at the engine's precision, per GPS-only class: which part of the p90 is physics
    latency = latency_at_precision(sim, {c: metrics["by_size"][c]["precision"] for c in GPS_ONLY_CLASSES
                                         if c in metrics["by_size"]})
    for cls, row in latency.items():
        if isinstance(row, dict):
            row["engine_enter_latency_s"] = metrics["by_size"][cls].get("enter_latency_s")
    oracle["latency_at_engine_precision"] = latency
    return {"calibration": cal, "engine_pr": pr, "oracle": oracle, "gap_to_oracle": gap}


def target_values(m: Mapping[str, Any]) -> dict[str, float | None]:
    """The value of every presence target in one run's metrics."""
    sizes = [v["precision"] for v in m["by_size"].values() if v.get("precision") is not None]
    gaps = list(m.get("gap_to_oracle", {}).values())
    return {
        "precision": m["precision"],
        "recall": m["recall"],
        "drive_by_false_enter_rate": m["drive_by_false_enter_rate"],
        "parked_false_enter_rate": m["parked_false_enter_rate"],
        "lowest_size_class_precision": min(sizes) if sizes else None,
        "enter_latency_median_s": m["enter_latency_s"]["median"],
        "enter_latency_p90_s": m["enter_latency_s"]["p90"],
        "ece": m.get("calibration", {}).get("ece"),
        "gps_only_gap_to_oracle": max(gaps) if gaps else None,
    }


def presence_plots(out: Path, records: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """reliability.png (every run) and pr_oracle.png (the first run): file name and caption."""
    images = []
    curves = [(name, m["calibration"]) for name, m in records if m.get("calibration", {}).get("ece") is not None]
    if curves:
        plot_reliability(out / "reliability.png", curves)
        images.append(("reliability.png", "Reliability of the events' probability: share true per probability bin"))
    name, m = records[0]
    if "oracle" in m:
        classes = [c for c in GPS_ONLY_CLASSES if c in m["by_size"]]  # the oracle sees GPS only
        if plot_pr(out / "pr_oracle.png", m.get("engine_sweep") or m["engine_pr"], m["oracle"], classes):
            images.append(("pr_oracle.png", f"Precision-recall ({name}) of the stores GPS alone enters: the "
                                            "engine against the oracle (true noise model, GPS only), per size class"))
    return images


__all__ = ["GPS_ONLY_CLASSES", "PRESENCE_TARGETS", "presence_metrics", "presence_plots", "target_values"]
