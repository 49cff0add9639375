"""Several ping batches through the engine as one: what :meth:`proximity.engine.Engine.process_ping_parts` needs.

The parts (e.g. small HTTP requests coalesced by :mod:`proximity.service.coalesce`) are stacked into one
batch whose ``row`` column is offset per part (part ``i``'s rows start at ``base[i]``), so the engine's
sort, fence match and presence kernels run once; the errors, counts and transitions are then split back
per part with each part's own row numbers. Parts never share a device (the engine refuses it), so every
device's evidence, state and events belong to exactly one part, and a part's answer is the one it gets alone.

Parts with a journal (a ``batch_id``) keep their own: the store is called once per journal (once for all
the parts without one), each call on the devices of its parts only, so each batch's journal holds exactly
its devices' entries, as when the batch runs alone.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from proximity.batch import PingBatch
from proximity.errors import ValidationError
from proximity.events import Event, Offer
from proximity.journal import Journal
from proximity.presence import DeviceNames, Evidence, Resolved, Transitions

#: up to this many pings, :func:`check_disjoint` counts (device, part) pairs in a Python set
SMALL_PARTS_CHECK = 64
_SHARED_DEVICE = ("process_ping_parts: two parts have pings of the same device; send them in separate calls, "
                  "in order")


def stack(parts: Sequence[PingBatch]) -> tuple[PingBatch, np.ndarray]:
    """The parts as one batch, rows offset so that they stay distinct, and each part's first row."""
    sizes = [int(p.row.max()) + 1 if len(p) else 0 for p in parts]
    base = np.zeros(len(parts), np.int64)
    np.cumsum(sizes[:-1], out=base[1:])
    shifted = [dataclasses.replace(p, row=p.row + b) for p, b in zip(parts, base.tolist(), strict=True)]
    return PingBatch.concat(shifted), base


def part_of(rows: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The part of each (offset) row."""
    return np.searchsorted(base, np.asarray(rows, np.int64), side="right") - 1


def split_errors(errors: Sequence[ValidationError], base: np.ndarray) -> list[list[ValidationError]]:
    """Each part's errors, renumbered to its own rows (order kept)."""
    out: list[list[ValidationError]] = [[] for _ in range(len(base))]
    if not errors:
        return out
    if len(base) == 1:
        out[0] = list(errors)
        return out
    rows = [e.row for e in errors]
    parts = part_of(np.array([-1 if r is None else r for r in rows], np.int64), base).tolist()
    starts = base.tolist()
    for e, r, p in zip(errors, rows, parts, strict=True):
        local = copy.copy(e)
        p = max(p, 0)
        local.row = None if r is None else r - starts[p]
        out[p].append(local)
    return out


def counts(part: np.ndarray, n_parts: int, where: np.ndarray | None = None) -> list[int]:
    """How many of ``part`` (optionally only where ``where``) fall in each part."""
    sel = part if where is None else part[where]
    return np.bincount(sel, minlength=n_parts).tolist()


_Owned = TypeVar("_Owned", Event, Offer)


def split_events(events: list[Event], k: int, ev_dev: np.ndarray, part_ev: np.ndarray, tr_dev: np.ndarray,
                 names: DeviceNames) -> tuple[list[list[Event]], dict[str, int]]:
    """Each part's events, in their order, and the part of each device with events (empty for one part).
    ``ev_dev``, ``part_ev``: each evidence row's device code and part; ``tr_dev``: the transitions' device codes;
    ``names[code]``: a device's id (only the devices with events are named: a name can cost a decode)."""
    if k == 1:
        return [events], {}
    if not events:  # (most calls of a steady stream: no device named)
        return [[] for _ in range(k)], {}
    part_of_code = np.zeros(int(ev_dev.max()) + 1 if len(ev_dev) else 0, np.int64)
    part_of_code[ev_dev] = part_ev  # (a device's rows are all in one part)
    codes = np.unique(tr_dev)
    owner = dict(zip(np.asarray(names[codes]).tolist(), part_of_code[codes].tolist(), strict=True))
    return split_by_device(events, owner, k), owner


def split_by_device(items: Sequence[_Owned], owner: Mapping[str, int], k: int) -> list[list[_Owned]]:
    """Each part's ``items`` (events or offers), in their order (``owner``: the part of each device, from
    :func:`split_events`)."""
    out: list[list[_Owned]] = [[] for _ in range(k)]
    for item in items:
        out[owner[item.device_id]].append(item)
    return out


def check_disjoint(codes: np.ndarray, part: np.ndarray) -> None:
    """Parts may not share a device: its pings would be split between two answers."""
    if len(codes) < 2:
        return
    if len(codes) <= SMALL_PARTS_CHECK:  # a set of (device, part) pairs in C: 1 us, the sort's array code 15 us
        code_list = np.asarray(codes, np.int64).tolist()
        if len(set(zip(code_list, np.asarray(part).tolist(), strict=True))) != len(set(code_list)):
            raise ValueError(_SHARED_DEVICE)
        return
    k = int(part.max()) + 1
    key = np.sort(np.asarray(codes, np.int64) * k + part)  # by device, then part (np.unique(axis=1): 5x slower)
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    dev = key[first] // k  # the device of each distinct (device, part) pair, in device order
    if (dev[1:] == dev[:-1]).any():
        raise ValueError(_SHARED_DEVICE)


Apply = Callable[[Resolved, Evidence, Journal | None], Transitions]


def apply_by_journal(apply: Apply, resolve: Callable[[np.ndarray], Resolved], res: Resolved, ev: Evidence,
                     part_ev: np.ndarray, journals: Sequence[Journal | None]
                     ) -> tuple[Transitions, np.ndarray | None, np.ndarray | None]:
    """Apply ``ev`` with one store call per journal (the parts without one together); returns the transitions
    (``dev`` in ``res``'s handles, ``ev`` into ``ev`` and past it into the replayed details) and the events'
    ``proximity`` and ``distance`` details (``None`` when no journal replayed anything)."""
    groups: dict[int, list[int]] = {}
    for i, j in enumerate(journals):
        groups.setdefault(id(j), []).append(i)
    status = np.zeros(len(ev), np.int8)
    out: list[Transitions] = []
    extra_p: list[np.ndarray] = []
    extra_d: list[np.ndarray] = []
    n_extra = 0
    names = res.names
    for members in groups.values():
        journal = journals[members[0]]
        idx = np.flatnonzero(np.isin(part_ev, members))
        if not len(idx):
            continue
        codes = np.unique(ev.dev[idx])
        own = resolve(np.asarray(names[codes], dtype=object))  # this group's devices only
        mask = np.zeros(int(ev.dev.max()) + 1, bool)
        mask[codes] = True
        sub = ev.take_devices(mask)
        sub.dev = own.codes[np.searchsorted(codes, sub.dev)]
        tr = apply(own, sub, journal)
        status[idx] = tr.status
        back = np.argsort(own.codes, kind="stable")
        tr.dev = codes[back[np.searchsorted(own.codes[back], tr.dev)]]
        e = tr.ev.copy()
        fresh, replayed = (e >= 0) & (e < len(sub)), e >= len(sub)
        e[fresh] = idx[e[fresh]]
        e[replayed] = len(ev) + n_extra + (e[replayed] - len(sub))
        tr.ev = e
        if journal is not None and len(journal.extra_proximity):
            extra_p.append(journal.extra_proximity)
            extra_d.append(journal.extra_distance)
            n_extra += len(journal.extra_proximity)
        out.append(tr)
    tr = Transitions.concat(out)
    tr.status = status
    if not n_extra:
        return tr, None, None
    return (tr, np.concatenate([np.zeros(len(ev), np.int8), *extra_p]),
            np.concatenate([np.full(len(ev), np.nan), *extra_d]))


__all__ = ["apply_by_journal", "check_disjoint", "counts", "part_of", "split_errors", "stack"]
