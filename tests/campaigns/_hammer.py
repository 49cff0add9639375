"""One process of the cap concurrency test: hammer one device and campaign, print how many offers got through.

Usage: python _hammer.py REDIS_URL PREFIX CLUSTER(0|1) ATTEMPTS START_AT DEVICE_CAP BUDGET
"""

from __future__ import annotations

import math
import os
import sys
import time

from campaigns import CapCheck, RedisLimiter


def main() -> int:
    url, prefix, cluster, attempts, start_at, device_cap, budget = sys.argv[1:8]
    limiter = RedisLimiter(url, prefix, cluster=cluster == "1")
    while time.time() < float(start_at):
        time.sleep(0.001)
    granted = 0
    for i in range(int(attempts)):
        now = time.time()
        checks = [
            CapCheck("per_device", "device", "dev-1", "c:camp:0", int(device_cap), now - 3600, 3600),
            CapCheck("global", "device", "dev-1", "g:0", 10_000, now - 86400, 86400),
            CapCheck("cooldown", "device", "dev-1", "cd:camp:store-01", 10_000, now - 60, 60),
            CapCheck("budget", "campaign", "camp", "total", int(budget), -math.inf, 0),
        ]
        if limiter.acquire(f"{os.getpid()}-{i}", checks, now).ok:
            granted += 1
    print(granted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
