"""Reading a backtest's ``--out`` directory into report arrays, and printing a report.

The directory holds ``decisions.jsonl`` (the exposures: verdicts ``offer``,
``held`` and ``holdout``), ``events.jsonl`` (presence events; store-level ones
make the visits) and ``campaigns.json`` (each campaign's conversion rule and
experiment, as the backtest ran them). Without ``campaigns.json`` every
campaign gets the default rule (any fence, within a day) unless specs are given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from campaigns.conversions import KIND_CODES, Events, Exposures, Spec, arm_names
from campaigns.decider import EXPOSED
from campaigns.errors import CampaignError
from campaigns.experiments import HOLDOUT
from campaigns.report import Report

SPECS_FILE = "campaigns.json"


@dataclass
class ReportInput:
    exposures: Exposures
    events: Events
    specs: list[Spec]
    fence_names: list[str]
    arm_names: list[str]
    device_names: list[str]
    timezone: ZoneInfo | None


def write_specs(path: Path, specs: Sequence[Spec], timezone: ZoneInfo | None) -> None:
    doc = {"timezone": timezone.key if timezone is not None else None, "campaigns": [s.to_dict() for s in specs]}
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


class _Codes(dict[str, int]):
    def code(self, name: str) -> int:
        c = self.get(name)
        if c is None:
            c = self[name] = len(self)
        return c


def _lines(path: Path) -> Any:
    with path.open("rb") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise CampaignError(f"bad JSON: {exc}", source=str(path), line=i) from None
            if not isinstance(row, dict):
                raise CampaignError("expected a JSON object", source=str(path), line=i)
            yield i, row


def read_dir(directory: str | Path, specs: Sequence[Spec] | None = None) -> ReportInput:
    """The arrays of a report over ``directory``; raises :class:`CampaignError` when it holds no decisions."""
    d = Path(directory)
    decisions = d / "decisions.jsonl"
    if not decisions.is_file() or decisions.stat().st_size == 0:
        what = "is not a directory" if not d.is_dir() else "holds no decisions (decisions.jsonl is missing or empty)"
        raise CampaignError(
            f"{what}: write one with 'proximity campaigns backtest CAMPAIGNS.yaml --fences ... --pings ... --out {d}'",
            source=str(d))
    timezone = None
    if specs is None:
        specs = []
        meta = d / SPECS_FILE
        if meta.is_file():
            try:
                doc = json.loads(meta.read_text(encoding="utf-8"))
                specs = [Spec.from_dict(c) for c in doc["campaigns"]]
                timezone = ZoneInfo(doc["timezone"]) if doc.get("timezone") else None
            except (ValueError, KeyError, TypeError) as exc:
                raise CampaignError(f"unreadable campaign specs: {exc}", source=str(meta)) from None
    specs = list(specs)
    camp_index = {s.campaign_id: i for i, s in enumerate(specs)}
    arms = arm_names(specs)
    arm_index = {a: i for i, a in enumerate(arms)}
    devices, fences = _Codes(), _Codes()
    cols: dict[str, list[Any]] = {k: [] for k in ("campaign", "arm", "device", "fence", "ts")}
    for i, row in _lines(decisions):
        event = row.get("event")
        verdicts = row.get("verdicts") or ()
        exposed = [v for v in verdicts if isinstance(v, dict) and v.get("outcome") in EXPOSED]
        if not exposed:
            continue
        try:
            device, fence, ts = str(event["device_id"]), str(event["fence_id"]), float(event["ts"])
        except (KeyError, TypeError, ValueError):
            raise CampaignError("a decision needs event.device_id, event.fence_id and event.ts",
                                source=str(decisions), line=i) from None
        for v in exposed:
            cid = str(v.get("campaign_id"))
            if cid not in camp_index:
                camp_index[cid] = len(specs)
                specs.append(Spec(cid, cid))
            name = HOLDOUT if v["outcome"] == "holdout" else str(v.get("variant") or "offer")
            if name not in arm_index:
                arm_index[name] = len(arms)
                arms.append(name)
            cols["campaign"].append(camp_index[cid])
            cols["arm"].append(arm_index[name])
            cols["device"].append(devices.code(device))
            cols["fence"].append(fences.code(fence))
            cols["ts"].append(ts)
    exposures = Exposures(*(np.asarray(cols[k], np.float64 if k == "ts" else np.int64)
                            for k in ("campaign", "arm", "device", "fence", "ts")))
    ev: dict[str, list[Any]] = {k: [] for k in ("kind", "device", "fence", "ts", "dwell_s", "probability")}
    path = d / "events.jsonl"
    if path.is_file():
        for i, row in _lines(path):
            if row.get("zone") is not None:
                continue
            try:
                kind = KIND_CODES[row["kind"]]
                dev, fence, ts = str(row["device_id"]), str(row["fence_id"]), float(row["ts"])
                dwell = float(row.get("dwell_s") or 0.0)
                p = row.get("probability")
                prob = float("nan") if p is None else float(p)
            except (KeyError, TypeError, ValueError):
                raise CampaignError("an event needs kind (enter|dwell|exit), device_id, fence_id and ts",
                                    source=str(path), line=i) from None
            ev["kind"].append(kind)
            ev["device"].append(devices.code(dev))
            ev["fence"].append(fences.code(fence))
            ev["ts"].append(ts)
            ev["dwell_s"].append(dwell)
            ev["probability"].append(prob)
    events = Events(np.asarray(ev["kind"], np.int8), np.asarray(ev["device"], np.int64),
                    np.asarray(ev["fence"], np.int64), np.asarray(ev["ts"], np.float64),
                    np.asarray(ev["dwell_s"], np.float64), np.asarray(ev["probability"], np.float64))
    return ReportInput(exposures, events, specs, list(fences), arms, list(devices), timezone)


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def format_report(report: Report) -> str:
    """The lift table and the foot-traffic table, as text."""
    head = ["campaign", "variant", "store", "exposed", "conv", "rate", "holdout", "h.conv", "h.rate",
            "lift (95% CI)", "relative (95% CI)", "incremental"]
    rows: list[list[str]] = []
    for r in report.lift:
        if r.get("lift") is not None:
            lo, hi = r["lift_ci"]
            lift = f"{_pct(r['lift'], True)} [{_pct(lo, True)}, {_pct(hi, True)}]"
            rel = (f"{_pct(r['relative_lift'], True)} [{_pct(r['relative_lift_ci'][0], True)}, "
                   f"{_pct(r['relative_lift_ci'][1], True)}]") if r.get("relative_lift") is not None else "-"
            inc_lo, inc_hi = r["incremental_visits_ci"]
            inc = f"{r['incremental_visits']:+.1f} [{inc_lo:+.1f}, {inc_hi:+.1f}]"
            if r["status"] == "significant":
                lift += " *"
        else:
            lift, rel, inc = r["status"], "-", "-"
        label = r["campaign_id"] if r["level"] == "campaign" else ""
        rows.append([label, r["variant"] or ("all" if r["level"] == "campaign" else ""), r["store"] or "",
                     str(r["exposed"]), str(r["converted"]), _pct(r["rate"]), str(r["holdout_exposed"]),
                     str(r["holdout_converted"]), _pct(r["holdout_rate"]), lift, rel, inc])
    lines = [f"conversions and lift against the holdout ({report.exposures} exposures, {report.visits} visits; "
             f"attribution: {report.attribution} exposure; * = 95% interval excludes 0; "
             f"'not enough data' below {report.min_exposed} exposures per group)"]
    lines += _table(head, rows) if rows else ["(no exposure: no offer or holdout decision in these decisions)"]
    t_head = ["store", "day", "visits", "unique visitors", "median dwell", "repeat-visit rate"]
    t_rows = [[t["store"], t["day"], str(t["visits"]), str(t["unique_visitors"]),
               "-" if t["median_dwell_s"] is None else _dur(t["median_dwell_s"]), _pct(t["repeat_visit_rate"])]
              for t in report.traffic]
    lines += ["", "foot traffic per store and day"]
    lines += _table(t_head, t_rows) if t_rows else ["(no visits)"]
    return "\n".join(lines)


def _dur(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    left = {0, 1, 2} if head[0] == "campaign" else {0, 1}

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


__all__ = ["SPECS_FILE", "ReportInput", "format_report", "read_dir", "write_specs"]
