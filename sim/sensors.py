"""What the phones report: GPS pings and BLE beacon sightings, from the true tracks.

GPS: a fix every ``interval_s`` while walking, in a store or parked,
``drive_interval_s`` while driving, ``still_interval_s`` at home or at work
(the SDKs slow down when nothing moves), with jitter and dropouts (more
indoors). The error is a first-order Gauss-Markov process per device and axis
(real GPS error drifts, it is not white noise) whose 68 % radius is
``sigma_m`` outdoors, times the device's quality factor, times
``indoor_factor`` indoors. The accuracy the phone *reports* is itself
imperfect: the true radius times a log-normal factor, biased low indoors.

BLE: while a phone is within ``range_m`` of a beacon it scans every
``scan_interval_s``; RSSI follows the log-distance path-loss model with the
beacon's true 1 m power, log-normal shadowing and a wall loss when phone and
beacon are not in the same store; weak or unlucky packets are not heard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim._kernels import gauss_markov, sample_clock, segments_near_boxes
from sim.mobility import ACT_DRIVE, ACT_STILL, ACT_STOPPED, Population
from sim.scenario import Scenario
from sim.world import World

R68 = 1.515  # the 68 % radius of a circular 2-D Gaussian, in units of its per-axis sigma


@dataclass
class Pings:
    """GPS fixes of every device, sorted by time (columnar), with the truth behind each."""

    device: np.ndarray  # int64 index into Population.device_ids
    ts: np.ndarray  # epoch seconds
    lon: np.ndarray
    lat: np.ndarray
    accuracy_m: np.ndarray  # what the phone reports
    speed: np.ndarray  # m/s, noisy
    true_x: np.ndarray
    true_y: np.ndarray
    error_m: np.ndarray  # the true horizontal error
    segment: np.ndarray  # int64 index of the true segment

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray | slice) -> Pings:
        return Pings(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


@dataclass
class Sightings:
    """Beacon sightings reported by phones (observer = the device), sorted by time."""

    device: np.ndarray  # int64
    beacon: np.ndarray  # int64 index into World.beacons
    rssi: np.ndarray
    tx_power: np.ndarray
    ts: np.ndarray
    distance_m: np.ndarray  # the true distance

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray | slice) -> Sightings:
        return Sightings(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def gps_pings(world: World, pop: Population, scenario: Scenario | None = None) -> Pings:
    """What the phones report of their true tracks: GPS pings with the scenario's noise and accuracy model."""
    sc = scenario or world.scenario
    g = sc.gps
    rng = np.random.default_rng([sc.seed, 3])
    seg = pop.segments
    interval = np.full(len(seg), g.interval_s)
    interval[np.isin(seg.act, (ACT_DRIVE, ACT_STOPPED))] = g.drive_interval_s
    interval[seg.act == ACT_STILL] = g.still_interval_s
    t, si = sample_clock(seg.device, seg.t0, seg.t1, interval, g.interval_jitter, int(rng.integers(2**31)))
    indoor = (seg.place[si] >= 0) | (seg.act[si] == ACT_STILL)
    keep = rng.random(len(t)) >= np.where(indoor, g.indoor_dropout, g.dropout)
    t, si, indoor = t[keep], si[keep], indoor[keep]
    dev = seg.device[si]
    order = np.lexsort((t, dev))
    t, si, indoor, dev = t[order], si[order], indoor[order], dev[order]
    x, y = seg.position(si, t)
    sigma = g.sigma_m / R68 * pop.gps_quality[dev] * np.where(indoor, g.indoor_factor, 1.0)
    nx = gauss_markov(dev, t, g.correlation_s, rng.standard_normal(len(t)))
    ny = gauss_markov(dev, t, g.correlation_s, rng.standard_normal(len(t)))
    ex, ey = sigma * nx, sigma * ny
    reported = R68 * sigma * np.exp(rng.normal(0.0, g.accuracy_noise, size=len(t)))
    reported *= np.where(indoor, g.indoor_accuracy_bias, 1.0)
    reported = np.maximum(np.round(reported, 1), 3.0)
    speed = np.maximum(seg.speed()[si] + rng.normal(0.0, g.speed_noise_mps, size=len(t)), 0.0)
    lon, lat = world.frame.to_lonlat(x + ex, y + ey)
    ts = sc.start_ts + t
    by_time = np.argsort(ts, kind="stable")
    out = Pings(device=dev, ts=ts, lon=lon, lat=lat, accuracy_m=reported, speed=np.round(speed, 2),
                true_x=x, true_y=y, error_m=np.hypot(ex, ey), segment=si)
    return out.take(by_time)


def ble_sightings(world: World, pop: Population, scenario: Scenario | None = None) -> Sightings:
    """What the phones' SDKs report of the store beacons they pass: sightings with the scenario's RSSI model."""
    sc = scenario or world.scenario
    b = sc.ble
    empty = Sightings(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0), np.empty(0))
    if not b.enabled or not world.beacons:
        return empty
    rng = np.random.default_rng([sc.seed, 4])
    seg = pop.segments
    bx = np.asarray([be.x for be in world.beacons])
    by = np.asarray([be.y for be in world.beacons])
    s_idx, _b_idx, _u0, _u1 = segments_near_boxes(seg.x0, seg.y0, seg.x1, seg.y1, bx, by, bx, by, b.range_m)
    if len(s_idx) == 0:
        return empty
    # the phone scans on its own clock while some beacon is in range of the segment it is on
    interval = np.zeros(len(seg))
    interval[np.unique(s_idx)] = b.scan_interval_s
    t, si = sample_clock(seg.device, seg.t0, seg.t1, interval, 0.1, int(rng.integers(2**31)))
    x, y = seg.position(si, t)
    place = seg.place[si]
    power = np.asarray([be.true_power_1m for be in world.beacons])
    store = np.asarray([be.store for be in world.beacons])
    out_dev, out_b, out_rssi, out_t, out_d = [], [], [], [], []
    chunk = 200_000
    for c in range(0, len(t), chunk):
        xs, ys, ts, ps = x[c:c + chunk], y[c:c + chunk], t[c:c + chunk], place[c:c + chunk]
        d = np.hypot(xs[:, None] - bx[None, :], ys[:, None] - by[None, :])
        near = d <= b.range_m
        rows, cols = np.nonzero(near)
        dd = np.maximum(d[rows, cols], 0.3)
        rssi = power[cols] - 10.0 * b.path_loss_exponent * np.log10(dd)
        rssi = rssi + rng.normal(0.0, b.shadowing_db, size=len(rows))
        rssi -= np.where(ps[rows] == store[cols], 0.0, b.wall_loss_db)
        heard = (rssi >= b.sensitivity_dbm) & (rng.random(len(rows)) < b.detect_prob)
        rows, cols = rows[heard], cols[heard]
        out_dev.append(seg.device[si[c:c + chunk]][rows])
        out_b.append(cols)
        out_rssi.append(np.round(rssi[heard]))
        out_t.append(ts[rows])
        out_d.append(dd[heard])
    ts_all = sc.start_ts + np.concatenate(out_t)
    order = np.argsort(ts_all, kind="stable")
    beacon = np.concatenate(out_b).astype(np.int64)[order]
    tx = np.asarray([be.tx_power_1m for be in world.beacons])[beacon]
    return Sightings(
        device=np.concatenate(out_dev).astype(np.int64)[order],
        beacon=beacon,
        rssi=np.concatenate(out_rssi)[order],
        tx_power=tx,
        ts=ts_all[order],
        distance_m=np.concatenate(out_d)[order],
    )
