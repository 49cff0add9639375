"""8 real processes hammer one device and one campaign on Redis: exactly the cap gets through."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HAMMER = Path(__file__).parent / "_hammer.py"
ROOT = Path(__file__).parents[2]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["0", "1"], ids=["one-script", "cluster-mode"])
@pytest.mark.parametrize(("device_cap", "budget"), [(13, 1000), (1000, 9)], ids=["device-cap-binds", "budget-binds"])
def test_eight_processes_issue_exactly_the_cap(
    redis_url: str, redis_prefix: str, cluster: str, device_cap: int, budget: int
) -> None:
    start_at = time.time() + 2.0  # every process starts hammering at the same moment
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HAMMER), redis_url, redis_prefix, cluster, "60", str(start_at), str(device_cap), str(budget)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        for _ in range(8)
    ]
    counts = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            counts.append(int(out.strip()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sum(counts) == min(device_cap, budget), counts
    assert sum(1 for c in counts if c > 0) >= 1
