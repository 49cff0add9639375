"""Backtest: a ping log replayed through the real engine and the campaigns, with a simulated clock."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from proximity.cli import main

DATA = Path(__file__).parent / "data"
FENCES = DATA / "replay" / "district.geojson"
T0 = 1773043200  # 2026-03-09T08:00:00Z, a Monday (09:00 in Paris)
CAFE = (2.3504, 48.85025)
MALL = (2.3610, 48.8506)
AWAY = (2.3550, 48.8530)

CAMPAIGNS = """
defaults:
  limits: {per_device: {max: 5, window: 24h}}
  quiet_hours: {hours: "21:30-08:00", mode: hold}
campaigns:
  - id: coffee
    priority: 10
    trigger: {on: enter, tags: [coffee]}
    offer: {title: "Welcome to {store.name}"}
    limits: {per_device: {max: 2, window: 1d, kind: calendar}, cooldown: 45m}
  - id: mall-dwell
    trigger: {on: dwell, dwell: 10m, tags: [mall]}
    offer: {title: "Still at {store.name} after {dwell_min} min?"}
  - id: bye
    trigger: {on: exit}
    audience: {segments: {any: [silver]}}
    offer: {title: bye}
"""


def visit(rows: list[list[object]], dev: str, where: tuple[float, float], start: int, minutes: int, segment: str) -> None:
    """Five minutes walking nearby, ``minutes`` inside ``where``, five minutes away again; a ping every 30 s."""
    t = start - 300
    for until, (lon, lat) in ((start, AWAY), (start + minutes * 60, where), (start + minutes * 60 + 300, AWAY)):
        while t < until:
            rows.append([t, dev, lon, lat, 8, segment])
            t += 30


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    rows: list[list[object]] = []
    for k in range(4):  # dev-1 enters the café four times, 30 min apart: the cooldown and the daily cap bite
        visit(rows, "dev-1", CAFE, T0 + k * 3000, 10, "gold")
    visit(rows, "dev-2", MALL, T0 + 600, 20, "silver")
    visit(rows, "dev-3", CAFE, T0 + 13 * 3600, 5, "gold")  # 22:00 in Paris: quiet hours
    rows.sort(key=lambda r: (r[0], r[1]))
    pings = tmp_path / "pings.csv"
    with pings.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "device_id", "lon", "lat", "accuracy_m", "segments"])
        w.writerows(rows)
    camp = tmp_path / "campaigns.yaml"
    camp.write_text(CAMPAIGNS)
    return {"pings": pings, "campaigns": camp, "out": tmp_path / "out"}


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_backtest_replays_the_log_and_counts_caps(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings", str(world["pings"]),
               "--out", str(world["out"]), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    stats = {c["campaign_id"]: c for c in report["campaigns"]}
    # dev-1 enters at 08:00, 08:50, 09:40, 10:30 UTC: fires, cooldown 45m passed -> fires, daily cap 2 -> blocked,
    # blocked again; dev-3 enters at 21:00 UTC (22:00 Paris): held by quiet hours until 08:00
    assert stats["coffee"]["matched"] == 5
    assert stats["coffee"]["offers"] == 3 and stats["coffee"]["held"] == 1
    assert stats["coffee"]["blocked"] == {"per_device 2/1d calendar": 2}
    assert stats["mall-dwell"]["offers"] == 1 and stats["mall-dwell"]["devices"] == 1
    assert stats["bye"]["offers"] == 1 and stats["bye"]["audience"] == 5  # only dev-2 is silver
    assert report["offers"] == 5 and report["held"] == 1
    assert report["events"]["enter"] == report["events"]["exit"] == 6

    events = read_jsonl(world["out"] / "events.jsonl")
    offers = read_jsonl(world["out"] / "offers.jsonl")
    decisions = read_jsonl(world["out"] / "decisions.jsonl")
    assert len(events) == sum(report["events"].values())
    assert {"kind", "device_id", "place", "ts"} <= set(events[0])
    assert len(offers) == 5 and len({o["offer_id"] for o in offers}) == 5
    titles = {(o["campaign_id"], o["title"]) for o in offers}
    assert ("coffee", "Welcome to Café Lune") in titles and ("mall-dwell", "Still at Galerie after 10 min?") in titles
    held = [o for o in offers if o["deliver_after"] is not None]
    assert [(o["device_id"], o["deliver_time"]) for o in held] == [("dev-3", "2026-03-10T07:00:00Z")]
    assert len(decisions) == len(events)
    assert all(o["ts"] >= T0 - 300 for o in offers)


def test_backtest_table(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings", str(world["pings"])]) == 0
    out = capsys.readouterr().out
    header, _rule, coffee, *_ = out.splitlines()
    assert header.split()[:9] == ["campaign", "matched", "offers", "held", "holdout", "dropped", "schedule", "audience", "outranked"]
    assert coffee.split()[:9] == ["coffee", "5", "3", "1", "0", "0", "0", "0", "0"]
    assert "per_device 2/1d calendar: 2" in coffee
    assert "offers: 5 to 3 devices (1 held by quiet hours)" in out


def test_backtest_is_deterministic(world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for out in ("a", "b"):
        assert main(["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings",
                     str(world["pings"]), "--out", str(tmp_path / out), "--slice", "30"]) == 0
    for name in ("events.jsonl", "offers.jsonl", "decisions.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def test_backtest_slices_do_not_change_what_happens(world: dict[str, Path], tmp_path: Path) -> None:
    outs = []
    for s in ("15", "60", "600"):
        assert main(["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings",
                     str(world["pings"]), "--out", str(tmp_path / s), "--slice", s]) == 0
        outs.append(sorted((o["campaign_id"], o["device_id"], o["ts"]) for o in read_jsonl(tmp_path / s / "offers.jsonl")))
    assert outs[0] == outs[1] == outs[2]


def test_backtest_runs_the_services_presence_rules_from_its_config(world: dict[str, Path], tmp_path: Path) -> None:
    """``--config`` takes the ``engine:`` settings of a ``proximity serve`` file: in the one-fix ``crossing``
    profile with a GPS enter waiting for a confirming fix 2 minutes later, each visit's enter comes at least
    120 s after the one-fix enter."""
    crossing = tmp_path / "crossing.yaml"
    crossing.write_text("port: 9000\nengine:\n  profile: crossing\n")
    service = tmp_path / "service.yaml"
    service.write_text("port: 9000\nengine:\n  profile: crossing\n  gps_enter_confirm_s: 120\n  dwell_s: 600\n")
    for name, extra in (("plain", ["--config", str(crossing)]), ("service", ["--config", str(service)])):
        assert main(["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings",
                     str(world["pings"]), "--out", str(tmp_path / name), *extra]) == 0
    enters = {name: [(e["device_id"], e["place"], e["ts"]) for e in read_jsonl(tmp_path / name / "events.jsonl")
                     if e["kind"] == "enter"] for name in ("plain", "service")}
    assert len(enters["plain"]) == len(enters["service"]) == 6  # four café visits, one mall, one late café
    for (dev, place, t_plain), (dev2, place2, t_confirmed) in zip(sorted(enters["plain"]), sorted(enters["service"]),
                                                                  strict=True):
        assert (dev, place) == (dev2, place2) and 120 <= t_confirmed - t_plain <= 150


def test_backtest_config_errors_name_the_place(world: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    service = tmp_path / "service.yaml"
    service.write_text("port: 9000\nengine:\n  gps_enter_confirm: 120\n")
    args = ["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings", str(world["pings"])]
    assert main([*args, "--config", str(service)]) == 2
    assert (f"{service}:2:1: engine: unknown setting 'gps_enter_confirm'; did you mean 'gps_enter_confirm_s'?"
            in capsys.readouterr().err)
    assert main([*args, "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: No such file or directory" in capsys.readouterr().err


def test_backtest_rejects_bad_campaigns_with_every_problem(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bad = world["campaigns"].with_name("bad.yaml")
    bad.write_text(CAMPAIGNS.replace("tags: [coffee]", "tags: [cofee]").replace("dwell: 10m", "dwell: 10 min"))
    assert main(["campaigns", "backtest", str(bad), "--fences", str(FENCES), "--pings", str(world["pings"])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"{bad}:8:33: ") and "did you mean 'coffee'" in err[0]
    assert err[1].startswith(f"{bad}:12:33: ") and "bad duration" in err[1]


def test_sightings_need_a_registry(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings", str(world["pings"]),
                 "--sightings", str(world["pings"])]) == 2
    assert "--sightings needs --beacons" in capsys.readouterr().err


def test_backtest_with_beacon_sightings(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    sightings = world["pings"].with_name("sightings.csv")
    key = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/9/1"
    with sightings.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "observer_id", "key", "rssi", "tx_power"])
        for k in range(6):  # dev-1 at the café's till during its first visit, 2-3 m from the beacon
            w.writerow([T0 + 240 + 10 * k, "dev-1", key, -66, ""])
    camp = world["campaigns"]
    camp.write_text(CAMPAIGNS + """
  - id: till
    priority: 50
    trigger: {on: beacon, zones: [checkout], proximity: near}
    offer: {title: "Pay at the {zone} of {store.name}", data: {zone: "{zone}"}}
""")
    rc = main(["campaigns", "backtest", str(camp), "--fences", str(FENCES), "--pings", str(world["pings"]),
               "--sightings", str(sightings), "--beacons", str(DATA / "replay" / "district-beacons.yaml"),
               "--out", str(world["out"]), "--json"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["sightings"] == 6
    offers = read_jsonl(world["out"] / "offers.jsonl")
    till = [o for o in offers if o["campaign_id"] == "till"]
    assert [(o["device_id"], o["place"], o["title"], o["data"]) for o in till] == [
        ("dev-1", "cafe-1#checkout", "Pay at the checkout of Café Lune", {"zone": "checkout"})
    ]
    events = read_jsonl(world["out"] / "events.jsonl")
    zone_events = [(e["kind"], e["place"]) for e in events if e.get("zone")]
    assert zone_events[0] == ("enter", "cafe-1#checkout") and ("exit", "cafe-1#checkout") in zone_events
    # the store itself is entered once per visit, whatever the evidence (no double enter from the beacon)
    first_visit = [e for e in events if e["place"] == "cafe-1" and e["device_id"] == "dev-1" and e["ts"] < T0 + 1200]
    assert [e["kind"] for e in first_visit if e["kind"] != "dwell"] == ["enter", "exit"]


# ------------------------------------------------------------ the bundled demo

EXAMPLES = Path(__file__).parents[2] / "proximity" / "examples"
DEMO = ["campaigns", "backtest", str(EXAMPLES / "campaigns.yaml"), "--fences", str(EXAMPLES / "fences.geojson"),
        "--pings", str(EXAMPLES / "pings.csv")]


def test_the_bundled_demo_is_worth_showing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's first command: several campaigns fire, caps bite, quiet hours hold offers, audiences refuse."""
    assert main([*DEMO, "--json", "--out", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    stats = {c["campaign_id"]: c for c in report["campaigns"]}
    assert sum(1 for c in stats.values() if c["offers"] > 0) >= 4
    assert sum(c["held"] for c in stats.values()) >= 2 and report["held"] >= 2
    assert {cap for c in stats.values() for cap in c["blocked"]}  # some cap bites on the real visits
    # the one-fix crossing profile enters far more often (walk-bys, visits split by jitter): every kind of cap bites
    crossing = tmp_path / "crossing.yaml"
    crossing.write_text("engine:\n  profile: crossing\n")
    assert main([*DEMO, "--json", "--config", str(crossing)]) == 0
    one_fix = json.loads(capsys.readouterr().out)
    blocked = {cap for c in one_fix["campaigns"] for cap in c["blocked"]}
    assert {"per_device 1/1d calendar", "per_device 1/12h", "budget per_day 3"} <= blocked
    assert any(cap.startswith("global per_device") for cap in blocked)
    assert sum(one_fix["events"].values()) > 2 * sum(report["events"].values())
    assert sum(c["audience"] for c in stats.values()) > 0 and sum(c["schedule"] for c in stats.values()) > 0
    assert stats["winter-sale-paused"]["offers"] == 0 and stats["winter-sale-paused"]["paused"] > 0
    # without --out the table is printed and nothing is written
    assert main(DEMO) == 0
    out = capsys.readouterr().out
    assert out.startswith("campaign ") and "nothing written: add --out DIR" in out
    # what --out wrote: the fields
    events = read_jsonl(tmp_path / "events.jsonl")
    offers = read_jsonl(tmp_path / "offers.jsonl")
    assert len(events) == sum(report["events"].values()) and len(offers) == report["offers"]
    assert all({"kind", "device_id", "place", "ts"} <= set(e) for e in events)
    assert all({"offer_id", "campaign_id", "device_id", "place", "ts", "title", "body"} <= set(o) for o in offers)
    assert not any("{" in o["title"] for o in offers)  # every placeholder rendered
    opted_out = "dev-012"  # pings.csv marks it opt_out=true
    assert opted_out in {e["device_id"] for e in events} and opted_out not in {o["device_id"] for o in offers}


@pytest.mark.parametrize(
    ("row", "where", "what"),
    [
        ("not-a-time,dev-1,2.35,48.85,8", ":3:1: ", "timestamp 'not-a-time'"),
        ("1773043230,dev-1,2.35", ":3:1: ", "expected 5 fields"),
        ("1773043230,dev-1,2.35,north,8", ":3:", "lat must be a number"),
    ],
)
def test_bad_ping_rows_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, where: str,
                                          what: str) -> None:
    pings = tmp_path / "pings.csv"
    pings.write_text(f"ts,device_id,lon,lat,accuracy_m\n1773043200,dev-1,2.35,48.85,8\n{row}\n")
    camp = tmp_path / "c.yaml"
    camp.write_text(CAMPAIGNS)
    assert main(["campaigns", "backtest", str(camp), "--fences", str(FENCES), "--pings", str(pings)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{pings}{where}") and what in captured.err, captured.err


def test_bad_sighting_rows_name_file_and_line(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    sightings = world["pings"].with_name("sightings.csv")
    sightings.write_text("ts,observer_id,key,rssi,tx_power\n1773043200,dev-1,ibeacon:nope,-60,\n")
    assert main(["campaigns", "backtest", str(world["campaigns"]), "--fences", str(FENCES), "--pings",
                 str(world["pings"]), "--sightings", str(sightings), "--beacons",
                 str(DATA / "replay" / "district-beacons.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{sightings}:2") and "ibeacon" in err
