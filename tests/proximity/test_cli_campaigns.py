"""``proximity campaigns schema|validate``: exit codes, output, and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proximity.cli import main

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "proximity" / "examples" / "campaigns.yaml"
DATA = ROOT / "tests" / "campaigns" / "data"


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaigns", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["campaigns"]


def test_validate_ok_prints_one_line_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaigns", "validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("ok: ") and "campaigns" in out[0]
    # the bundled example against the bundled fences: every fence id, tag and {store.*} placeholder exists
    fences = EXAMPLE.with_name("fences.geojson")
    assert main(["campaigns", "validate", str(EXAMPLE), "--fences", str(fences)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"ok: 6 campaigns (5 active) in 1 file, fences checked against {fences}"]


def test_validate_prints_every_problem_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(DATA / "unknown_key.yaml"), str(DATA / "bad_caps.yaml")]
    assert main(["campaigns", "validate", *files]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 7
    assert f"{DATA / 'unknown_key.yaml'}:8:5: unknown key 'prioity'" in captured.out
    assert f"{DATA / 'bad_caps.yaml'}:6:30: " in captured.out
    assert "7 problems in 2 files" in captured.err


def test_validate_with_fences(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "unknown_fences.yaml"
    assert main(["campaigns", "validate", str(path), "--fences", str(DATA / "fences.geojson")]) == 1
    out = capsys.readouterr().out
    assert f"{path}:9:24: campaigns[0].trigger.fences[1]: unknown fence id 'shop-2'; did you mean 'shop-1'?" in out
    # without fences the same file has nothing to check against: valid
    assert main(["campaigns", "validate", str(path)]) == 0


def test_validate_reports_bad_fence_properties(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((DATA / "fences.geojson").read_text())
    doc["features"][0]["properties"]["opening_hours"] = {"mon": "9am-5pm"}
    fences = tmp_path / "f.geojson"
    fences.write_text(json.dumps(doc))
    assert main(["campaigns", "validate", str(EXAMPLE), "--fences", str(fences)]) == 1
    assert "fence 'shop-1': bad time window '9am-5pm'" in capsys.readouterr().out


def test_validate_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaigns", "validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_validate_as_a_real_process() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "proximity", "campaigns", "validate", str(DATA / "bad_placeholder.yaml")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert bad.returncode == 1, bad.stderr
    assert "Traceback" not in bad.stderr
    assert bad.stdout.splitlines()[0].endswith("unknown placeholder {store_name}; did you mean {store.name}?")
    assert bad.stderr.strip() == "2 problems in 1 file"


EVERY_PROBLEM = """campaigns:
  - id: x
    trigger: {on: enter, tags: [cofee]}
    schedule: {start: "2026-12-01T00:00:00Z", end: "2026-11-01T00:00:00Z", days: funday}
    offer: {title: A}
  - id: x
    trigger: {on: beacon, zones: [checkuot]}
    offer: {title: B}
"""


def test_validate_reports_every_problem_of_a_file_in_one_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(EVERY_PROBLEM)
    registry = tmp_path / "beacons.yaml"
    registry.write_text('beacons:\n  - key: "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1"\n'
                        "    fence_id: cafe\n    zone: checkout\n")
    same_file_again = tmp_path / "." / "c.yaml"
    assert main(["campaigns", "validate", str(path), str(same_file_again), "--fences", str(DATA / "fences.geojson"),
                 "--beacons", str(registry)]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines == [
        f"{path}:3:33: campaigns[0].trigger.tags[0]: no fence has the tag 'cofee'; did you mean 'coffee'?",
        f"{path}:4:52: campaigns[0].schedule.end: the end (2026-11-01T00:00:00Z) is not after the start "
        "(2026-12-01T00:00:00Z)",
        f"{path}:4:82: campaigns[0].schedule.days: bad day 'funday': use mon, tue, wed, thu, fri, sat, sun or a "
        "range like 'mon-fri'",
        f"{path}:6:9: duplicate campaign id 'x' (first defined at line 2) (field 'campaigns[1].id')",
        f"{path}:7:35: campaigns[1].trigger.zones[0]: no beacon of the registry has the zone 'checkuot'; "
        "did you mean 'checkout'?",
    ]
    assert "5 problems in 1 file" in out.err  # the file given twice is read once


def test_validate_reports_ids_duplicated_across_files_even_when_a_file_has_other_problems(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("campaigns:\n  - id: x\n    trigger: {on: enter}\n    offer: {title: A}\n")
    b.write_text("campaigns:\n  - id: bad\n    trigger: {on: nowhere}\n    offer: {title: B}\n"
                 "  - id: x\n    trigger: {on: exit}\n    offer: {title: C}\n")
    assert main(["campaigns", "validate", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "trigger.on must be one of" in out
    assert f"{b}:5:9: duplicate campaign id 'x' (first defined at {a}:2:9)" in out
