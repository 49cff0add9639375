"""Proximity engine: presence (enter, dwell, exit) from GPS pings and BLE sightings, and the service around it.

>>> from geofence import FenceIndex, circle_fence
>>> from proximity import Engine, PingBatch
>>> engine = Engine(FenceIndex([circle_fence("cafe", 2.35, 48.85, 30.0)]))
>>> t = [1.7e9 + 30 * k for k in range(8)]               # a phone streaming a fix every 30 s
>>> r = engine.process_pings(PingBatch.from_arrays(["d1"] * 8, [2.35] * 8, [48.85] * 8, 5.0, t))
>>> [(e.kind, e.fence_id, round(e.probability, 2)) for e in r.events]
[('enter', 'cafe', 0.94)]

The engine (:class:`Engine`, :class:`EngineConfig`, :class:`BatchResult`) takes
columnar batches (:class:`PingBatch`; beacon sightings from ``beacons``), keeps
presence in a state store (:class:`MemoryStore`, :func:`RedisStore`) and hands
:class:`Event` values to campaign rules, which answer with :class:`Offer` values.
Errors: :class:`ProximityError`, :class:`ValidationError` (with where: source,
line, col, field, row), :class:`StateError`, :class:`StoreUnavailable`. The
HTTP service is :mod:`proximity.service`. Names are imported on first use, so
``import proximity.events`` (what ``campaigns`` uses) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proximity.batch import PingBatch
    from proximity.engine import BatchResult, Engine, EngineConfig, Rules
    from proximity.errors import ProximityError, StateError, StoreUnavailable, ValidationError
    from proximity.events import Device, Event, Offer
    from proximity.store import MemoryStore, RedisStore, StateStore

__version__ = "0.1.0.dev0"

_HOME = {
    "BatchResult": "proximity.engine",
    "Device": "proximity.events",
    "Engine": "proximity.engine",
    "EngineConfig": "proximity.engine",
    "Event": "proximity.events",
    "MemoryStore": "proximity.store",
    "Offer": "proximity.events",
    "PingBatch": "proximity.batch",
    "ProximityError": "proximity.errors",
    "RedisStore": "proximity.store",
    "Rules": "proximity.engine",
    "StateError": "proximity.errors",
    "StateStore": "proximity.store",
    "StoreUnavailable": "proximity.errors",
    "ValidationError": "proximity.errors",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'proximity' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "BatchResult",
    "Device",
    "Engine",
    "EngineConfig",
    "Event",
    "MemoryStore",
    "Offer",
    "PingBatch",
    "ProximityError",
    "RedisStore",
    "Rules",
    "StateError",
    "StateStore",
    "StoreUnavailable",
    "ValidationError",
]
