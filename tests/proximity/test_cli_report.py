"""``proximity campaigns report DIR``: on the bundled backtest, as JSON, and over directories without decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proximity.cli import main

EXAMPLES = Path(__file__).parents[2] / "proximity" / "examples"


@pytest.fixture(scope="module")
def backtest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bt")
    # the one-fix crossing profile: its many enters give the report enough exposures to compute lift from
    crossing = out / "crossing.yaml"
    crossing.write_text("engine:\n  profile: crossing\n")
    assert main(["campaigns", "backtest", str(EXAMPLES / "campaigns.yaml"), "--fences", str(EXAMPLES / "fences.geojson"),
                 "--pings", str(EXAMPLES / "pings.csv"), "--out", str(out), "--config", str(crossing)]) == 0
    return out


def test_report_on_the_bundled_backtest(backtest_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["campaigns", "report", str(backtest_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conversions and lift against the holdout")
    assert "coffee-welcome" in out and "euro-off" in out and "free-cookie" in out
    assert "not enough data" in out  # 20 phones: a handful of holdout exposures
    assert "foot traffic per store and day" in out and "store-11  2026-03-14" in out
    decisions = [json.loads(line) for line in (backtest_dir / "decisions.jsonl").read_text().splitlines()]
    holdouts = [v for d in decisions for v in d["verdicts"] if v["outcome"] == "holdout"]
    assert holdouts and all(v["campaign_id"] == "coffee-welcome" and v["variant"] == "holdout" for v in holdouts)


def test_report_json_counts_every_exposure(backtest_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["campaigns", "report", str(backtest_dir), "--json", "--min-exposed", "1"]) == 0
    rep = json.loads(capsys.readouterr().out)
    decisions = [json.loads(line) for line in (backtest_dir / "decisions.jsonl").read_text().splitlines()]
    exposed = [v for d in decisions for v in d["verdicts"] if v["outcome"] in ("offer", "held", "holdout")]
    tops = [r for r in rep["lift"] if r["level"] == "campaign"]
    assert sum(r["exposed"] + r["holdout_exposed"] for r in tops) == len(exposed) == rep["exposures"]
    coffee = next(r for r in tops if r["campaign_id"] == "coffee-welcome")
    assert coffee["status"] in ("significant", "not significant") and len(coffee["lift_ci"]) == 2
    assert {r["variant"] for r in rep["lift"] if r["level"] == "variant"} == {"euro-off", "free-cookie"}
    assert all(r["visits"] >= r["unique_visitors"] >= 1 for r in rep["traffic"])
    # the same report from the campaign file itself
    capsys.readouterr()
    assert main(["campaigns", "report", str(backtest_dir), "--json", "--min-exposed", "1", "--campaigns",
                 str(EXAMPLES / "campaigns.yaml"), "--fences", str(EXAMPLES / "fences.geojson")]) == 0
    assert json.loads(capsys.readouterr().out)["lift"] == rep["lift"]


@pytest.mark.parametrize("setup", ["missing", "empty", "no-decisions-file"])
def test_a_directory_without_decisions_is_one_clear_message_and_exit_2(
    setup: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "out"
    if setup != "missing":
        d.mkdir()
        (d / "events.jsonl").write_text("")
    if setup == "empty":
        (d / "decisions.jsonl").write_text("")
    assert main(["campaigns", "report", str(d)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{d}: ") and "--out" in lines[0]


def test_a_bad_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "decisions.jsonl").write_text('{"event": {}, "verdicts": []}\n{oops\n')
    assert main(["campaigns", "report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path / 'decisions.jsonl'}:2: bad JSON")
