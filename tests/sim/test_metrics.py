"""The metrics on hand-made tracks and event lists: every definition checked where it can go wrong."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics import EventColumns, Truth, score
from sim.mobility import ACT_DRIVE, ACT_INDOOR, ACT_PARKED, ACT_STILL, ACT_WALK, Episodes, Segments, Visits

START = 1_800_000_000.0
STORES = ["s-small", "s-medium", "mall", "mall-shop"]
SIZE = np.asarray(["small", "medium", "mall", "shop"], dtype=object)
MALL_OF = np.asarray([-1, -1, -1, 2])
DEVICES = ["d0", "d1", "d2"]


class Event(NamedTuple):
    """The attributes of ``proximity.events.Event`` the metrics read (they take any such object)."""

    kind: str
    device_id: str
    fence_id: str
    ts: float
    zone: str | None
    dwell_s: float
    source: str
    cause: str = "ping"
    confidence: int = 2


def segs(rows: list[tuple[int, float, float, int, int]]) -> Segments:
    """(device, t0, t1, act, place) rows; positions do not matter to the metrics."""
    rows = sorted(rows)
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    n = len(a)
    z = np.zeros(n)
    return Segments(device=a[:, 0].astype(np.int64), t0=a[:, 1], t1=a[:, 2], x0=z, y0=z, x1=z, y1=z,
                    act=a[:, 3].astype(np.int8), place=a[:, 4].astype(np.int64),
                    outer=np.where(a[:, 4] == 3, 2, -1).astype(np.int64), target=np.full(n, -1, dtype=np.int64))


def visits(rows: list[tuple[int, int, float, float]]) -> Visits:
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return Visits(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], a[:, 3])


def episodes(rows: list[tuple[int, int, float, float, str]]) -> Episodes:
    return Episodes(
        np.asarray([r[0] for r in rows], dtype=np.int64), np.asarray([r[1] for r in rows], dtype=np.int64),
        np.asarray([r[2] for r in rows], dtype=np.float64), np.asarray([r[3] for r in rows], dtype=np.float64),
        np.asarray([r[4] for r in rows], dtype=object),
    )


def truth(vis: Visits, walk_drive: Episodes | None = None, parked: Episodes | None = None,
          seg: Segments | None = None, end: float = 20_000.0) -> Truth:
    empty = episodes([])
    return Truth(
        visits=vis, walk_drive=walk_drive or empty, parked=parked or empty,
        segments=seg or segs([(d, 0.0, end, ACT_STILL, -1) for d in range(len(DEVICES))]),
        size_class=SIZE, mall_of=MALL_OF, device_sigma_m=np.asarray([10.0, 15.0, 25.0]), end_s=end, dwell_s=120.0,
    )


def ev(kind: str, dev: int, store: int, t: float, zone: str | None = None, dwell: float = 0.0,
       cause: str = "ping", confidence: int = 2) -> Event:
    return Event(kind=kind, device_id=DEVICES[dev], fence_id=STORES[store], ts=START + t, zone=zone,
                 dwell_s=dwell, source="beacon" if zone else "gps", cause=cause, confidence=confidence)


def run(tr: Truth, events: list[Event], **kw: float) -> dict:
    cols = EventColumns.from_events(events, {d: i for i, d in enumerate(DEVICES)},
                                    {s: i for i, s in enumerate(STORES)}, START)
    return score(tr, cols, **kw)


def test_perfect_detection_scores_one_and_latencies() -> None:
    tr = truth(visits([(0, 0, 1000, 1600), (1, 1, 2000, 2900)]))
    events = [ev("enter", 0, 0, 1020), ev("dwell", 0, 0, 1150, dwell=120), ev("exit", 0, 0, 1660),
              ev("enter", 1, 1, 2040), ev("dwell", 1, 1, 2180, dwell=120), ev("exit", 1, 1, 2990)]
    m = run(tr, events)
    assert m["visits"] == 2 and m["detected"] == 2
    assert m["recall"] == 1.0 and m["precision"] == 1.0
    assert m["false_enters"] == 0 and m["split_visit_enters"] == 0
    assert m["enter_latency_s"] == {"n": 2, "median": 30.0, "p90": pytest.approx(38.0)}
    assert m["dwell_latency_s"]["median"] == 45.0  # 30 s and 60 s after the 120 s threshold
    assert m["exit_latency_s"]["n"] == 2 and m["missed_exits"] == 0


def test_dwell_latency_is_measured_after_the_dwell_threshold() -> None:
    tr = truth(visits([(0, 0, 1000, 1600)]))
    m = run(tr, [ev("enter", 0, 0, 1010), ev("dwell", 0, 0, 1000 + 120 + 45, dwell=120), ev("exit", 0, 0, 1650)])
    assert m["dwell_latency_s"]["median"] == 45.0
    # a dwell event at another threshold (a campaign's 10 min) is not the fence's dwell
    m = run(tr, [ev("enter", 0, 0, 1010), ev("dwell", 0, 0, 1500, dwell=600), ev("exit", 0, 0, 1650)])
    assert m["dwell_latency_s"]["n"] == 0 and m["dwell_missed"] == 1


@pytest.mark.parametrize(("offset", "found"), [(-59.0, True), (-61.0, False), (0.0, True)])
def test_enter_tolerance_before_the_visit(offset: float, found: bool) -> None:
    tr = truth(visits([(0, 0, 1000, 1600)]))
    m = run(tr, [ev("enter", 0, 0, 1000 + offset)], tolerance_s=60.0)
    assert (m["detected"] == 1) is found
    assert m["precision"] == (1.0 if found else 0.0)


def test_enter_tolerance_after_the_visit_end() -> None:
    tr = truth(visits([(0, 0, 1000, 1600)]))
    assert run(tr, [ev("enter", 0, 0, 1659)])["detected"] == 1
    assert run(tr, [ev("enter", 0, 0, 1661)])["detected"] == 0


def test_wrong_store_or_device_is_not_a_detection() -> None:
    tr = truth(visits([(0, 0, 1000, 1600)]))
    m = run(tr, [ev("enter", 0, 1, 1100), ev("enter", 1, 0, 1100)])
    assert m["detected"] == 0 and m["false_enters"] == 2 and m["precision"] == 0.0


def test_split_visit_counts_one_true_and_one_false_enter() -> None:
    tr = truth(visits([(0, 0, 1000, 2000)]))
    m = run(tr, [ev("enter", 0, 0, 1030), ev("exit", 0, 0, 1300), ev("enter", 0, 0, 1400), ev("exit", 0, 0, 2050)])
    assert m["detected"] == 1 and m["enters"] == 2
    assert m["split_visit_enters"] == 1 and m["false_enters"] == 0
    assert m["precision"] == 0.5
    assert m["early_exits"] == 1  # the first exit came 700 s before the visit ended
    assert m["enter_latency_s"]["median"] == 30.0  # the first enter is the one that counts


def test_diagnosis_names_what_split_visits_and_what_false_enters_were() -> None:
    tr = truth(visits([(0, 0, 1000, 3000)]))
    m = run(tr, [ev("enter", 0, 0, 1030, confidence=3), ev("exit", 0, 0, 1300, cause="debounce"),
                 ev("enter", 0, 0, 1400, confidence=2), ev("exit", 0, 0, 1800, cause="ping"),
                 ev("enter", 0, 0, 1900, confidence=2), ev("exit", 0, 0, 3050, cause="ping"),
                 ev("enter", 0, 1, 1100, confidence=3)])
    d = m["diagnosis"]
    assert d["exits_inside_a_visit_by_cause"] == {"debounce/gps": 1, "ping/gps": 1}  # not the final exit
    assert d["false_enters_by_confidence"] == {"2": 2, "3": 1}  # two split-visit re-enters, one wrong store
    assert d["false_enters_by_source"] == {"gps": 3}


def test_two_visits_of_the_same_store_are_matched_separately() -> None:
    tr = truth(visits([(0, 0, 1000, 1300), (0, 0, 5000, 5400)]))
    m = run(tr, [ev("enter", 0, 0, 1010), ev("exit", 0, 0, 1350), ev("enter", 0, 0, 5050), ev("exit", 0, 0, 5450)])
    assert m["detected"] == 2 and m["precision"] == 1.0 and m["enter_latency_s"]["median"] == 30.0


def test_missed_and_late_exits() -> None:
    tr = truth(visits([(0, 0, 1000, 1600), (1, 1, 1000, 1600), (2, 0, 1000, 1600)]))
    m = run(tr, [ev("enter", 0, 0, 1010), ev("exit", 0, 0, 1650),  # on time
                 ev("enter", 1, 1, 1010),  # never exits
                 ev("enter", 2, 0, 1010), ev("exit", 2, 0, 1600 + 301)], exit_tolerance_s=300.0)  # too late
    assert m["exits_judged"] == 3 and m["missed_exits"] == 2


def test_visits_ending_near_the_end_of_the_run_are_not_judged_for_exits() -> None:
    tr = truth(visits([(0, 0, 19_000, 19_900)]), end=20_000.0)
    m = run(tr, [ev("enter", 0, 0, 19_010)], exit_tolerance_s=300.0)
    assert m["exits_judged"] == 0 and m["missed_exits"] == 0


def test_false_enters_are_attributed_to_what_the_device_was_doing() -> None:
    seg = segs([
        (0, 0, 1000, ACT_WALK, -1), (0, 1000, 2000, ACT_DRIVE, -1), (0, 2000, 3000, ACT_PARKED, -1),
        (0, 3000, 4000, ACT_INDOOR, 1), (0, 4000, 20_000, ACT_STILL, -1),
        (1, 0, 1000, ACT_INDOOR, 2), (1, 1000, 20_000, ACT_STILL, -1),
        (2, 0, 20_000, ACT_STILL, -1),
    ])
    walk_drive = episodes([(0, 0, 400, 600, "walk"), (0, 0, 1400, 1500, "drive"), (0, 1, 1400, 1500, "drive"),
                           (1, 3, 100, 200, "walk")])
    parked = episodes([(0, 0, 2000, 3000, "parked"), (2, 0, 100, 200, "parked")])
    tr = truth(visits([(0, 1, 3000, 4000)]), walk_drive=walk_drive, parked=parked, seg=seg)
    m = run(tr, [
        ev("enter", 0, 0, 500),  # walking by store 0
        ev("enter", 0, 0, 1450),  # driving by store 0
        ev("enter", 0, 0, 2500),  # parked outside store 0
        ev("enter", 0, 1, 3100),  # the real visit of store 1
        ev("enter", 0, 0, 3500),  # inside store 1: store 0 is a neighbour
        ev("enter", 1, 3, 150),  # in the mall's corridor, passing the shop
    ])
    assert m["true_enters"] == 1 and m["false_enters"] == 5
    assert m["false_enters_by_cause"] == {"walk_by": 2, "drive_by": 1, "parked": 1, "neighbour": 1, "other": 0}
    assert (m["walk_bys"], m["walk_by_false_enter_rate"]) == (2, 1.0)
    assert (m["drive_bys"], m["drive_by_false_enter_rate"]) == (2, 0.5)
    assert (m["parked_outside"], m["parked_false_enter_rate"]) == (2, 0.5)


def test_zone_events_are_counted_apart_from_store_events() -> None:
    tr = truth(visits([(0, 0, 1000, 1600)]))
    m = run(tr, [ev("enter", 0, 0, 1020, zone="entrance"), ev("enter", 0, 0, 1700, zone="checkout")])
    assert m["enters"] == 0 and m["detected"] == 0 and m["precision"] is None
    assert m["zones"] == {"events": 2, "enters": 2, "enters_during_a_visit_of_the_store": 1}


def test_by_size_and_by_accuracy_breakdowns() -> None:
    tr = truth(visits([(0, 0, 1000, 1600), (1, 0, 1000, 1600), (2, 1, 1000, 1600)]))
    m = run(tr, [ev("enter", 0, 0, 1010), ev("enter", 2, 1, 1010), ev("enter", 2, 1, 9000)])
    assert m["by_size"]["small"] == {"visits": 2, "detected": 1, "recall": 0.5, "enters": 1, "precision": 1.0,
                                     "enter_latency_s": {"n": 1, "median": 10.0, "p90": 10.0}}
    assert m["by_size"]["medium"] == {"visits": 1, "detected": 1, "recall": 1.0, "enters": 2, "precision": 0.5,
                                      "enter_latency_s": {"n": 1, "median": 10.0, "p90": 10.0}}
    bins = m["by_gps_accuracy"]
    assert sum(b["visits"] for b in bins) == 3 and sum(b["enters"] for b in bins) == 3
    worst = bins[-1]
    assert worst["sigma_hi_m"] == 25.0 and worst["recall"] == 1.0 and worst["precision"] == 0.5


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.floats(0, 5), st.floats(0.05, 0.9)),
                  min_size=1, max_size=25),
    n_false=st.integers(0, 10),
    seed=st.integers(0, 2**16),
)
def test_property_exact_detector_and_injected_false_enters(data: list, n_false: int, seed: int) -> None:
    """Visits laid end to end per (device, store); an enter inside each visit is found and true; enters far
    from any visit are false: precision = visits / (visits + false), recall = 1."""
    rng = np.random.default_rng(seed)
    clock: dict[tuple[int, int], float] = {}
    rows = []
    events = []
    for dev, store, gap, frac in data:
        t0 = clock.get((dev, store), 1000.0) + 200.0 + gap * 100.0
        t1 = t0 + 300.0 + gap * 50
        clock[(dev, store)] = t1
        rows.append((dev, store, t0, t1))
        events.append(ev("enter", dev, store, t0 + frac * (t1 - t0)))
        events.append(ev("exit", dev, store, t1 + 30.0))
    for _ in range(n_false):
        events.append(ev("enter", int(rng.integers(3)), int(rng.integers(4)), 50_000.0 + float(rng.uniform(0, 1000))))
    rng.shuffle(events)  # the metrics do not depend on the order of the events
    m = run(truth(visits(rows), end=60_000.0), events)
    assert m["recall"] == 1.0
    assert m["true_enters"] == len(rows) and m["false_enters"] == n_false
    assert m["precision"] == pytest.approx(len(rows) / (len(rows) + n_false), abs=1e-4)
    assert m["missed_exits"] == 0
