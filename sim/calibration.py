"""Is the engine's visit ``probability`` calibrated? Labels, expected calibration error, reliability diagram.

Every event carries a ``probability`` that the device really is inside the place.
Each store event (``zone`` unset) is labelled from the ground truth:

- an ``enter`` is true when it is the first enter of a true visit of that store
  (within ``tolerance_s``), as :func:`sim.metrics.score` counts precision (a
  second enter within one visit is a false, split-visit enter);
- a ``dwell`` or an ``exit`` is true when the device is inside the store (or a
  shop of that mall) at the event's time.

The **expected calibration error** (ECE) is the mean, over ``bins`` equal-width
probability bins weighted by their share of events, of ``|share true - mean
probability|``. The reliability diagram plots share true against mean
probability per bin.

``python -m sim.fit`` fits the model's tables and calibration map on training
seeds; the figures are measured on other seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.metrics import _KEY, EventColumns, Truth, _match


def event_labels(truth: Truth, events: EventColumns, *, tolerance_s: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, label)``: which events are scored (store events with a probability) and whether each is true."""
    prob = events_probability(events)
    mask = (np.asarray([z is None for z in events.zone], dtype=bool) & (events.store >= 0) & (events.device >= 0)
            & np.isfinite(prob))
    label = np.zeros(len(events), dtype=bool)
    if not mask.any():
        return mask, label
    v = truth.visits
    v_key = v.device * _KEY + v.store
    idx = np.flatnonzero(mask & (events.kind == "enter"))
    which = _match(v_key, v.start, v.end, events.device[idx] * _KEY + events.store[idx], events.ts[idx], tolerance_s)
    order = np.lexsort((events.ts[idx], which))
    first = np.ones(len(order), dtype=bool)
    first[1:] = which[order][1:] != which[order][:-1]
    ok = np.zeros(len(idx), dtype=bool)
    ok[order[first & (which[order] >= 0)]] = True
    label[idx] = ok
    rest = np.flatnonzero(mask & (events.kind != "enter"))
    if len(rest):
        seg = truth.segments
        si = seg.locate(events.device[rest], events.ts[rest])
        store = events.store[rest]
        label[rest] = (seg.place[si] == store) | (seg.outer[si] == store)
    return mask, label


def events_probability(events: EventColumns) -> np.ndarray:
    p = getattr(events, "probability", None)
    if p is None:
        return np.full(len(events), np.nan)
    return np.asarray(p, dtype=np.float64)


def reliability(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """ECE and the per-bin table of a reliability diagram."""
    prob = np.asarray(prob, np.float64)
    label = np.asarray(label, bool)
    n = len(prob)
    if n == 0:
        return {"ece": None, "events": 0, "bins": []}
    b = np.clip((prob * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(b, minlength=bins)
    mean_p = np.bincount(b, weights=prob, minlength=bins) / np.maximum(count, 1)
    share = np.bincount(b, weights=label.astype(np.float64), minlength=bins) / np.maximum(count, 1)
    ece = float(np.sum(count * np.abs(share - mean_p)) / n)
    rows = [{"lo": i / bins, "hi": (i + 1) / bins, "events": int(count[i]),
             "mean_probability": round(float(mean_p[i]), 4) if count[i] else None,
             "share_true": round(float(share[i]), 4) if count[i] else None} for i in range(bins)]
    return {"ece": round(ece, 4), "events": n, "bins": rows}


def calibration_metrics(truth: Truth, events: EventColumns, *, tolerance_s: float = 60.0,
                        bins: int = 10) -> dict[str, Any]:
    """ECE over all scored store events, and per event kind."""
    mask, label = event_labels(truth, events, tolerance_s=tolerance_s)
    prob = events_probability(events)
    out = reliability(prob[mask], label[mask], bins)
    out["by_kind"] = {k: {key: val for key, val in reliability(prob[mask & (events.kind == k)],
                                                               label[mask & (events.kind == k)], bins).items()
                          if key != "bins"}
                      for k in ("enter", "dwell", "exit")}
    return out


def precision_recall(truth: Truth, events: EventColumns, thresholds: Sequence[float] | np.ndarray, *,
                     tolerance_s: float = 60.0) -> dict[str, list[float | None]]:
    """The engine's precision-recall curve over ``min_probability`` (enters below it are ignored), per size class.

    An enter counts as it does for :func:`sim.metrics.score` (the first enter of a visit
    is true); recall is over every true visit of the class.
    """
    mask, label = event_labels(truth, events, tolerance_s=tolerance_s)
    prob = events_probability(events)
    enters = mask & (events.kind == "enter")
    v = truth.visits
    out: dict[str, list[float | None]] = {"threshold": [float(t) for t in thresholds]}
    classes = ["all", *sorted(set(truth.size_class.tolist()))]
    for cls in classes:
        em = enters & ((truth.size_class[np.maximum(events.store, 0)] == cls) if cls != "all" else True)
        n_vis = int(np.sum(truth.size_class[v.store] == cls)) if cls != "all" else len(v)
        prec: list[float | None] = []
        rec: list[float | None] = []
        for t in thresholds:
            sel = em & (prob >= t)
            k = int(sel.sum())
            tp = int((sel & label).sum())
            prec.append(round(tp / k, 4) if k else None)
            rec.append(round(tp / n_vis, 4) if n_vis else None)
        out[f"{cls}_precision"] = prec
        out[f"{cls}_recall"] = rec
    return out


def plot_reliability(path: Path, curves: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """A reliability diagram (PNG): share true against mean probability per bin, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    for name, rel in curves:
        pts = [(b["mean_probability"], b["share_true"], b["events"]) for b in rel["bins"] if b["events"]]
        if not pts:
            continue
        x, y, n = (np.asarray(c, dtype=float) for c in zip(*pts, strict=True))
        ax.plot(x, y, marker="o", label=f"{name} (ECE {rel['ece']:.3f}, {rel['events']:,} events)")
        for xi, yi, ni in zip(x, y, n, strict=True):
            ax.annotate(f"{int(ni)}", (xi, yi), fontsize=6, textcoords="offset points", xytext=(3, -8))
    ax.set_xlabel("event probability (bin mean)")
    ax.set_ylabel("share of events that are true")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability of the visit probability")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["calibration_metrics", "event_labels", "plot_reliability", "precision_recall", "reliability"]
