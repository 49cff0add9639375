"""``proximity serve --replay-demo SPEED``: the bundled day of pings and sightings, replayed in a loop.

The demo's ``pings.csv`` and ``sightings.csv`` (one day in the example district)
go through the running engine as if phones and gateways sent them: every
``TICK_S`` the rows whose data time has come are taken, their timestamps mapped
onto the wall clock (``wall0 + (ts - t0) / SPEED``, so per-device order holds and
no timestamp is in the future), and processed on the engine thread like any
batch: presence, campaigns, offers, the live feed, the console's counters. At the
end of the day it starts again; the night and other lulls longer than ``GAP_S``
are cut short.

The gateways' ``capture.jsonl`` (beacon identities and Eddystone telemetry, 20
minutes) loops on its own at the same speed into the console's fleet page.

Presence timings (debounce, dwell) stay in wall-clock seconds: at SPEED 20 a
40-minute visit lasts two minutes, so it still fires its 2-minute dwell, and a
10-minute one does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import numpy as np

from proximity.service.render import render

log = logging.getLogger("proximity.replay")

TICK_S = 0.25
GAP_S = 300.0  # quiet data seconds kept: longer lulls are cut to this, and the day ends with one


class DemoReplay:
    def __init__(self, svc: Any, fleet: Any, speed: float, *, clock: Any = time.time) -> None:
        from beacons import read_sightings_csv
        from proximity.batch import PingBatch
        from proximity.service.config import example_path

        self.svc = svc
        self.fleet = fleet
        self.speed = float(speed)
        self.clock = clock
        pings = PingBatch.from_csv(example_path("pings.csv"))
        self.pings = pings.take(np.argsort(pings.ts, kind="stable"))
        sightings = read_sightings_csv(example_path("sightings.csv"))
        self.sightings = sightings.take(np.argsort(sightings.ts, kind="stable"))
        # quiet stretches of the day (no ping, no sighting for more than GAP_S) are skipped: replay time is
        # data time minus the skipped seconds before it
        every = np.sort(np.concatenate([self.pings.ts, self.sightings.ts]))
        skip = np.concatenate([[0.0], np.cumsum(np.maximum(np.diff(every) - GAP_S, 0.0))])
        self.pings_rt = self.pings.ts - np.interp(self.pings.ts, every, skip)
        self.sightings_rt = self.sightings.ts - np.interp(self.sightings.ts, every, skip)
        self.t0 = float(every[0] - skip[0])
        self.span = float(every[-1] - skip[-1]) - self.t0 + GAP_S
        self.loops = 0
        from beacons import read_capture

        self.capture = sorted(read_capture(example_path("capture.jsonl")), key=lambda r: r.ts)
        self.capture_ts = np.array([r.ts for r in self.capture])
        self.capture_span = float(self.capture_ts[-1] - self.capture_ts[0]) + 1.0 if len(self.capture) else 0.0

    def window(self, lo: float, hi: float, wall0: float) -> tuple[Any, Any]:
        """Pings and sightings with replay time in ``[lo, hi)``, their timestamps moved onto the wall clock."""
        out = []
        for data, rt in ((self.pings, self.pings_rt), (self.sightings, self.sightings_rt)):
            a, b = np.searchsorted(rt, [lo, hi], side="left")
            part = data.take(np.arange(a, b))
            out.append(dataclasses.replace(part, ts=wall0 + (rt[a:b] - self.t0) / self.speed))
        return out[0], out[1]

    def _process(self, pings: Any, sightings: Any) -> list[Any]:
        """On the engine thread: both parts through the engine, like a ping batch and a scan batch."""
        host = self.svc.host
        results = []
        if len(pings):
            results.append(host.engine.process_pings(pings))
            for listener in getattr(host, "ping_listeners", ()):
                listener(pings)
        if len(sightings) and getattr(host, "tracker", None) is not None:
            results.append(host.engine.process_sightings(sightings))
            self.fleet.observe(sightings.key, sightings.observer, sightings.rssi, sightings.ts)
            registry = host.registry
            for gid in set(sightings.observer.tolist()) & set(getattr(registry, "gateways", {})):
                self.fleet.heartbeat(gid, float(sightings.ts.max()))
        return results

    def _fleet_capture(self, lo: float, hi: float, wall0: float) -> None:
        """The gateways' capture (beacon identities and TLM telemetry) into the fleet page, as heard now."""
        if not self.capture:
            return
        c0 = self.capture_ts[0]
        a, b = np.searchsorted(self.capture_ts, [c0 + lo, c0 + hi], side="left")
        for rec in self.capture[a:b]:
            self.fleet.observe_record(rec, ts=wall0 + (rec.ts - c0) / self.speed)

    async def run(self) -> None:
        log.info("replaying the demo day (%.0f s of data) at %gx real time", self.span, self.speed)
        wall0 = cap_wall0 = self.clock()
        done = self.t0
        cap_done = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = self.clock()
            upto = min(self.t0 + (now - wall0) * self.speed, self.t0 + self.span)
            cap_upto = min((now - cap_wall0) * self.speed, self.capture_span)
            try:
                pings, sightings = self.window(done, upto, wall0)
                for result in await self.svc.host.run(self._process, pings, sightings):
                    await self.svc.publish(render(result))
                self._fleet_capture(cap_done, cap_upto, cap_wall0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a demo never takes the service down
                log.warning("demo replay step failed: %s", exc)
            done, cap_done = upto, cap_upto
            if done >= self.t0 + self.span:
                self.loops += 1
                wall0, done = now, self.t0
            if cap_done >= self.capture_span:  # the capture is short: it loops on its own
                cap_wall0, cap_done = now, 0.0


__all__ = ["DemoReplay"]
