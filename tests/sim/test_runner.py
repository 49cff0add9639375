"""The runner on the real engine: evidence order, determinism, memory = Redis, HTTP workers, the CLI."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proximity.cli import main
from sim.runner import rounds, simulate
from sim.scenario import load_scenario
from sim.session import run_one

TINY = {"devices": 25, "hours": 2.5, "start": "2026-03-02T10:00:00+01:00"}


def tiny(**more: object):  # type: ignore[no-untyped-def]
    return load_scenario().with_overrides({**TINY, **more})


def key(e) -> tuple:  # type: ignore[no-untyped-def]
    return (e.kind, e.device_id, e.fence_id, e.zone or "", round(e.ts, 3), e.source, e.cause, e.dwell_s)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 20), st.booleans()), max_size=60))
def test_rounds_never_send_a_device_evidence_before_its_older_evidence(items: list) -> None:
    dev = np.asarray([d for d, _, _ in items], dtype=np.int64)
    ts = np.asarray([t for _, t, _ in items], dtype=np.float64)
    is_sighting = np.asarray([s for _, _, s in items], dtype=bool)
    rp, rs = rounds(dev[~is_sighting], ts[~is_sighting], dev[is_sighting], ts[is_sighting])
    rnd = np.empty(len(items), dtype=np.int64)
    rnd[~is_sighting], rnd[is_sighting] = rp, rs
    # sending order: by round, pings before sightings within a round
    send = rnd * 2 + is_sighting
    for d in np.unique(dev):
        m = dev == d
        order = np.lexsort((ts[m], send[m]))
        assert np.all(np.diff(ts[m][order]) >= 0)
    # and no more rounds than a device's alternations between the two sources
    assert rnd.max(initial=0) <= len(items)


def test_memory_run_is_deterministic_and_scored() -> None:
    a = run_one(tiny())
    b = run_one(tiny())
    assert [key(e) for e in a.run.events] == [key(e) for e in b.run.events]
    assert [o["offer_id"] for o in a.run.offers] == [o["offer_id"] for o in b.run.offers] or \
        [(o["campaign_id"], o["device_id"], o["ts"]) for o in a.run.offers] == \
        [(o["campaign_id"], o["device_id"], o["ts"]) for o in b.run.offers]
    assert a.metrics == b.metrics
    assert a.metrics["visits"] > 3 and a.metrics["detected"] > 0
    assert a.caps["violations"] == 0
    assert a.run.stats["late"] == 0 and a.run.stats["rejected"] == 0  # rounds keep every device in order
    assert a.run.stats["pings"] == len(a.sim.pings) and a.run.stats["sightings"] == len(a.sim.sightings)
    ids = set(a.sim.population.device_ids)
    assert {e.device_id for e in a.run.events} <= ids
    w = a.metrics["what_if"]
    gps_enters = sum(1 for e in a.run.events if e.kind == "enter" and e.zone is None and e.source == "gps")
    assert w["gps_enters"] == gps_enters == w["gps_enters_with_their_ping"]  # every enter found its ping
    for rule in ("speed_gate", "confirm_enter", "one_store_at_a_time"):
        r = w[rule]
        assert 0 <= r["false_enters_held_back"] <= r["false_enters"] and 0.0 <= r["share_of_true_enters"] <= 1.0
    c = w["confirm_exit"]
    assert 0 <= c["early_exits_held_back"] <= c["early_exits_by_one_ping"]


@pytest.mark.redis
def test_redis_state_gives_the_same_events_as_memory(redis_url: str, redis_prefix: str) -> None:
    sc = tiny(devices=15)
    mem = run_one(sc)
    red = run_one(sc, via="redis", redis_url=redis_url, redis_prefix=redis_prefix)
    assert [key(e) for e in red.run.events] == [key(e) for e in mem.run.events]
    assert len(red.run.offers) == len(mem.run.offers)
    assert red.caps["violations"] == 0


@pytest.mark.slow
def test_http_workers_give_the_same_enters_as_in_process(tmp_path: Path) -> None:
    sc = tiny(devices=10, hours=2.0, tracker={})  # the service ranges beacons with the tracker's defaults
    mem = run_one(sc)
    web = run_one(sc, via="http", workers=1)
    assert web.run.via == "http"
    # the same events, debounce exits included: the feeder advances the workers' clock with POST /v1/advance
    assert sorted(key(e) for e in web.run.events) == sorted(key(e) for e in mem.run.events)
    assert any(e.kind == "exit" and e.cause == "debounce" for e in web.run.events)
    assert web.caps["violations"] == 0 and len(web.run.offers) == len(mem.run.offers)


@pytest.mark.slow
@pytest.mark.redis
def test_two_http_workers_sharing_redis_give_the_same_gps_events(redis_url: str, redis_prefix: str) -> None:
    # the one-fix crossing profile: many GPS events to compare (the HTTP workers read it from their config)
    sc = tiny(devices=12, hours=2.0, ble={"enabled": False}, engine={"profile": "crossing"})
    mem = run_one(sc)
    web = run_one(sc, via="http", workers=2, redis_url=redis_url, redis_prefix=redis_prefix)
    assert sum(e.kind == "enter" for e in mem.run.events) >= 3
    assert sorted(key(e) for e in web.run.events) == sorted(key(e) for e in mem.run.events)
    assert len(web.run.offers) == len(mem.run.offers) and web.caps["violations"] == 0


def test_cli_run_writes_the_report_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["sim", "run", "--devices", "20", "--hours", "2", "--set", "start=2026-03-02T10:00:00+01:00",
                 "--compare", "gps-only", "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "precision" in text and "gps-only" in text and "targets" in text
    doc = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in doc["runs"]] == ["default", "gps-only"]
    assert doc["runs"][1]["throughput"]["sightings"] == 0
    lift = next(t for t in doc["targets"] if t["target"] == "small_store_beacon_lift")
    assert lift["value"] is not None
    for name in ("report.html", "map.html", "table.md", "map.png", "latency.png", "accuracy.png", "compare.png", "events.jsonl",
                 "offers.jsonl", "truth_visits.csv", "fences.geojson", "beacons.yaml"):
        assert (out / name).is_file(), name
    assert (out / "variants" / "gps-only" / "events.jsonl").is_file()
    html = (out / "report.html").read_text()
    assert "<img src='map.png'" in html and "gps-only" in html and '<iframe src="map.html"' in html
    page = (out / "map.html").read_text()  # the console's map, offline: every store, the events inlined
    data = json.loads(page.split('id="pm-data">', 1)[1].split("</script>", 1)[0].replace("<\\/", "</"))
    assert len(data["fences"]["features"]) == len(json.loads((out / "fences.geojson").read_text())["features"])
    assert len(data["events"]) >= len([line for line in (out / "events.jsonl").read_text().splitlines() if line])
    assert "<script src=" not in page and "http://" not in page.split("<script>", 1)[1]


def test_cli_without_matplotlib_still_writes_json_and_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code = main(["sim", "run", "--devices", "10", "--hours", "1", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "report.html").is_file()
    assert not list(tmp_path.glob("*.png"))


def test_cli_bad_scenario_is_file_line_col_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: 10\ngps:\n  sigma: 5\n")
    assert main(["sim", "run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:3:" in err and "did you mean 'sigma_m'" in err and "Traceback" not in err
    assert main(["sim", "run", "--compare", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err
    assert main(["sim", "run", "--set", "gps.sigma_m", "--out", str(tmp_path / "o")]) == 2


def test_check_flag_fails_when_a_target_is_missed(tmp_path: Path) -> None:
    # GPS so poor that recall cannot reach 0.97
    code = main(["sim", "run", "--devices", "20", "--hours", "2", "--set", "start=2026-03-02T10:00:00+01:00",
                 "--set", "gps.sigma_m=200", "--set",
                 "ble.enabled=false", "--no-plots", "--check", "--out", str(tmp_path), "--no-progress"])
    assert code == 1


def test_seed_flag_changes_the_run_and_generation_is_reproducible() -> None:
    a = simulate(tiny())
    b = simulate(dataclasses.replace(tiny(), seed=8))
    assert not np.array_equal(a.pings.lon[:100], b.pings.lon[:100])
