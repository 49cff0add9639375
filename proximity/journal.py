"""The ingest journal: what a batch committed, per device, kept with the device's state.

A batch sent with a ``batch_id`` runs with a :class:`Journal`. Whenever a store
saves a device's new state for that batch, it also writes, *in the same atomic
step* (the same Lua script call for Redis, the same Python call for memory), the
device's transitions of that batch as one journal entry under the batch's key.
A retry of the batch (after a 503, a lost connection, a killed worker) then
reads the entries back: a device already committed is not applied again (its
evidence would only be dropped as already applied), its events are the ones
the first try produced. Campaign decisions are keyed by offer id (the limiter
and the outbox recognise a decision they already took), so the retry's offers
are the first try's offers too: the retry's answer equals what the first try
produced, however far the first try got.

Entries are fixed-size records (:data:`RECORD`), the transition arrays of
:class:`proximity.presence.Transitions` plus the beacon details of each event;
one entry per device, possibly empty (committed, no event). This module is pure
numpy: the stores do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import proximity._kernels as K
from proximity.presence import Transitions

#: one transition of one device, as kept in a journal entry
RECORD = np.dtype([("kind", "i1"), ("src", "i1"), ("conf", "i1"), ("cause", "i1"), ("prox", "i1"),
                   ("place", "<i4"), ("ev", "<i8"), ("ts", "<f8"), ("dwell", "<f8"), ("dist", "<f8"),
                   ("prob", "<f8")])


@dataclass
class Journal:
    """The journal of one batch: ``key`` (from the batch id), kept ``ttl_s`` seconds; ``proximity`` and
    ``distance`` (per evidence, beacon batches) are the details its events carry.

    After ``store.apply`` the store has set ``replayed`` (how many devices were answered from an earlier
    try) and ``extra_proximity``/``extra_distance``: the details of the replayed events, whose ``ev``
    index is ``len(evidence) + i`` for ``extra_*[i]``.
    """

    key: str
    ttl_s: float = 86400.0
    proximity: np.ndarray | None = None
    distance: np.ndarray | None = None
    replayed: int = 0
    extra_proximity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    extra_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def details(self, n_evidence: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``proximity`` and ``distance`` for ``to_events``, covering the replayed events too."""
        if self.proximity is None and not len(self.extra_proximity):
            return None, None
        prox = self.proximity if self.proximity is not None else np.zeros(n_evidence, np.int8)
        dist = self.distance if self.distance is not None else np.full(n_evidence, np.nan)
        return (np.concatenate([np.asarray(prox, np.int8)[:n_evidence], self.extra_proximity]),
                np.concatenate([np.asarray(dist, np.float64)[:n_evidence], self.extra_distance]))


def encode(tr: Transitions, n_devices: int, journal: Journal) -> list[bytes]:
    """Per device ``0 .. n_devices - 1`` (``tr.dev``), its transitions as one entry (``b""``: none)."""
    n = len(tr)
    rec = np.zeros(n, RECORD)
    for name in ("kind", "src", "conf", "cause", "place", "ev", "ts", "dwell", "prob"):
        rec[name] = getattr(tr, name)
    rec["dist"] = np.nan
    sighting = (tr.cause == K.CAUSE_SIGHTING) & (tr.ev >= 0)
    if sighting.any() and journal.proximity is not None:
        rec["prox"][sighting] = np.asarray(journal.proximity)[tr.ev[sighting]]
        if journal.distance is not None:
            rec["dist"][sighting] = np.asarray(journal.distance)[tr.ev[sighting]]
    order = np.lexsort((np.arange(n), tr.ev, tr.dev))
    buf = rec[order].tobytes()
    bounds = np.zeros(n_devices + 1, np.int64)
    np.cumsum(np.bincount(tr.dev, minlength=n_devices)[:n_devices], out=bounds[1:])
    bounds *= RECORD.itemsize
    b = bounds.tolist()
    return [buf[b[i] : b[i + 1]] for i in range(n_devices)]


def replay(devices: np.ndarray, entries: list[bytes], n_evidence: int, journal: Journal) -> Transitions:
    """The transitions kept in ``entries`` (``entries[i]`` of device ``devices[i]``), with ``ev`` renumbered past
    ``n_evidence`` (details in ``journal.extra_*``); ``journal.replayed`` counts the devices."""
    counts = np.fromiter(map(len, entries), np.int64, len(entries)) // RECORD.itemsize
    rec = np.frombuffer(b"".join(entries), RECORD)
    dev = np.repeat(np.asarray(devices, np.int64), counts)
    # one new evidence index per (device, first-try evidence): ties keep sorting the way they did
    new = np.ones(len(rec), bool)
    if len(rec) > 1:
        new[1:] = (dev[1:] != dev[:-1]) | (rec["ev"][1:] != rec["ev"][:-1])
    rank = np.cumsum(new) - 1
    base = len(journal.extra_proximity)
    ev = np.where(rec["ev"] >= 0, n_evidence + base + rank, -1).astype(np.int64)
    firsts = np.flatnonzero(new)
    journal.extra_proximity = np.concatenate([journal.extra_proximity, rec["prox"][firsts]])
    journal.extra_distance = np.concatenate([journal.extra_distance, rec["dist"][firsts]])
    journal.replayed += len(entries)
    return Transitions(rec["kind"].copy(), dev, rec["place"].copy(), rec["ts"].copy(), rec["src"].copy(),
                       rec["conf"].copy(), rec["dwell"].copy(), rec["cause"].copy(), ev, rec["prob"].copy(),
                       np.zeros(0, np.int8))


__all__ = ["RECORD", "Journal", "encode", "replay"]
