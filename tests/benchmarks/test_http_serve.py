"""What the HTTP benchmarks share: a server's CPU is read from a quiet start to a quiet end (never a timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from benchmarks._http_serve import _cpu_seconds, cores_busy, machine_seconds, settle, start_baseline

#: burns 0.6 s of its own CPU, then sleeps (quiet) for 20 s
BUSY_THEN_QUIET = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6:\n    pass\n"
                   "time.sleep(20)\n")


def test_settle_counts_the_cpu_until_the_process_is_quiet() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY_THEN_QUIET])
    try:
        used = settle([child.pid], limit=50.0)
        assert child.poll() is None  # it came back on the quiet, not at the child's end (20 s) nor the limit
        assert used >= 0.5  # the busy part was counted (a few ms of start-up may come before the first reading)
        assert _cpu_seconds([child.pid]) is not None
        assert settle([child.pid]) < 0.1  # quiet already: back at once, with next to nothing
    finally:
        child.kill()
        child.wait()


def test_the_machine_counts_a_busy_child_among_its_busy_cores() -> None:
    """A child that burns 0.6 s of CPU in the window makes at least that share of the window's cores busy."""
    cores = os.cpu_count() or 1
    assert cores_busy((10.0, 100.0), (15.0, 110.0)) == 0.5 * cores  # 5 of all cores' 10 s busy
    assert cores_busy(None, (1.0, 2.0)) != cores_busy(None, (1.0, 2.0))  # NaN: unknown
    before = machine_seconds()
    if before is None:
        pytest.skip("no /proc/stat here")
    child = subprocess.Popen([sys.executable, "-c", BUSY_THEN_QUIET])
    try:
        while _cpu_seconds([child.pid]) is not None and (_cpu_seconds([child.pid]) or 0.0) < 0.6:
            pass  # (this loop is busy too: it only adds to what is measured)
        after = machine_seconds()
    finally:
        child.kill()
        child.wait()
    assert after is not None and after[0] - before[0] >= 0.55
    assert 0 < cores_busy(before, after) <= cores + 1e-9


def test_settle_without_the_process_counts_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert settle([child.pid]) == 0.0


def test_the_peer_that_cannot_start_is_an_error_not_a_hang(tmp_path: Path) -> None:
    # its port file's folder does not exist: the child fails writing it and exits
    with pytest.raises(RuntimeError, match="did not start: exit code 1"):
        start_baseline(tmp_path / "missing" / "baseline.port")


def test_the_peer_answers_where_it_says(tmp_path: Path) -> None:
    proc, url = start_baseline(tmp_path / "baseline.port")
    try:
        req = urllib.request.Request(url + "/v1/pings", data=b'{"pings": [1, 2, 3]}', method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read()) == {"accepted": 3}
    finally:
        proc.kill()
        proc.join()
