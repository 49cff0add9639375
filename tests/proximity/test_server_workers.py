"""Real ``proximity serve`` processes: three workers on one Redis give what one process gives; --workers N."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.proximity import _serve_workers as sw

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_three_workers_on_redis_equal_one_process(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    paths = sw.write_scenario(tmp_path)
    batches = sw.ping_batches(time.time())
    assert len(batches) >= 12
    with sw.workers(paths, 3, redis=redis_url, prefix=redis_prefix) as urls:
        assert len(set(urls)) == 3
        pids = {sw.request(u, "GET", "/healthz")[1]["pid"] for u in urls}
        assert len(pids) == 3
        multi_events, multi_offers = sw.play(urls, batches)
    with sw.workers(paths, 1) as urls:
        single_events, single_offers = sw.play(urls, batches)
    # the scenario really exercises enters, exits, offers and a campaign budget that runs out
    kinds = {e[1] for e in single_events}
    assert {"enter", "exit"} <= kinds
    welcome = [o for o in single_offers if o[1] == "welcome"]
    assert len(welcome) == 7  # budget total 7, although every device enters
    assert len({e[0] for e in single_events if e[1] == "enter"}) > 7
    assert multi_events == single_events
    assert multi_offers == single_offers


def test_workers_option_shares_one_port_and_stops_gracefully(tmp_path: Path, redis_url: str,
                                                             redis_prefix: str) -> None:
    paths = sw.write_scenario(tmp_path)
    proc, url = sw.start_worker(paths, redis=redis_url, prefix=redis_prefix, workers=3)
    try:
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 3 and time.monotonic() < deadline:
            status, body = sw.request(url, "GET", "/healthz")
            assert status == 200
            pids.add(body["pid"])
        assert len(pids) == 3, pids  # the kernel spreads connections over the three workers
        batches = sw.ping_batches(time.time(), devices=4, steps=8)
        events, _ = sw.play([url], batches)
        assert events
    finally:
        code = sw.stop_worker(proc)
    assert code == 0


def test_more_than_one_worker_needs_redis(tmp_path: Path) -> None:
    paths = sw.write_scenario(tmp_path)
    with pytest.raises(RuntimeError, match="exited"):
        sw.start_worker(paths, workers=2, timeout=30)
