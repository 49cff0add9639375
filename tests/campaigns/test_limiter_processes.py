"""8 real processes decide events of one device and campaign on Redis: exactly the cap gets through.

Each process runs the real decider on a shared RedisLimiter (one Lua call per
offer, and cluster mode); a different cap binds in each scenario (per device per
campaign, global per device, campaign budget, cooldown per fence). The processes
start together (a Redis barrier) and interleave every scenario, so their
requests race on the same keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

HAMMER = Path(__file__).parent / "_hammer.py"
ROOT = Path(__file__).parents[2]
PROCESSES = 8
ATTEMPTS = 15  # per process and scenario: 120 tries against caps of 1 to 11


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_eight_processes_issue_exactly_the_cap(where: str, request: pytest.FixtureRequest) -> None:
    sys.path.insert(0, str(HAMMER.parent))
    try:
        from _hammer import EXPECTED, MODES
    finally:
        sys.path.remove(str(HAMMER.parent))
    if where == "cluster":  # a real 3-master cluster: the two-step protocol across the campaign's and devices' slots
        redis_url, redis_prefix, modes = request.getfixturevalue("redis_cluster_url"), f"pxtest-{uuid.uuid4().hex[:12]}", ["cluster-mode"]
    else:
        redis_url, redis_prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        modes = list(MODES)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = f"{time.time():.3f}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(HAMMER), redis_url, redis_prefix, str(k), str(ATTEMPTS), base, str(PROCESSES),
             ",".join(modes)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        for k in range(PROCESSES)
    ]
    totals: Counter[str] = Counter()
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            for key, n in json.loads(out).items():
                totals[key] += n
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    expected = {f"{s}:{m}": cap for s, cap in EXPECTED.items() for m in modes}
    assert dict(totals) == expected  # no more, no less, in every scenario and mode
