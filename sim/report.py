"""Results of a simulation run: JSON, JSONL, a printed table, PNG plots and an HTML report.

Plots need matplotlib (the ``sim`` extra: ``pip install 'proximity-engine[sim]'``);
without it the report says so and still writes the JSON, the tables and the HTML.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.presence_report import PRESENCE_TARGETS, presence_plots, target_values
from sim.runner import EngineRun, Simulation
from sim.scenario import scenario_to_dict

TARGETS = {
    **PRESENCE_TARGETS,
    "small_store_beacon_lift": (">=", 0.20),
    "cap_violations": ("<=", 0),
}


@dataclass
class RunSummary:
    """One scenario (or variant) run: its metrics and what is needed to plot it."""

    name: str
    sim: Simulation
    run: EngineRun
    metrics: dict[str, Any]
    caps: dict[str, Any]
    details: dict[str, np.ndarray] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        sc = self.sim.scenario
        days = calendar_days(sc.start_ts, sc.end_ts, sc.city.timezone)
        n_off = len(self.run.offers)
        return {
            "name": self.name,
            "seed": sc.seed,
            "devices": sc.devices,
            "hours": sc.hours,
            "via": self.run.via,
            "metrics": self.metrics,
            "offers": {
                "issued": n_off,
                "held_by_quiet_hours": sum(1 for o in self.run.offers if o.get("deliver_after") is not None),
                "per_device_per_day": round(n_off / max(sc.devices, 1) / days, 3),
                "days": days,
                "by_campaign": self.caps.get("offers_by_campaign", {}),
            },
            "cap_violations": self.caps.get("violations", 0),
            "caps": self.caps.get("by_cap", {}),
            "throughput": {
                "pings": int(self.run.stats.get("pings", 0)),
                "sightings": int(self.run.stats.get("sightings", 0)),
                "engine_s": round(self.run.engine_s, 3),
                "pings_per_s": round(self.run.pings_per_s),
                "generate_s": round(self.sim.generate_s, 3),
                "late": int(self.run.stats.get("late", 0)),
                "rejected": int(self.run.stats.get("rejected", 0)),
            },
            "notes": list(self.run.notes),
        }


def calendar_days(start_ts: float, end_ts: float, timezone: str) -> int:
    """How many local calendar days ``[start_ts, end_ts)`` touches: a 06:00-20:00 run is one day, not 14/24."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(timezone)
    first = datetime.fromtimestamp(start_ts, UTC).astimezone(tz).date()
    last = datetime.fromtimestamp(max(end_ts - 1e-3, start_ts), UTC).astimezone(tz).date()
    return (last - first).days + 1


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f} %" if pct else f"{v:.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table_rows(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, get: Any) -> None:
        rows.append((label, [get(r) for r in records]))

    m = lambda r: r["metrics"]  # noqa: E731
    add("true visits", lambda r: _fmt(m(r)["visits"]))
    add("detected", lambda r: _fmt(m(r)["detected"]))
    add("recall", lambda r: _fmt(m(r)["recall"]))
    add("precision", lambda r: _fmt(m(r)["precision"]))
    add("store enters (true / split visit / false)",
        lambda r: f"{m(r)['true_enters']:,} / {m(r)['split_visit_enters']:,} / {m(r)['false_enters']:,}")
    add("false enters: walk-by / drive-by / parked / neighbour / other",
        lambda r: " / ".join(f"{m(r)['false_enters_by_cause'][c]:,}" for c in
                             ("walk_by", "drive_by", "parked", "neighbour", "other")))
    add("walk-bys with a false enter", lambda r: f"{_fmt(m(r)['walk_by_false_enter_rate'], True)} of {m(r)['walk_bys']:,}")
    add("drive-bys with a false enter",
        lambda r: f"{_fmt(m(r)['drive_by_false_enter_rate'], True)} of {m(r)['drive_bys']:,}")
    add("parked outside with a false enter",
        lambda r: f"{_fmt(m(r)['parked_false_enter_rate'], True)} of {m(r)['parked_outside']:,}")
    add("small-store recall", lambda r: _fmt(m(r)["by_size"].get("small", {}).get("recall")))
    add("enter latency median / p90 (s)",
        lambda r: f"{_fmt(m(r)['enter_latency_s']['median'])} / {_fmt(m(r)['enter_latency_s']['p90'])}")
    add("dwell latency after threshold median / p90 (s)",
        lambda r: f"{_fmt(m(r)['dwell_latency_s']['median'])} / {_fmt(m(r)['dwell_latency_s']['p90'])}")
    add("probability ECE (all / enters)", lambda r: f"{_fmt(m(r).get('calibration', {}).get('ece'))} / "
        f"{_fmt(m(r).get('calibration', {}).get('by_kind', {}).get('enter', {}).get('ece'))}")
    add("GPS-only stores: oracle - engine precision",
        lambda r: ", ".join(f"{k} {v:+.3f}" for k, v in m(r).get("gap_to_oracle", {}).items()) or "-")
    add("missed exits", lambda r: f"{m(r)['missed_exits']:,} of {m(r)['exits_judged']:,}")
    add("offers issued", lambda r: _fmt(r["offers"]["issued"]))
    add("offers per device per day", lambda r: _fmt(r["offers"]["per_device_per_day"]))
    add("cap violations", lambda r: _fmt(r["cap_violations"]))
    add("pings / sightings", lambda r: f"{r['throughput']['pings']:,} / {r['throughput']['sightings']:,}")
    add("pings/s (engine, incl. sightings & rules)", lambda r: _fmt(r["throughput"]["pings_per_s"]))
    return rows


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The metrics of one or more runs side by side, as plain text."""
    rows = table_rows(records)
    head = ["metric", *[r["name"] for r in records]]
    widths = [max(len(head[0]), *(len(label) for label, _ in rows))]
    for j in range(len(records)):
        widths.append(max(len(head[j + 1]), *(len(vals[j]) for _, vals in rows)))
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for label, vals in rows:
        cells = [label.ljust(widths[0]), *(v.rjust(w) for v, w in zip(vals, widths[1:], strict=True))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def format_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """The same table as :func:`format_table`, as a Markdown table (``table.md``, for READMEs and issues)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| metric | " + " | ".join(cell(str(r["name"])) for r in records) + " |",
             "| --- | " + " | ".join("---:" for _ in records) + " |"]
    lines += ["| " + cell(label) + " | " + " | ".join(cell(v) for v in vals) + " |" for label, vals in table_rows(records)]
    return "\n".join(lines) + "\n"


def targets(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, checked on the first record (the scenario itself) and a GPS-only variant if any."""
    if not records:
        return []
    base = records[0]
    m = base["metrics"]
    values: dict[str, Any] = {
        **target_values(m),
        "cap_violations": base["cap_violations"],
        "small_store_beacon_lift": None,
    }
    gps_only = [r for r in records[1:] if r.get("ble_enabled") is False]
    small = m["by_size"].get("small", {}).get("recall")
    if gps_only and small is not None:
        other = gps_only[0]["metrics"]["by_size"].get("small", {}).get("recall")
        if other is not None:
            values["small_store_beacon_lift"] = round(small - other, 4)
    out = []
    for name, (op, goal) in TARGETS.items():
        v = values[name]
        ok = None if v is None else (v >= goal if op == ">=" else v <= goal)
        out.append({"target": name, "goal": f"{op} {goal}", "value": v, "met": ok})
    return out


def format_what_if(record: Mapping[str, Any]) -> str:
    """The what-if estimates of one run (see :mod:`sim.diagnose`), one line per candidate rule."""
    w = record["metrics"].get("what_if")
    if not w:
        return ""
    split = record["metrics"]["diagnosis"]["exits_inside_a_visit_by_cause"]
    lines = [f"exits inside a true visit (they split it), by cause/source: "
             f"{', '.join(f'{k} {v:,}' for k, v in split.items()) or 'none'}",
             "what-if (candidate presence rules, estimated on this run's own events):"]
    for name in ("speed_gate", "confirm_enter", "one_store_at_a_time"):
        r = w[name]
        lines.append(f"  {name:<20} holds back {r['share_of_false_enters']:6.1%} of false GPS enters, "
                     f"delays {r['share_of_true_enters']:6.1%} of true ones")
    c = w["confirm_exit"]
    lines.append(f"  {'confirm_exit':<20} holds back {c['share_of_early_exits']:6.1%} of the visit-splitting "
                 f"one-ping exits ({c['early_exits_held_back']:,} of {c['early_exits_by_one_ping']:,})")
    return "\n".join(lines)


def format_targets(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["targets (default scenario):"]
    for t in rows:
        if t["met"] is None:
            mark = ("n/a (run --compare with a GPS-only variant)" if t["target"] == "small_store_beacon_lift"
                    else "n/a (nothing to measure)")
        else:
            mark = "met" if t["met"] else "MISSED"
        lines.append(f"  {t['target']:<28} {t['goal']:>8}  value {_fmt(t['value']):>8}  {mark}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- files


def write_run_files(out: Path, s: RunSummary) -> None:
    """events.jsonl, offers.jsonl, truth_visits.csv, fences.geojson, beacons.yaml of one run."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "events.jsonl").open("w", encoding="utf-8") as f:
        for e in s.run.events:
            f.write(json.dumps(e.to_dict() if hasattr(e, "to_dict") else e) + "\n")
    with (out / "offers.jsonl").open("w", encoding="utf-8") as f:
        for o in s.run.offers:
            f.write(json.dumps(o) + "\n")
    v = s.sim.truth.visits
    ids = s.sim.population.device_ids
    t0 = s.sim.scenario.start_ts
    found = s.details.get("found")
    with (out / "truth_visits.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["device_id", "fence_id", "size_class", "start_ts", "end_ts", "found"])
        for k in range(len(v)):
            w.writerow([ids[v.device[k]], s.sim.world.ids[v.store[k]], s.sim.world.size_class[v.store[k]],
                        f"{t0 + v.start[k]:.1f}", f"{t0 + v.end[k]:.1f}",
                        "" if found is None else int(found[k])])
    (out / "fences.geojson").write_text(json.dumps(s.sim.world.to_geojson()), encoding="utf-8")
    (out / "beacons.yaml").write_text(s.sim.registry_yaml(), encoding="utf-8")


def write_report(out: Path, summaries: Sequence[RunSummary], *, plots: bool = True) -> dict[str, Any]:
    """Everything: metrics.json, per-run files, plots and report.html. Returns the metrics document."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for s in summaries:
        rec = s.record()
        rec["ble_enabled"] = s.sim.scenario.ble.enabled
        records.append(rec)
    doc: dict[str, Any] = {
        "scenario": scenario_to_dict(summaries[0].sim.scenario),
        "runs": records,
        "targets": targets(records),
        "definitions": _definitions(),
    }
    for i, s in enumerate(summaries):
        write_run_files(out if i == 0 else out / "variants" / s.name, s)
    images: list[tuple[str, str]] = []
    notes: list[str] = []
    if plots:
        try:
            images = _plots(out, summaries) + presence_plots(out, [(s.name, s.metrics) for s in summaries])
        except ImportError:
            notes.append("matplotlib is not installed: no plots (pip install 'proximity-engine[sim]')")
    doc["plots"] = [name for name, _ in images]
    doc["notes"] = notes
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=_json_default), encoding="utf-8")
    (out / "report.html").write_text(_html(doc, images, records), encoding="utf-8")
    (out / "map.html").write_text(_map_html(summaries[0]), encoding="utf-8")
    (out / "table.md").write_text(format_markdown(records), encoding="utf-8")
    return doc


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _definitions() -> str:
    import sim.metrics as metrics

    return (metrics.__doc__ or "").strip()


# ------------------------------------------------------------------------------------- plots


def _plots(out: Path, summaries: Sequence[RunSummary]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    images: list[tuple[str, str]] = []
    s = summaries[0]
    w = s.sim.world
    seg = s.sim.population.segments
    # 1. the map: stores, beacons, a few devices' true tracks, their pings and events
    fig, ax = plt.subplots(figsize=(10, 8.5))
    colours = {"small": "#f4a261", "medium": "#2a9d8f", "large": "#264653", "mall": "#e9c46a", "shop": "#e76f51"}
    for i in range(w.n_stores):
        cls = str(w.size_class[i])
        ax.add_patch(Rectangle((w.x0[i], w.y0[i]), w.x1[i] - w.x0[i], w.y1[i] - w.y0[i],
                               facecolor=colours[cls], alpha=0.25 if cls == "mall" else 0.6, edgecolor="k", lw=0.4))
    if w.beacons:
        ax.scatter([b.x for b in w.beacons], [b.y for b in w.beacons], s=6, c="navy", marker="^", label="beacon")
    rng = np.random.default_rng(0)
    shown = rng.choice(s.sim.scenario.devices, size=min(6, s.sim.scenario.devices), replace=False)
    p = s.sim.pings
    for k, d in enumerate(shown):
        m = seg.device == d
        xs = np.column_stack([seg.x0[m], seg.x1[m]]).ravel()
        ys = np.column_stack([seg.y0[m], seg.y1[m]]).ravel()
        line, = ax.plot(xs, ys, lw=0.8, alpha=0.8, label="true track" if k == 0 else None)
        pm = p.device == d
        px, py = w.frame.to_xy(p.lon[pm], p.lat[pm])
        ax.scatter(px, py, s=3, color=line.get_color(), alpha=0.5, label="pings" if k == 0 else None)
    det = s.details
    if "enter_device" in det and len(det["enter_device"]):
        sel = np.isin(det["enter_device"], shown)
        st = det["enter_store"][sel]
        cx = (w.x0[st] + w.x1[st]) / 2
        cy = (w.y0[st] + w.y1[st]) / 2
        false = det["false_enter"][sel]
        ax.scatter(cx[~false], cy[~false], s=40, facecolors="none", edgecolors="green", label="true enter")
        ax.scatter(cx[false], cy[false], s=40, marker="x", c="red", label="false enter")
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title(f"{s.name}: stores, beacons and {len(shown)} sampled devices")
    ax.legend(loc="upper right", fontsize=8)
    ax.autoscale()
    fig.tight_layout()
    fig.savefig(out / "map.png", dpi=110)
    plt.close(fig)
    images.append(("map.png", "Stores (colour by size class), beacons, sampled true tracks with their pings and enters"))
    # 2. latency histograms
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "enter_latency_s", "enter latency after the true entry (s)"),
                           (axes[1], "dwell_latency_s", "dwell latency after the dwell threshold (s)")):
        vals = det.get(key, np.zeros(0))
        if len(vals):
            ax.hist(np.clip(vals, -120, 900), bins=60, color="#2a9d8f")
            ax.axvline(float(np.median(vals)), color="k", ls="--", lw=1, label=f"median {np.median(vals):.0f} s")
            ax.axvline(float(np.percentile(vals, 90)), color="r", ls=":", lw=1, label=f"p90 {np.percentile(vals, 90):.0f} s")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("visits")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    images.append(("latency.png", "Enter latency (from the true entry) and dwell latency (after the threshold)"))
    # 3. precision and recall against GPS accuracy
    fig, ax = plt.subplots(figsize=(7, 4))
    for s2 in summaries:
        bins = s2.metrics["by_gps_accuracy"]
        mid = [(b["sigma_lo_m"] + b["sigma_hi_m"]) / 2 for b in bins]
        ax.plot(mid, [b["recall"] or 0 for b in bins], marker="o", label=f"{s2.name} recall")
        ax.plot(mid, [b["precision"] or 0 for b in bins], marker="s", ls="--", label=f"{s2.name} precision")
    ax.set_xlabel("device GPS error, 68 % radius outdoors (m)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("precision and recall against GPS accuracy")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    images.append(("accuracy.png", "Precision and recall by the device's GPS error"))
    # 4. comparison
    if len(summaries) > 1:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(summaries)), 4))
        names = [x.name for x in summaries]
        keys = [("precision", lambda mm: mm["precision"]), ("recall", lambda mm: mm["recall"]),
                ("small-store recall", lambda mm: mm["by_size"].get("small", {}).get("recall")),
                ("1 - drive-by false rate", lambda mm: None if mm["drive_by_false_enter_rate"] is None
                 else 1 - mm["drive_by_false_enter_rate"])]
        width = 0.8 / len(keys)
        x = np.arange(len(names))
        for j, (label, get) in enumerate(keys):
            ax.bar(x + j * width, [get(s3.metrics) or 0 for s3 in summaries], width, label=label)
        ax.set_xticks(x + width * (len(keys) - 1) / 2, names)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title("settings compared on the same seed")
        fig.tight_layout()
        fig.savefig(out / "compare.png", dpi=110)
        plt.close(fig)
        images.append(("compare.png", "Settings compared on the same seed"))
    return images


# ------------------------------------------------------------------------------------- HTML


def _map_html(s: RunSummary) -> str:
    """The console's interactive map, offline: the stores, the devices' pings replayed, events and offers."""
    from proximity.service.static_map import map_page

    p = s.sim.pings
    events = [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in s.run.events]
    return map_page(title=f"proximity sim: {s.name}", fences=s.sim.world.to_geojson(), events=events,
                    offers=s.run.offers, pings={"device_id": np.asarray(s.sim.device_ids)[p.device], "lon": p.lon,
                                                "lat": p.lat, "accuracy_m": p.accuracy_m, "ts": p.ts})


def _html(doc: Mapping[str, Any], images: Sequence[tuple[str, str]], records: Sequence[Mapping[str, Any]]) -> str:
    e = html.escape
    sc = doc["scenario"]
    rows = table_rows(records)
    head = "".join(f"<th>{e(r['name'])}</th>" for r in records)
    body = "".join(f"<tr><td>{e(label)}</td>{''.join(f'<td>{e(v)}</td>' for v in vals)}</tr>" for label, vals in rows)
    tgt = "".join(
        f"<tr><td>{e(t['target'])}</td><td>{e(t['goal'])}</td><td>{e(_fmt(t['value']))}</td>"
        f"<td class='{'ok' if t['met'] else ('na' if t['met'] is None else 'bad')}'>"
        f"{'met' if t['met'] else ('n/a' if t['met'] is None else 'missed')}</td></tr>"
        for t in doc["targets"])
    caps = records[0]["caps"]
    cap_rows = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in caps.items())
    sizes = records[0]["metrics"]["by_size"]
    size_rows = "".join(
        f"<tr><td>{e(k)}</td><td>{v['visits']}</td><td>{e(_fmt(v['recall']))}</td><td>{v['enters']}</td>"
        f"<td>{e(_fmt(v['precision']))}</td></tr>" for k, v in sizes.items())
    imgs = "".join(f"<figure><img src='{e(name)}' alt='{e(cap)}'><figcaption>{e(cap)}</figcaption></figure>"
                   for name, cap in images)
    notes = "".join(f"<p class='note'>{e(n)}</p>" for n in doc.get("notes", []))
    for r in records:
        notes += "".join(f"<p class='note'>{e(r['name'])}: {e(n)}</p>" for n in r.get("notes", []))
    what_if = e(format_what_if(records[0]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>proximity sim: {e(sc['name'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.ok {{ color: #1a7f37; font-weight: bold; }} .bad {{ color: #c62828; font-weight: bold; }} .na {{ color: #777; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }} pre {{ background: #f6f6f6; padding: 1em; white-space: pre-wrap; }}
.note {{ background: #fff3cd; padding: .5em; }}
</style></head><body>
<h1>proximity sim: {e(sc['name'])}</h1>
<p>seed {sc['seed']}, {sc['devices']:,} devices, {sc['hours']:g} h from {e(sc['start'])}, GPS {sc['gps']['sigma_m']:g} m
(68 % radius outdoors), fixes every {sc['gps']['interval_s']:g} s, via <b>{e(records[0]['via'])}</b>.</p>
{notes}
<h2>Targets</h2><table><tr><th>target</th><th>goal</th><th>value</th><th></th></tr>{tgt}</table>
<h2>Metrics</h2><table><tr><th>metric</th>{head}</tr>{body}</table>
<h2>By store size ({e(records[0]['name'])})</h2>
<table><tr><th>size</th><th>visits</th><th>recall</th><th>enters</th><th>precision</th></tr>{size_rows}</table>
<h2>Caps ({e(records[0]['name'])}): violations per cap</h2><table>{cap_rows}</table>
<h2>Why: diagnosis ({e(records[0]['name'])})</h2>
<pre>exits inside a visit, by cause/source: {e(json.dumps(records[0]['metrics']['diagnosis'], indent=1))}

{what_if}</pre>
<h2>Map</h2><p><a href="map.html">The interactive map</a> (the console's, offline): press Play.</p>
<iframe src="map.html" title="interactive map" style="width:100%;height:80vh;border:1px solid #ccc"></iframe>
<h2>Plots</h2>{imgs or '<p>No plots.</p>'}
<h2>Definitions</h2><pre>{e(doc['definitions'])}</pre>
</body></html>
"""
