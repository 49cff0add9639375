"""The on-disk spool: ordered, survives reopening, bounded (oldest dropped and reported), tolerates debris."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacons.spool import Spool


def body(i: int, n: int = 2) -> dict:
    return {"gateway_id": "g", "batch_id": f"b{i}", "sent_at": 0, "sightings": [{"i": i}] * n}


@pytest.mark.parametrize("on_disk", [True, False])
def test_order_and_bounds(tmp_path: Path, on_disk: bool) -> None:
    s = Spool(tmp_path if on_disk else None, max_batches=3)
    drops = [s.append(body(i)) for i in range(5)]
    assert [d.batches for d in drops] == [0, 0, 0, 1, 1]
    assert sum(d.sightings for d in drops) == 4
    seen = []
    while (item := s.peek()) is not None:
        seen.append(item[1]["batch_id"])
        s.remove(item[0])
    assert seen == ["b2", "b3", "b4"]
    assert len(s) == 0 and s.size_bytes == 0


def test_survives_reopen_and_ignores_torn_files(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    for i in range(3):
        s.append(body(i))
    (tmp_path / "0000000000000099.tmp").write_text("partial")
    s2 = Spool(tmp_path)
    assert len(s2) == 3 and s2.pending_sightings == 6
    s2.append(body(3))
    order = []
    while (item := s2.peek()) is not None:
        order.append(item[1]["batch_id"])
        s2.remove(item[0])
    assert order == ["b0", "b1", "b2", "b3"]
    assert not list(tmp_path.iterdir())


def test_byte_bound(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=300)
    total = sum(s.append(body(i, n=5)).sightings for i in range(10))
    assert s.size_bytes <= 300 and total == 5 * (10 - len(s))


def test_damaged_and_foreign_files_are_set_aside_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Spool(tmp_path)
    for i in range(3):
        s.append(body(i))
    (tmp_path / "0000000000000001.json").write_text('{"sightings": 3}')   # damaged in place
    (tmp_path / "0000000000000007.json").write_text("[1, 2")              # torn, highest number
    (tmp_path / "notes.json").write_text("{}")                            # not the spool's
    with caplog.at_level("WARNING", logger="beacons.spool"):
        s2 = Spool(tmp_path)
        assert [seq for seq, _ in s2.waiting()] == [0, 2]
        s2.append(body(3))                                                # numbered after the torn file
        (tmp_path / "0000000000000002.json").write_text("garbage")
        order = []
        while (item := s2.peek()) is not None:
            order.append(item[1]["batch_id"])
            s2.remove(item[0])
    assert order == ["b0", "b3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0000000000000001.bad", "0000000000000002.bad", "0000000000000007.bad", "notes.json"]
    assert sum("0000000000000007" in r.getMessage() for r in caplog.records) == 1
    assert sum("batch 2 " in r.getMessage() for r in caplog.records) == 1


def test_the_batch_in_flight_is_never_dropped() -> None:
    s = Spool(None, max_batches=2)
    s.append(body(0))
    s.in_flight = 0
    dropped = [s.append(body(i)).batches for i in range(1, 4)]
    assert dropped == [0, 1, 1]
    assert [item["batch_id"] for item in (s.peek() or (0, {}))[1:]] == ["b0"]
    assert [seq for seq, _ in s.waiting()] == [0, 3]
