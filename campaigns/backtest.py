"""Replaying a log through an engine and campaigns with a simulated clock, and what it tells.

This module drives any engine with the shape of :class:`proximity.engine.Engine`
(``process_pings(batch)``, ``process_sightings(sightings)``, ``advance(now)``,
each returning ``.events`` and ``.offers``) without importing it: the
``proximity campaigns backtest`` command builds the engine and calls
:func:`replay`.

The log is cut into slices of simulated time (``slice_s``). Inside a slice,
pings and sightings go to the engine in time order (consecutive runs of one
kind per call); at the end of each slice the clock advances, so debounced
exits fire when they would have live. Decisions are counted per campaign
(matched, offers, held or dropped by quiet hours, refused by schedule or
audience, outranked, blocked by each cap).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from campaigns.decider import CampaignRules, Decision


@dataclass
class CampaignStats:
    campaign_id: str
    name: str
    status: str
    matched: int = 0
    offers: int = 0
    held: int = 0
    holdout: int = 0
    dropped: int = 0
    schedule: int = 0
    audience: int = 0
    outranked: int = 0
    paused: int = 0
    stale: int = 0
    template_empty: int = 0
    blocked: Counter[str] = field(default_factory=Counter)
    devices: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "name": self.name,
            "status": self.status,
            "matched": self.matched,
            "offers": self.offers,
            "held": self.held,
            "holdout": self.holdout,
            "dropped": self.dropped,
            "schedule": self.schedule,
            "audience": self.audience,
            "outranked": self.outranked,
            "paused": self.paused,
            "blocked": dict(sorted(self.blocked.items())),
            "devices": len(self.devices),
        }


@dataclass
class BacktestReport:
    campaigns: dict[str, CampaignStats]
    events: Counter[str] = field(default_factory=Counter)
    offers: int = 0
    held: int = 0
    devices: set[str] = field(default_factory=set)
    offered_devices: set[str] = field(default_factory=set)
    pings: int = 0
    sightings: int = 0
    start: float | None = None
    end: float | None = None
    slices: int = 0
    outputs: list[str] = field(default_factory=list)
    #: log rows the engine refused or did not apply, by reason (``accuracy_m``, ``late``, ``implausible``, ...)
    refused: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pings": self.pings,
            "sightings": self.sightings,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "slices": self.slices,
            "devices": len(self.devices),
            "events": dict(sorted(self.events.items())),
            "offers": self.offers,
            "held": self.held,
            "offered_devices": len(self.offered_devices),
            "refused": dict(sorted(self.refused.items())),
            "campaigns": [s.to_dict() for s in self.campaigns.values()],
            "outputs": self.outputs,
        }

    def record(self, decision: Decision) -> None:
        """Count one decision (plug in as ``CampaignRules(on_decision=report.record)``)."""
        for v in decision.verdicts:
            s = self.campaigns.get(v.campaign_id)
            if s is None:
                continue
            s.matched += 1
            if v.outcome in ("offer", "held"):
                s.offers += 1
                s.devices.add(decision.event.device_id)
                if v.outcome == "held":
                    s.held += 1
            elif v.outcome == "holdout":
                s.holdout += 1
                s.devices.add(decision.event.device_id)
            elif v.outcome == "blocked":
                s.blocked[v.cap or "cap"] += 1
            else:
                setattr(s, v.outcome, getattr(s, v.outcome) + 1)


def new_report(rules: CampaignRules) -> BacktestReport:
    return BacktestReport({c.id: CampaignStats(c.id, c.name, c.status) for c in rules.campaigns.campaigns})


class _Writer:
    def __init__(self, out: str | Path | None) -> None:
        self.files: dict[str, TextIO] = {}
        self.dir = Path(out) if out is not None else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name in ("events", "offers", "decisions"):
                self.files[name] = (self.dir / f"{name}.jsonl").open("w", encoding="utf-8")

    def write(self, name: str, rows: Iterable[dict[str, Any]]) -> None:
        f = self.files.get(name)
        if f is None:
            return
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")

    def close(self) -> list[str]:
        for f in self.files.values():
            f.close()
        if self.dir is None:
            return []
        return [*(str(self.dir / f"{n}.jsonl") for n in self.files), str(self.dir / "campaigns.json")]


def replay(
    engine: Any,
    rules: CampaignRules,
    pings: Any = None,
    sightings: Any = None,
    *,
    slice_s: float = 60.0,
    out: str | Path | None = None,
    flush_s: float = 3600.0,
    progress: Callable[[float, str], None] | None = None,
) -> BacktestReport:
    """Feed ``pings`` (a ``PingBatch``) and ``sightings`` (``beacons.Sightings``) to ``engine`` in slices of
    simulated time; ``engine`` must use ``rules``. Writes ``events.jsonl``, ``offers.jsonl`` and
    ``decisions.jsonl`` to ``out`` when given. After the log, the clock runs ``flush_s`` more so
    pending exits fire. ``progress(fraction, note)`` is called after each slice."""
    if not slice_s > 0:
        raise ValueError("slice_s must be positive")
    report = new_report(rules)
    writer = _Writer(out)
    if writer.dir is not None:
        from campaigns.conversions import specs_of
        from campaigns.report_files import SPECS_FILE, write_specs

        write_specs(writer.dir / SPECS_FILE, specs_of(rules.campaigns, rules.fences), rules.campaigns.defaults.timezone)
    previous = rules.on_decision

    def on_decision(decision: Decision) -> None:
        report.record(decision)
        writer.write("decisions", [decision.to_dict()])
        if previous is not None:
            previous(decision)

    rules.on_decision = on_decision
    try:
        _run(engine, pings, sightings, slice_s, flush_s, report, writer, progress)
    finally:
        rules.on_decision = previous
        report.outputs = writer.close()
    return report


def _run(engine: Any, pings: Any, sightings: Any, slice_s: float, flush_s: float,
         report: BacktestReport, writer: _Writer, progress: Callable[[float, str], None] | None = None) -> None:
    p_ts = np.asarray(pings.ts, np.float64) if pings is not None else np.zeros(0)
    s_ts = np.asarray(sightings.ts, np.float64) if sightings is not None else np.zeros(0)
    report.pings, report.sightings = len(p_ts), len(s_ts)
    if pings is not None and len(p_ts):
        report.devices.update(str(d) for d in np.unique(np.asarray(pings.device_id, dtype=object).astype(str)))
    # one timeline: (ts, kind 0 ping / 1 sighting, row), stable by time
    ts = np.concatenate([p_ts, s_ts])
    kind = np.concatenate([np.zeros(len(p_ts), np.int8), np.ones(len(s_ts), np.int8)])
    row = np.concatenate([np.arange(len(p_ts)), np.arange(len(s_ts))])
    if not len(ts):
        return
    order = np.lexsort((row, kind, ts))
    ts, kind, row = ts[order], kind[order], row[order]
    report.start, report.end = float(ts[0]), float(ts[-1])
    slice_of = np.floor((ts - ts[0]) / slice_s).astype(np.int64)
    bounds = np.flatnonzero(np.diff(slice_of)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ts)]])
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        slice_start = float(ts[0] + slice_of[a] * slice_s)
        engine_advance(engine, slice_start, report, writer)  # time passes up to this slice (exits of a gap)
        k = kind[a:b]
        runs = np.flatnonzero(np.diff(k)) + 1
        for ra, rb in zip(np.concatenate([[0], runs]).tolist(), np.concatenate([runs, [len(k)]]).tolist(), strict=True):
            rows = row[a + ra : a + rb]
            if k[ra] == 0:
                result = engine.process_pings(pings.take(rows))
            else:
                result = engine.process_sightings(sightings.take(rows))
            _collect(result, report, writer)
            _refused(result, "ping" if k[ra] == 0 else "sighting", report, writer)
        report.slices += 1
        engine_advance(engine, slice_start + slice_s, report, writer)
        if progress is not None:
            progress(b / len(ts), f"{b:,} of {len(ts):,} rows, {sum(report.events.values()):,} events")
    engine_advance(engine, float(ts[-1]) + flush_s, report, writer)


def engine_advance(engine: Any, now: float, report: BacktestReport, writer: _Writer) -> None:
    _collect(engine.advance(now), report, writer)


def _collect(result: Any, report: BacktestReport, writer: _Writer) -> None:
    events = list(result.events)
    offers = list(result.offers)
    for e in events:
        report.events[e.kind] += 1
    report.offers += len(offers)
    report.held += sum(1 for o in offers if getattr(o, "deliver_after", None) is not None)
    report.offered_devices.update(o.device_id for o in offers)
    writer.write("events", (e.to_dict() for e in events))
    writer.write("offers", (_offer_row(o) for o in offers))


def _refused(result: Any, kind: str, report: BacktestReport, writer: _Writer) -> None:
    """Rows of the log the engine refused (bad values) or did not apply (duplicate, late, implausible):
    one ``{"decision": "refused", ...}`` line each in ``decisions.jsonl``, counted by reason. Rows are the
    log's own (the batch's ``row`` column travels through the engine)."""
    out = []
    for r in [*getattr(result, "rejected", ()), *getattr(result, "dropped", ())]:
        if isinstance(r, dict):
            row, fld, reason = r.get("row"), r.get("field"), str(r.get("reason", ""))
        else:  # a ValidationError
            row, fld, reason = getattr(r, "row", None), getattr(r, "field", None), str(getattr(r, "message", r))
        key = reason.split(":", 1)[0] if ":" in reason else str(fld or "row")
        report.refused[key] += 1
        out.append({"decision": "refused", kind: None if row is None else int(row), "field": fld, "reason": reason})
    writer.write("decisions", out)


def _offer_row(offer: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(offer.to_dict())
    row["time"] = _iso(offer.ts)
    if row.get("deliver_after") is not None:
        row["deliver_time"] = _iso(row["deliver_after"])
    return dict(row)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def format_table(report: BacktestReport) -> str:
    """The per-campaign table of a backtest, and a summary line."""
    head = ["campaign", "matched", "offers", "held", "holdout", "dropped", "schedule", "audience", "outranked", "blocked by caps"]
    rows: list[list[Any]] = []
    for s in report.campaigns.values():
        caps = ", ".join(f"{k}: {v}" for k, v in sorted(s.blocked.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"
        name = s.campaign_id + (" (paused)" if s.status != "active" else "")
        rows.append([name, s.matched, s.offers, s.held, s.holdout, s.dropped, s.schedule, s.audience, s.outranked, caps])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: list[Any]) -> str:
        cells = [str(r[0]).ljust(widths[0])] + [str(v).rjust(widths[i]) for i, v in enumerate(r[1:-1], start=1)]
        return "  ".join([*cells, str(r[-1])]).rstrip()

    lines = [fmt(head), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows]
    ev = ", ".join(f"{k} {v}" for k, v in sorted(report.events.items())) or "none"
    lines.append("")
    lines.append(
        f"{report.pings} pings, {report.sightings} sightings, {len(report.devices)} devices, "
        f"{_iso(report.start) or '-'} .. {_iso(report.end) or '-'}"
    )
    lines.append(f"events: {sum(report.events.values())} ({ev})")
    lines.append(f"offers: {report.offers} to {len(report.offered_devices)} devices ({report.held} held by quiet hours)")
    if report.refused:
        lines.append("evidence not applied: " + ", ".join(f"{k} {v}" for k, v in sorted(report.refused.items())))
    if report.outputs:
        lines.append("wrote: " + ", ".join(report.outputs))
    else:
        lines.append("(nothing written: add --out DIR for events.jsonl, offers.jsonl, decisions.jsonl and campaigns.json;"
                     " then 'proximity campaigns report DIR')")
    return "\n".join(lines)
