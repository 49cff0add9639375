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
