"""The console's map in a single static HTML file: for ``campaigns backtest --out`` and the simulation's report.

:func:`map_page` writes a self-contained page (the console's ``map.js`` and
``report.js`` inlined, the data in a JSON script element): open it from disk, no
server and no network needed. A timeline replays the pings (devices move) and
flashes the events and offers. Big runs are thinned by whole devices to at most
``max_pings`` pings so the file stays a few megabytes; the page says how many
devices it shows.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ASSETS = Path(__file__).resolve().parent / "console"
MAX_PINGS = 200_000

_STYLE = """
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #222; }
header { padding: .6em 1em; background: #1f2d3d; color: #fff; } header h1 { margin: 0; font-size: 1.1em; }
main { padding: .6em 1em; } .bar { display: flex; gap: 1em; align-items: center; margin: .4em 0; }
#pm-time { flex: 1; } .wrap { display: flex; gap: .8em; height: 70vh; min-height: 360px; }
#pm-map { position: relative; flex: 1; border: 1px solid #bbb; overflow: hidden; }
#pm-map canvas { display: block; touch-action: none; }
.pm-tip { position: absolute; pointer-events: none; background: #fff; border: 1px solid #999; padding: .3em .5em;
          font-size: 12px; border-radius: 3px; }
aside { width: 20em; overflow-y: auto; } ol { list-style: none; padding: 0; margin: 0; font-size: 12px; }
li { padding: .1em .3em; border-left: 4px solid #999; margin-bottom: 2px; background: #fafafa; }
li.enter { border-color: #1a9850; } li.dwell { border-color: #fdae61; } li.exit { border-color: #d73027; }
li.offer { border-color: #7b3294; } table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: .2em .5em; text-align: right; } td:first-child, th:first-child { text-align: left; }
.note { color: #666; }
"""


def _columns(pings: Mapping[str, Any], max_pings: int) -> tuple[dict[str, Any], list[str], str]:
    dev = np.asarray(pings["device_id"]).astype(str)
    ts = np.asarray(pings["ts"], dtype=np.float64)
    names, inverse = np.unique(dev, return_inverse=True)
    note = ""
    keep = np.ones(len(ts), bool)
    if len(ts) > max_pings and len(names):
        counts = np.bincount(inverse, minlength=len(names))
        order = np.random.default_rng(0).permutation(len(names))  # a fixed sample of whole devices
        chosen = order[np.cumsum(counts[order]) <= max_pings]
        keep = np.isin(inverse, chosen)
        note = f"showing {len(chosen):,} of {len(names):,} devices ({int(keep.sum()):,} of {len(ts):,} pings)"
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(ts[idx], kind="stable")]
    return {"d": inverse[idx].tolist(), "lon": np.round(np.asarray(pings["lon"], float)[idx], 6).tolist(),
            "lat": np.round(np.asarray(pings["lat"], float)[idx], 6).tolist(),
            "acc": np.round(np.asarray(pings.get("accuracy_m", np.zeros(len(ts))), float)[idx], 1).tolist(),
            "t": ts[idx].tolist()}, names.tolist(), note


def map_page(*, title: str, fences: Mapping[str, Any], pings: Mapping[str, Any] | None = None,
             events: Iterable[Mapping[str, Any]] = (), offers: Iterable[Mapping[str, Any]] = (),
             summary_html: str = "", max_pings: int = MAX_PINGS) -> str:
    """A self-contained HTML page: the fences, and a timeline of ``pings`` (columns ``device_id``, ``lon``,
    ``lat``, ``accuracy_m``, ``ts``), ``events`` (``kind``, ``device_id``, ``fence_id``, ``ts``, optional
    ``probability``) and ``offers`` (``campaign_id``, ``device_id``, ``fence_id``, ``ts``)."""
    cols: dict[str, Any] = {"d": [], "lon": [], "lat": [], "acc": [], "t": []}
    names: list[str] = []
    note = ""
    if pings is not None and len(pings["ts"]):
        cols, names, note = _columns(pings, max_pings)
    shown = set(names) if note else None
    marks: list[dict[str, Any]] = [{"kind": str(e["kind"]), "device_id": str(e["device_id"]), "fence_id": str(e.get("fence_id", "")),
              "t": float(e["ts"]), "probability": e.get("probability")} for e in events]
    marks += [{"kind": "offer", "type": "offer", "device_id": str(o["device_id"]), "fence_id": str(o.get("fence_id", "")),
               "campaign_id": str(o.get("campaign_id", "")), "t": float(o["ts"])} for o in offers]
    if shown is not None:
        marks = [m for m in marks if m["device_id"] in shown]
    times = [*cols["t"], *(m["t"] for m in marks)]
    t0 = float(np.floor(min(times))) if times else 0.0
    cols["t"] = [round(t - t0, 3) for t in cols["t"]]
    for m in marks:
        m["t"] = round(m["t"] - t0, 3)
    data = {"fences": fences, "pings": cols, "devices": names, "events": marks, "t0": t0}
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False, default=_plain).replace("</", "<\\/")
    script = (ASSETS / "map.js").read_text(encoding="utf-8") + "\n" + (ASSETS / "report.js").read_text(encoding="utf-8")
    script = script.replace("</script", "<\\/script")
    e = html.escape
    counts = f"{len(fences.get('features', ())):,} fences, {len(names):,} devices, {len(marks):,} events and offers"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_STYLE}</style></head>
<body><header><h1>{e(title)}</h1></header><main>
{summary_html}
<p class="note">{e(counts)}{'; ' + e(note) if note else ''}. Drag to pan, wheel to zoom, hover for ids and tags.</p>
<div class="bar"><button id="pm-play">Play</button>
<label>speed <select id="pm-speed"><option value="60">60x</option><option value="600" selected>600x</option>
<option value="3600">3600x</option></select></label><input id="pm-time" type="range" min="0" value="0" step="1">
<span id="pm-clock"></span><button id="pm-fit">Fit</button></div>
<div class="wrap"><div id="pm-map"></div><aside><ol id="pm-events"></ol></aside></div>
</main>
<script type="application/json" id="pm-data">{payload}</script>
<script>{script}</script>
</body></html>
"""


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def table_html(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in rows) + "</table>")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def backtest_page(out: Path, report: Any, fences_path: str | Path, pings: Any) -> Path:
    """``report.html`` next to a backtest's ``events.jsonl`` and ``offers.jsonl`` in ``out``."""
    doc = report.to_dict()
    head = ["campaign", "matched", "offers", "held", "dropped", "schedule", "audience", "outranked", "paused",
            "blocked by caps", "devices"]
    rows = [[c["campaign_id"], c["matched"], c["offers"], c["held"], c["dropped"], c["schedule"], c["audience"],
             c["outranked"], c["paused"], "; ".join(f"{k}: {v}" for k, v in c["blocked"].items()) or "–",
             c["devices"]] for c in doc["campaigns"]]
    summary = "<h2>Campaigns</h2>" + table_html(head, rows)
    page = map_page(title="proximity campaigns backtest", fences=json.loads(Path(fences_path).read_text("utf-8")),
                    pings={"device_id": pings.device_id, "lon": pings.lon, "lat": pings.lat,
                           "accuracy_m": pings.accuracy_m, "ts": pings.ts},
                    events=read_jsonl(out / "events.jsonl"), offers=read_jsonl(out / "offers.jsonl"),
                    summary_html=summary)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["MAX_PINGS", "backtest_page", "map_page", "read_jsonl", "table_html"]
