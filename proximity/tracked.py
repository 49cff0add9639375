"""Beacon batches whose RSSI filtering runs inside the store's transaction.

A beacon tracker's filter state (``beacons.ranging.FilterState``) is kept per
device next to the device's presence state: in the memory store's process, or
in Redis under ``P:{D}:tr`` (the device's hash slot, see
:mod:`proximity._redis.store`), loaded with the presence state in one round
trip and saved by the same script call that compare-and-sets it. So a
device's scans may land on any engine sharing the store and are filtered as by
one engine.

The engine hands the store a :class:`Tracked`: ``build(state)`` runs the
filter on the devices' loaded state (rows keyed by the store's device handles,
``Resolved.codes``) and turns the batch into evidence (:class:`Built`). A
Redis store whose compare-and-set loses for some devices reloads them and
builds again; a device's rows of ``build`` depend only on its own state and
sightings, so the devices that won get the same evidence every time, and
:func:`remap` renumbers the events of every attempt into the last one's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from proximity.presence import Evidence, Transitions


class ZoneRows(NamedTuple):
    """Zone sightings as the engine takes them (the columns of ``beacons.ZoneSightings`` it reads)."""

    device_id: np.ndarray
    fence_id: np.ndarray
    zone: np.ndarray
    proximity: np.ndarray
    distance_m: np.ndarray
    ts: np.ndarray
    row: np.ndarray


@dataclass
class Built:
    """A beacon batch as evidence: ``zrow`` is the batch row (``0 .. n_rows - 1``) of each evidence row,
    ``prox``/``dist`` its proximity class and distance, ``dup`` the duplicate rows left out, ``state`` the
    filter state after the batch (rows keyed by the store's device handles; ``None``: no filter)."""

    ev: Evidence
    zrow: np.ndarray
    prox: np.ndarray
    dist: np.ndarray
    dup: int
    state: Any = None


@dataclass
class Tracked:
    """``build(filter state of the batch's devices) -> Built``; ``n_rows`` bounds ``Built.zrow``."""

    build: Callable[[Any], Built]
    n_rows: int


def by_row(built: Built, n_rows: int, values: np.ndarray, fill: Any) -> np.ndarray:
    """``values`` (one per evidence row of ``built``) placed at their batch rows (``fill`` elsewhere)."""
    out = np.full(n_rows, fill, dtype=np.asarray(values).dtype)
    out[built.zrow] = values
    return out


def remap(tr: Transitions, final: Built, n_rows: int) -> None:
    """Events whose ``ev`` is a batch row (``0 .. n_rows - 1``) or a replayed index (``n_rows + i``) get the
    index of that row in ``final.ev`` (replayed ones: ``len(final.ev) + i``), in place."""
    ev = tr.ev
    inv = np.full(n_rows, -1, np.int64)
    inv[final.zrow] = np.arange(len(final.zrow))
    row = (ev >= 0) & (ev < n_rows)
    extra = ev >= n_rows
    ev[row] = inv[ev[row]]
    ev[extra] = ev[extra] - n_rows + len(final.zrow)


__all__ = ["Built", "Tracked", "ZoneRows", "by_row", "remap"]
