"""Scenario YAML: the bundled default loads; every bad setting is reported with file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.errors import SimError
from sim.scenario import DEFAULT_SCENARIO, Scenario, load_scenario, scenario_to_dict


def test_bundled_default_loads_and_has_the_issue_targets_settings() -> None:
    sc = load_scenario()
    assert sc.source == str(DEFAULT_SCENARIO)
    assert sc.gps.sigma_m == 15.0 and sc.gps.interval_s == 30.0
    assert sc.stores.beacons == "small+shops"
    assert "gps-only" in sc.variants
    assert sc.variant("gps-only").ble.enabled is False
    assert sc.variant("gps-only").name == "gps-only"
    assert scenario_to_dict(sc)["gps"]["sigma_m"] == 15.0


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    sc = load_scenario(p)
    assert sc.gps == Scenario().gps and sc.devices == Scenario().devices


def err(text: str, tmp_path: Path) -> SimError:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SimError) as info:
        load_scenario(p)
    assert info.value.source == str(p)
    return info.value


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    e = err("devices: 10\ngps:\n  sigma: 5\n", tmp_path)
    assert (e.line, e.col) == (3, 3)
    assert "gps.sigma" in e.message and "did you mean 'sigma_m'" in e.message
    assert str(e).startswith(f"{e.source}:3:3: ")


def test_wrong_type_points_at_the_value(tmp_path: Path) -> None:
    e = err("gps:\n  sigma_m: fifteen\n", tmp_path)
    assert (e.line, e.col) == (2, 12) and e.field == "gps.sigma_m"


def test_out_of_range(tmp_path: Path) -> None:
    e = err("hours: 2\ngps:\n  dropout: 1.5\n", tmp_path)
    assert e.line == 3 and "between" in e.message


def test_bad_pair_and_bad_choice(tmp_path: Path) -> None:
    assert err("mobility:\n  walk_speed_mps: [2, 1]\n", tmp_path).line == 2
    e = err("stores:\n  beacons: some\n", tmp_path)
    assert e.line == 2 and "small" in e.message


def test_bad_yaml_syntax(tmp_path: Path) -> None:
    e = err("gps: [1, 2\n", tmp_path)
    assert e.line is not None and "invalid YAML" in e.message


def test_unknown_role_and_time_zone_and_start(tmp_path: Path) -> None:
    assert "did you mean 'shopper'" in err("mobility:\n  roles: {shoper: 1}\n", tmp_path).message
    assert err("city:\n  timezone: Mars/Olympus\n", tmp_path).line == 2
    assert err("start: yesterday\n", tmp_path).line == 1


def test_bad_variant_is_reported_at_load_time(tmp_path: Path) -> None:
    e = err("variants:\n  fast:\n    gps.sigma: 3\n", tmp_path)
    assert e.line == 3 and "did you mean 'sigma_m'" in e.message
    sc = load_scenario("variants:\n  fast:\n    gps.sigma_m: 3\n")
    assert sc.variant("fast").gps.sigma_m == 3.0
    with pytest.raises(SimError, match="did you mean 'fast'"):
        sc.variant("fats")


def test_overrides_are_typed() -> None:
    sc = Scenario().with_overrides({"gps.sigma_m": 10, "ble.enabled": False, "engine.gps_debounce_s": 90})
    assert sc.gps.sigma_m == 10.0 and sc.ble.enabled is False and sc.engine == {"gps_debounce_s": 90}
    with pytest.raises(SimError):
        Scenario().with_overrides({"ble.enabled": "no"})


def test_missing_file() -> None:
    with pytest.raises(SimError, match="no such scenario file"):
        load_scenario("/nonexistent/scenario.yaml")


def test_unknown_size_class_in_fence_properties(tmp_path: Path) -> None:
    e = err("stores:\n  properties:\n    smal: {max_accuracy_m: 5}\n", tmp_path)
    assert (e.line, e.col) == (3, 5) and "did you mean 'small'" in e.message


def test_fence_properties_by_size_class_and_for_beacon_stores() -> None:
    from sim.world import build_world

    sc = load_scenario().with_overrides({"stores.properties": {"medium": {"max_accuracy_m": 33}},
                                         "stores.beacon_store_properties": {"max_accuracy_m": 1}})
    w = build_world(sc)
    props = {f["id"]: f["properties"] for f in w.to_geojson()["features"]}
    with_beacons = {w.ids[b.store] for b in w.beacons}
    assert with_beacons and {str(w.size_class[w.ids.index(f)]) for f in with_beacons} == {"small", "shop"}
    for i, fid in enumerate(w.ids):
        want = 33 if w.size_class[i] == "medium" else 1 if fid in with_beacons else None
        assert props[fid].get("max_accuracy_m") == want, fid
    # without beacon readings (GPS only) the beacon stores are plain GPS fences again
    off = build_world(sc.with_overrides({"ble.enabled": False}))
    assert all(f["properties"].get("max_accuracy_m") in (None, 33) for f in off.to_geojson()["features"])


def test_bad_tracker_setting_is_a_sim_error() -> None:
    from sim.runner import EngineFeeder, simulate

    sc = load_scenario().with_overrides({"devices": 2, "hours": 0.2, "tracker": {"near": 3}})
    with pytest.raises(SimError) as info:
        EngineFeeder(simulate(sc))
    assert info.value.field == "tracker" and "near" in info.value.message
