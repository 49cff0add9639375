"""ProximityTracker: both sighting shapes resolve, the rest is dropped and counted, ranging is stateful."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import (
    PROXIMITY_NAMES,
    BeaconError,
    ProximityTracker,
    Sightings,
    load_registry,
    read_sightings_csv,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "proximity" / "examples"
FLEET = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
APP = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"
REGISTRY = load_registry(EXAMPLES / "beacons.yaml")


def rows(*items):
    return Sightings.from_rows([dict(zip(("observer", "key", "rssi", "tx_power", "ts"), it, strict=True))
                                for it in items])


def test_phone_and_gateway_shapes_resolve() -> None:
    s = rows(
        ("dev-001", f"ibeacon:{FLEET}/1/1", -59, -59, 10.0),           # phone saw the store-01 entrance beacon
        ("gw-store-02", f"ibeacon:{APP}/0/4", -65, -70, 10.0),          # gateway heard dev-004's app advert
        ("gw-store-03", "altbeacon:0f1e2d3c4b5a69788796a5b4c3d2e1f000010001", -80, -60, 11.0),  # tag
        ("dev-009", "ibeacon:11111111-2222-3333-4444-555555555555/9/9", -70, -59, 11.0),     # unknown beacon
        ("gw-store-01", f"ibeacon:{FLEET}/1/2", -60, -61, 12.0),        # gateway heard a fixed beacon
        ("gw-store-01", "ibeacon:11111111-2222-3333-4444-555555555555/9/9", -70, -59, 12.0),  # unknown advertiser
    )
    t = ProximityTracker(REGISTRY)
    z = t.update(s)
    assert z.row.tolist() == [0, 1, 2]
    assert z.device_id.tolist() == ["dev-001", "dev-004", "tag-0001"]
    assert z.fence_id.tolist() == ["store-01", "store-02", "store-03"]
    assert z.zone.tolist() == ["entrance", "checkout", None]
    # power: registry calibration wins (-59 beacon, -65 app rule); the tag has none -> advertised -60
    np.testing.assert_allclose(z.distance_m, [1.0, 1.0, 10.0])
    assert [PROXIMITY_NAMES[p] for p in z.proximity] == ["near", "near", "far"]
    assert z.proximity.dtype == np.int8 and z.row.dtype == np.int64 and z.ts.dtype == np.float64
    assert t.stats["unknown_beacon"] == 1
    assert t.stats["gateway_heard_beacon"] == 1
    assert t.stats["unknown_advertiser"] == 1
    assert t.stats["resolved"] == 3 and t.stats["sightings"] == 6


def test_the_adverts_of_passers_by_are_not_remembered() -> None:
    """A gateway hears every advert around it: the tracker keeps what it learnt of the registry's keys only,
    so a stream of unknown keys leaves nothing behind (and they resolve as unknown every time)."""
    t = ProximityTracker(REGISTRY)
    for batch in range(20):
        t.resolve(rows(*[("gw-store-01", f"ibeacon:11111111-2222-3333-4444-{batch:012d}/{i}/1", -70, -59, 10.0)
                         for i in range(50)], ("dev-001", f"ibeacon:{FLEET}/1/1", -59, -59, 10.0)))
    assert list(t._key_info) == [f"ibeacon:{FLEET}/1/1"]
    assert t.stats["unknown_advertiser"] == 1000 and t.stats["resolved"] == 20


def test_unknown_power_gives_unknown_class() -> None:
    t = ProximityTracker(REGISTRY)
    z = t.update(rows(("dev-002", "eddystone:edd1ebeac04e5defa017/000003000001", -70, None, 1.0)))
    assert np.isnan(z.distance_m[0]) and PROXIMITY_NAMES[z.proximity[0]] == "unknown"


def test_filter_state_persists_across_batches() -> None:
    key = f"ibeacon:{FLEET}/1/1"
    t = ProximityTracker(REGISTRY, filter="arma")
    t.update(rows(("dev-001", key, -60, None, 1.0)))
    z = t.update(rows(("dev-001", key, -70, None, 2.0), ("dev-002", key, -70, None, 2.0)))
    np.testing.assert_allclose(z.rssi, [-61.0, -70.0])


@given(st.lists(st.tuples(st.sampled_from(["dev-001", "dev-002", "gw-store-01", "gw-store-02", "x"]),
                          st.sampled_from([f"ibeacon:{FLEET}/1/1", f"ibeacon:{FLEET}/2/2", f"ibeacon:{APP}/0/5",
                                           "eddystone:edd1ebeac04e5defa017/000003000002",
                                           "ibeacon:11111111-2222-3333-4444-555555555555/9/9"]),
                          st.integers(-100, -30), st.sampled_from([None, -59]), st.integers(0, 100)),
                max_size=60))
@settings(max_examples=100, deadline=None)
def test_vectorised_resolution_matches_a_per_row_oracle(items) -> None:
    s = rows(*[(o, k, r, p, float(ts)) for o, k, r, p, ts in items])
    z = ProximityTracker(REGISTRY, filter="arma", arma_coefficient=1.0).update(s)  # c=1: no smoothing
    expected = []
    for i, (o, k, r, p, _) in enumerate(items):
        gw = REGISTRY.gateway(o)
        if gw is not None:
            adv = REGISTRY.advertiser(k)
            if adv is None:
                continue
            place, device, power = (gw.fence_id, gw.zone), adv[0], adv[1]
        else:
            b = REGISTRY.beacon(k)
            if b is None:
                continue
            place, device, power = (b.fence_id, b.zone), o, b.power_1m
        power = p if power is None else power
        dist = None if power is None else 10 ** ((power - r) / 20)
        expected.append((i, device, *place, dist))
    got = [(int(i), d, f, zn, None if np.isnan(m) else pytest.approx(m))
           for i, d, f, zn, m in zip(z.row, z.device_id, z.fence_id, z.zone, z.distance_m, strict=True)]
    assert got == expected


def test_example_sightings_csv() -> None:
    s = read_sightings_csv(EXAMPLES / "sightings.csv")
    t = ProximityTracker(REGISTRY)
    z = t.update(s)
    assert set(z.device_id) == {"dev-001", "dev-002", "dev-004"}
    assert t.stats["unknown_beacon"] == 1
    # dev-001 ends closer to the checkout than to the entrance
    last = {zone: d for dev, zone, d in zip(z.device_id, z.zone, z.distance_m, strict=True) if dev == "dev-001"}
    assert last["checkout"] < last["entrance"]


def test_sightings_from_rows_names_row_and_field() -> None:
    with pytest.raises(BeaconError) as info:
        Sightings.from_rows([{"observer": "a", "key": f"ibeacon:{FLEET}/1/1", "rssi": -50, "ts": 1},
                             {"observer": "a", "key": f"ibeacon:{FLEET}/1/1", "rssi": "loud", "ts": 1}])
    assert (info.value.row, info.value.field) == (1, "rssi")


def test_sightings_csv_errors_name_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("ts,observer_id,key,rssi,tx_power\n1,a,ibeacon:" + FLEET + "/1/1,-50,\n2,a,nokey,-50,\n",
                 encoding="utf-8")
    with pytest.raises(BeaconError) as info:
        read_sightings_csv(p)
    assert (info.value.line, info.value.col, info.value.field) == (3, 3, "key")


@pytest.mark.parametrize("kind", ["trimmed", "arma"])
def test_forget_erases_a_device_as_observer_and_as_advertiser(kind: str) -> None:
    beacon = f"ibeacon:{FLEET}/1/1"
    t = ProximityTracker(REGISTRY, filter=kind)
    t.update(rows(("dev-001", beacon, -60, None, 1.0), ("dev-002", beacon, -80, None, 1.0),
                  ("gw-store-01", f"ibeacon:{APP}/0/1", -50, None, 1.0),
                  ("gw-store-01", f"ibeacon:{APP}/0/2", -50, None, 1.0)))
    assert len(t.filter.pairs()) == 4
    assert t.forget("dev-001") == 2  # its phone's view of the beacon, and the gateway's view of its advert
    assert len(t.filter.pairs()) == 2
    # it starts afresh: the first sample seeds the filter again, the others keep their state
    z = t.update(rows(("dev-001", beacon, -70, None, 2.0), ("dev-002", beacon, -70, None, 2.0)))
    assert z.rssi[0] == -70.0 and z.rssi[1] != -70.0
