"""One process of the cap concurrency test: decide the same stream of events as 7 other processes.

Every process runs the real decider (:class:`campaigns.CampaignRules`) on a shared
:class:`campaigns.RedisLimiter`, once with one Lua call per offer and once in
cluster mode, and prints how many distinct offers it was granted per scenario
(a JSON object ``{"<scenario>:<mode>": count}``). Each scenario has its own device,
fence and campaign, and a different cap binds in each (see ``EXPECTED``).

Usage: python _hammer.py REDIS_URL PREFIX INDEX ATTEMPTS BASE_TS PROCESSES [MODE,...]
(on a Redis Cluster only ``cluster-mode`` applies: one script cannot span a device's and a campaign's slots)
"""

from __future__ import annotations

import json
import sys
import time

from campaigns import CampaignRules, FenceInfo, RedisLimiter, loads_campaigns
from proximity.events import Device, Event

CAMPAIGNS = """
defaults:
  limits: {per_device: {max: 11, window: 24h}}
campaigns:
  - id: c-device
    trigger: {on: enter, fences: [f-device]}
    offer: {title: a}
    limits: {per_device: [{max: 7, window: 1h}, {max: 9, window: 1d, kind: calendar}]}
  - id: c-global
    trigger: {on: enter, fences: [f-global]}
    offer: {title: b}
  - id: c-budget
    trigger: {on: enter, fences: [f-budget]}
    offer: {title: c}
    limits: {budget: {total: 5}}
  - id: c-day
    trigger: {on: enter, fences: [f-day]}
    offer: {title: e}
    limits: {budget: {total: 100, per_day: 4}}
  - id: c-calendar
    trigger: {on: enter, fences: [f-calendar]}
    offer: {title: f}
    limits: {per_device: {max: 3, window: 1d, kind: calendar}}
  - id: c-cooldown
    trigger: {on: enter, fences: [f-cooldown]}
    offer: {title: d}
    limits: {cooldown: 1h}
"""
EXPECTED = {"device": 7, "global": 11, "budget": 5, "day": 4, "calendar": 3, "cooldown": 1}
MODES = {"one-script": False, "cluster-mode": True}


def main() -> int:
    url, prefix, index, attempts, base_ts, processes = sys.argv[1:7]
    modes = {m: MODES[m] for m in (sys.argv[7].split(",") if len(sys.argv) > 7 else MODES)}
    fences = {f"f-{s}": FenceInfo.create(f"f-{s}") for s in EXPECTED}
    campaign_set = loads_campaigns(CAMPAIGNS, fences=fences)
    rules = {
        mode: CampaignRules(campaign_set, fences, limiter=RedisLimiter(url, f"{prefix}:{mode}", cluster=cluster))
        for mode, cluster in modes.items()
    }
    devices = {f"d-{s}": Device(f"d-{s}") for s in EXPECTED}
    from campaigns import _redis

    client = _redis.connect(url)  # a cluster client on a cluster node
    client.incr(f"{prefix}:barrier")
    deadline = time.monotonic() + 60
    while int(client.get(f"{prefix}:barrier") or 0) < int(processes):  # start together
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.001)
    granted: dict[str, set[str]] = {f"{s}:{m}": set() for s in EXPECTED for m in modes}
    for i in range(int(attempts)):
        ts = float(base_ts) + i * 1e-3 + int(index) * 1e-5  # a distinct event per process and attempt
        for s in EXPECTED:
            event = Event(kind="enter", device_id=f"d-{s}", fence_id=f"f-{s}", ts=ts)
            for mode, r in rules.items():
                for offer in r.decide([event], devices, ts):
                    granted[f"{s}:{mode}"].add(offer.offer_id)
    print(json.dumps({k: len(v) for k, v in granted.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
