"""The backtest says which rows of the log never reached presence, and why (issue: hostile evidence)."""

from __future__ import annotations

import json
from pathlib import Path

from proximity.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "proximity" / "examples"
LOG = """ts,device_id,lon,lat,accuracy_m
1773469932,dev-1,2.3463262,48.8636945,0
1773469962,dev-1,2.3463262,48.8636945,8
1773469963,dev-1,3.5,48.8636945,8
1773469992,dev-1,2.3463262,48.8636945,8
1773469992,dev-1,2.3463262,48.8636945,8
"""


def test_refused_rows_are_decisions_with_a_reason(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "pings.csv"
    log.write_text(LOG)
    out = tmp_path / "out"
    assert main(["campaigns", "backtest", str(EXAMPLES / "campaigns.yaml"), "--fences",
                 str(EXAMPLES / "fences.geojson"), "--pings", str(log), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "evidence not applied: accuracy_m 1, duplicate 1, implausible 1" in text
    refused = [d for d in map(json.loads, (out / "decisions.jsonl").read_text().splitlines())
               if d.get("decision") == "refused"]
    by_row = {d["ping"]: d["reason"].split(":")[0] for d in refused}
    assert by_row[0].startswith("accuracy_m 0.0 is not a real fix") and by_row[2] == "implausible"
    assert sorted(by_row) == [0, 2, 4] and by_row[4] == "duplicate"
