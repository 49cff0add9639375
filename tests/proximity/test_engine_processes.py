"""Two real engine processes sharing one Redis, fed the same devices, produce each event exactly once."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proximity.batch import PingBatch
from proximity.engine import Engine, EngineConfig
from proximity.events import Event
from proximity.store import MemoryStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import _workers  # noqa: E402

T0 = 1_700_000_000.0


def ping_log(seed: int, devices: int = 40, minutes: int = 40) -> list[list[dict[str, Any]]]:
    """Devices walking between the workers' stores, a ping every 15 s; batches of 60 s of everyone."""
    rng = np.random.default_rng(seed)
    spots = [(dx, dy) for _, dx, dy, _ in _workers.FENCES] + [(150, 150), (-200, 0)]
    rows = []
    for d in range(devices):
        here = spots[rng.integers(len(spots))]
        for k in range(minutes * 4):
            if rng.random() < 0.04:
                here = spots[rng.integers(len(spots))]
            acc = float(rng.choice([5.0, 10.0, 20.0, 60.0]))
            dx, dy = here[0] + rng.normal(0, 8), here[1] + rng.normal(0, 8)
            rows.append({"device_id": f"dev-{d:03d}", "ts": T0 + 15 * k + rng.uniform(0, 5),
                         "lon": _workers.LON0 + dx * _workers.M_LON, "lat": _workers.LAT0 + dy * _workers.M_LAT,
                         "accuracy_m": acc})
    rows.sort(key=lambda r: r["ts"])
    batches: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        batches[int((r["ts"] - T0) // 60)].append(r)
    return [batches[k] for k in sorted(batches)]


def run_workers(tmp_path: Path, redis_url: str, prefix: str, inputs: list[Any]) -> list[Event]:
    return _workers.run_workers(HERE / "_workers.py", tmp_path, redis_url, prefix, inputs)


def oracle(batches: list[list[dict[str, Any]]]) -> list[Event]:
    from geofence import FenceIndex

    eng = Engine(FenceIndex(_workers.fences()), store=MemoryStore(), config=EngineConfig(max_future_skew_s=None, profile="crossing"))
    out: list[Event] = []
    for rows in batches:
        out.extend(eng.process_pings(PingBatch.from_rows(rows)).events)
    return out


def canon(events: list[Event]) -> list[tuple[Any, ...]]:
    return sorted((e.device_id, e.place, e.ts, e.kind, e.dwell_s, e.cause) for e in events)


@pytest.mark.redis
@pytest.mark.slow
def test_two_processes_given_the_same_batches_emit_each_event_once(tmp_path: Path, redis_url: str,
                                                                 redis_prefix: str) -> None:
    batches = ping_log(seed=1)
    expected = oracle(batches)
    assert len(expected) > 50
    got = run_workers(tmp_path, redis_url, redis_prefix, [batches, batches])
    assert canon(got) == canon(expected)  # nothing twice, nothing missing


@pytest.mark.redis
@pytest.mark.slow
def test_two_processes_splitting_interleaved_evidence_never_duplicate(tmp_path: Path, redis_url: str,
                                                                     redis_prefix: str) -> None:
    rng = np.random.default_rng(2)
    batches = ping_log(seed=3)
    halves: list[list[list[dict[str, Any]]]] = [[], []]
    for rows in batches:  # each minute's pings dealt at random to the two processes, same devices in both
        pick = rng.integers(0, 2, len(rows))
        for k in (0, 1):
            halves[k].append([r for r, p in zip(rows, pick, strict=True) if p == k])
    got = run_workers(tmp_path, redis_url, redis_prefix, halves)
    assert got
    by_place: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in sorted(got, key=lambda e: (e.ts, {"exit": 0, "enter": 1, "dwell": 2}[e.kind])):
        by_place[(e.device_id, e.place)].append(e)
    for evs in by_place.values():
        inside = False
        fired: set[float] = set()
        for e in evs:
            if e.kind == "enter":
                assert not inside, f"second enter without exit: {e}"
                inside, fired = True, set()
            elif e.kind == "exit":
                assert inside, f"exit without enter: {e}"
                inside = False
            else:
                assert inside and e.dwell_s not in fired, f"dwell twice or outside a visit: {e}"
                fired.add(e.dwell_s)
