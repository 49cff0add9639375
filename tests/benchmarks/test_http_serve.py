"""What the HTTP benchmarks share: a server's CPU is read from a quiet start to a quiet end (never a timing)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
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


def test_the_machine_counts_busy_children_among_its_busy_cores() -> None:
    """Children that each burn 0.6 s of CPU in the window (one a core, up to 4) make at least that much of the
    machine's time busy: the busy seconds are told from the idle ones."""
    cores = os.cpu_count() or 1
    assert cores_busy((10.0, 100.0), (15.0, 110.0)) == 0.5 * cores  # 5 of all cores' 10 s busy
    assert math.isnan(cores_busy(None, (1.0, 2.0))) and math.isnan(cores_busy((1.0, 2.0), (1.0, 2.0)))
    before = machine_seconds()
    if before is None:
        pytest.skip("no /proc/stat here")
    children = [subprocess.Popen([sys.executable, "-c", BUSY_THEN_QUIET]) for _ in range(min(cores, 4))]
    try:
        deadline = time.monotonic() + 120  # a bound, not a timing: the children's 0.6 s of CPU come well before
        while (_cpu_seconds([c.pid for c in children]) or 0.0) < 0.6 * len(children) and time.monotonic() < deadline:
            time.sleep(0.01)
        after = machine_seconds()
    finally:
        for c in children:
            c.kill()
            c.wait()
    assert after is not None and after[0] - before[0] >= 0.55 * len(children)
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
