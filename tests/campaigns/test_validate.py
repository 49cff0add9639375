"""Loading and validating campaign files: every bad case with its line and column."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from campaigns import CampaignFileError, FenceInfo, json_schema, load_campaigns, loads_campaigns, parse_file

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).parents[2] / "proximity" / "examples" / "campaigns.yaml"
BAD_CASES = sorted(DATA.glob("*.yaml"))  # each top-level data/*.yaml is a bad case with "# expect:" lines;
# inputs of other tests (replay/) live in subdirectories


def data_fences() -> dict[str, FenceInfo]:
    doc = json.loads((DATA / "fences.geojson").read_text())
    return {
        f["id"]: FenceInfo.create(f["id"], f["properties"].get("name", ""), f["properties"].get("tags", ()), f["properties"])
        for f in doc["features"]
    }


def expectations(path: Path) -> list[tuple[int, int, str]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            where, _, message = line[len("# expect: "):].partition(": ")
            ln, col = where.split(":")
            out.append((int(ln), int(col), message))
    return out


@pytest.mark.parametrize("path", BAD_CASES, ids=[p.stem for p in BAD_CASES])
def test_each_bad_case_reports_every_problem_at_its_line_and_column(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} states no expectation"
    fences = data_fences() if "# with-fences" in path.read_text() else None
    cs, problems = parse_file(path, fences)
    assert cs is None
    got = [(p.line, p.col, p.message) for p in problems]
    assert len(got) == len(expected), "\n".join(str(p) for p in problems)
    for line, col, message in expected:
        assert any(g[0] == line and g[1] == col and g[2].startswith(message) for g in got), (
            f"expected {line}:{col}: {message}\ngot:\n" + "\n".join(f"{a}:{b}: {c}" for a, b, c in got)
        )
    for p in problems:
        assert p.source == str(path)
        assert str(p).startswith(f"{path}:{p.line}:{p.col}: ")


def test_load_campaigns_raises_one_error_holding_all_problems() -> None:
    with pytest.raises(CampaignFileError) as info:
        load_campaigns([DATA / "unknown_key.yaml", DATA / "bad_duration.yaml"])
    err = info.value
    assert len(err.problems) == 5
    assert isinstance(err, ValueError)
    assert err.source == str(DATA / "bad_duration.yaml")  # sorted by file, then line
    assert "(and 4 more problems)" in err.message
    assert err.report().count("\n") == 4


def test_the_bundled_example_loads() -> None:
    cs = load_campaigns(EXAMPLE)
    ids = [c.id for c in cs.campaigns]
    assert "coffee-welcome" in ids and len(ids) == len(set(ids)) >= 4
    assert cs.defaults.quiet_hours is not None and cs.defaults.per_device


def test_duplicate_ids_across_files_are_reported(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("campaigns:\n  - id: x\n    trigger: {on: enter}\n    offer: {title: A}\n")
    b.write_text("campaigns:\n  - id: y\n    trigger: {on: exit}\n    offer: {title: B}\n  - id: x\n    trigger: {on: exit}\n    offer: {title: C}\n")
    with pytest.raises(CampaignFileError) as info:
        load_campaigns([a, b])
    (p,) = info.value.problems
    assert (p.source, p.line) == (str(b), 5)
    assert f"first defined at {a}:2" in p.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the file is empty"),
        ("- 1\n", "the file must be a mapping"),
        ("campaigns: 3\n", "campaigns must be a list"),
        ("campaigns: []\nextra: 1\n", "unknown key 'extra'"),
        ("campaigns:\n  - id: 'bad id'\n    trigger: {on: enter}\n    offer: {title: x}\n", "is not valid"),
        ("campaigns:\n  - id: a\n    trigger: {on: entre}\n    offer: {title: x}\n", "did you mean 'enter'"),
        ("campaigns:\n  - id: a\n    trigger: {on: enter}\n    offer: {title: x}\n    schedule: {start: '2026-01-01T10:00:00'}\n", "has no zone"),
        ("campaigns:\n  - id: a\n    trigger: {on: enter}\n    offer: {title: x}\n    audience: {attributes: {age: {min: 30, max: 20}}}\n", "no device can match"),
        ("campaigns:\n  - id: a\n    trigger: {on: enter}\n    offer: {title: x}\n    limits: {budget: {total: 5, per_day: 9}}\n", "above total"),
        ("campaigns:\n  - id: a\n    trigger: {on: enter}\n    offer: {title: x}\n    schedule: {days: [mon, funday]}\n", "bad day 'funday'"),
        ("campaigns:\n  - id: a\n    trigger: {on: enter}\n    offer: {title: x, data: {k: '{device.}'}}\n", "unknown placeholder"),
    ],
)
def test_more_bad_files(text: str, fragment: str) -> None:
    with pytest.raises(CampaignFileError) as info:
        loads_campaigns(text, source="t.yaml")
    assert fragment in info.value.report()
    assert all(p.source == "t.yaml" and p.line is not None for p in info.value.problems)


def test_naive_datetimes_read_in_the_schedule_zone() -> None:
    cs = loads_campaigns(
        "campaigns:\n  - id: a\n    trigger: {on: enter}\n    offer: {title: x}\n"
        "    schedule: {timezone: Europe/Paris, start: '2026-07-01T10:00:00', end: 2026-07-02}\n"
    )
    s = cs.campaigns[0].schedule
    assert s.start == 1782892800.0  # 08:00 UTC (CEST is +2)
    assert s.end == 1782943200.0  # 2026-07-02 00:00 in Paris = 2026-07-01T22:00Z


# ------------------------------------------------------------------ schema


def _plain(path: Path) -> object:
    return json.loads(json.dumps(YAML(typ="safe").load(path.read_text()), default=str))


def test_schema_is_valid_draft_2020_12_and_accepts_the_example() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(_plain(EXAMPLE))


def test_schema_rejects_unknown_keys_and_bad_values() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    doc = _plain(EXAMPLE)
    assert isinstance(doc, dict)
    doc["campaigns"][0]["prioity"] = 1
    assert any("prioity" in e.message for e in validator.iter_errors(doc))
    doc = _plain(EXAMPLE)
    doc["campaigns"][0]["trigger"]["dwell"] = "ten minutes"
    assert list(validator.iter_errors(doc))
    doc = _plain(EXAMPLE)
    doc["campaigns"][0]["limits"]["per_device"]["max"] = 0
    assert list(validator.iter_errors(doc))


def test_schema_is_generated_from_the_validators_declarations() -> None:
    """Adding a key to the spec shows up in the schema: there is one source of truth."""
    from campaigns import schema as spec

    props = json_schema()["properties"]["campaigns"]["items"]["properties"]
    assert set(props) == set(spec.CAMPAIGN.keys)
    assert set(props["trigger"]["properties"]) == set(spec.TRIGGER.keys)
    assert props["trigger"]["properties"]["on"]["enum"] == ["enter", "exit", "dwell", "beacon"]
