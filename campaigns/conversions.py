"""Exposures, visits and conversions as arrays.

An **exposure** is a decision that showed a campaign to a device, or would
have: an offer issued (``offer`` or ``held``) or a ``holdout`` decision. A
**visit** is a store-level enter of presence, with what the rest of its
events tell (how long it lasted, how probable it was).

A **conversion** of an exposure is the first qualifying visit after it:

- it starts strictly after the exposure (a visit in progress when the offer
  went out, such as the one that triggered it, does not count) and at most
  the campaign's ``conversion.within`` after it;
- at one of the campaign's conversion places (``conversion.visit`` fences or
  tags, else the trigger's; a campaign with neither converts at any fence);
- lasting at least ``min_dwell`` and, when events carry a ``probability``, at
  least ``min_probability`` likely (its highest probability counts).

An exposure converts at most once. When exposures overlap (several
campaigns, or one campaign twice), attribution decides who gets a visit that
is the first qualifying visit of several of them: ``"last"`` (the default)
gives it to the latest of them, so a visit converts one exposure at most;
``"each"`` lets every exposure convert with its own first qualifying visit
(each campaign measured as if alone).

Everything here takes integer codes (devices, fences, campaigns, arms) and
numpy columns; names live in the tables of :class:`Specs`. The loops are in
:mod:`campaigns._kernels`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from campaigns import _kernels as K
from campaigns.experiments import HOLDOUT
from campaigns.model import DEFAULT_CONVERSION_WINDOW_S, CampaignSet, FenceInfo

ATTRIBUTIONS = ("last", "each")
KIND_CODES = {"exit": K.EXIT, "enter": K.ENTER, "dwell": K.DWELL}


@dataclass(frozen=True, slots=True)
class Spec:
    """What a report needs to know of one campaign: its conversion rule and its experiment."""

    campaign_id: str
    name: str = ""
    places: frozenset[str] | None = None
    within_s: float = DEFAULT_CONVERSION_WINDOW_S
    min_dwell_s: float = 0.0
    min_probability: float = 0.0
    holdout: float = 0.0
    variants: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.campaign_id, "name": self.name,
            "places": None if self.places is None else sorted(self.places),
            "within_s": self.within_s, "min_dwell_s": self.min_dwell_s, "min_probability": self.min_probability,
            "holdout": self.holdout, "variants": list(self.variants),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Spec:
        places = d.get("places")
        return cls(
            campaign_id=str(d["id"]), name=str(d.get("name") or d["id"]),
            places=None if places is None else frozenset(str(p) for p in places),
            within_s=float(d.get("within_s", DEFAULT_CONVERSION_WINDOW_S)),
            min_dwell_s=float(d.get("min_dwell_s", 0.0)), min_probability=float(d.get("min_probability", 0.0)),
            holdout=float(d.get("holdout", 0.0)), variants=tuple(str(v) for v in d.get("variants") or ()),
        )


def specs_of(campaigns: CampaignSet, fences: Mapping[str, FenceInfo]) -> list[Spec]:
    """The report's view of each campaign (conversion places resolved against ``fences``)."""
    out = []
    for c in campaigns.campaigns:
        exp = c.experiment
        out.append(Spec(
            campaign_id=c.id, name=c.name, places=c.conversion_places(fences),
            within_s=c.conversion.within_s, min_dwell_s=c.conversion.min_dwell_s,
            min_probability=c.conversion.min_probability,
            holdout=exp.holdout if exp is not None else 0.0,
            variants=tuple(v.id for v in exp.variants) if exp is not None else (),
        ))
    return out


class _Columns:
    """Rows as parallel columns: the length is that of ``ts``."""

    __slots__ = ()
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, slots=True)
class Exposures(_Columns):
    """One row per exposure: campaign code, arm code (an index into the report's arm names, where
    ``"holdout"`` is the control group), device code, fence code (the store), time."""

    campaign: np.ndarray
    arm: np.ndarray
    device: np.ndarray
    fence: np.ndarray
    ts: np.ndarray


@dataclass(frozen=True, slots=True)
class Events(_Columns):
    """Store-level presence events: kind code (:data:`KIND_CODES`), device code, fence code, time,
    ``dwell_s``, and ``probability`` (NaN where an event carries none)."""

    kind: np.ndarray
    device: np.ndarray
    fence: np.ndarray
    ts: np.ndarray
    dwell_s: np.ndarray
    probability: np.ndarray


@dataclass(frozen=True, slots=True)
class Visits(_Columns):
    """Visits grouped by device (``starts[d]:starts[d+1]``), sorted by start within a device."""

    device: np.ndarray
    fence: np.ndarray
    ts: np.ndarray
    dwell_s: np.ndarray
    probability: np.ndarray
    closed: np.ndarray
    repeat: np.ndarray
    starts: np.ndarray


def _codes(values: np.ndarray, name: str) -> np.ndarray:
    codes = np.ascontiguousarray(values, dtype=np.int64)
    if len(codes) and codes.min() < 0:
        raise ValueError(f"{name} codes must not be negative")
    return codes


def n_devices(*columns: np.ndarray) -> int:
    """One more than the highest device code of the columns."""
    return int(max((int(c.max()) + 1 for c in columns if len(c)), default=0))


def visits_of(events: Events, n_dev: int) -> Visits:
    """The visits in ``events`` (see :func:`campaigns._kernels.build_visits`): from a log in time order
    without grouping its events (:func:`visits_in_time_order`), else by :func:`visits_by_grouping`."""
    cols = _event_columns(events, n_dev)
    visits = _visits_in_time_order(*cols, n_dev)
    return visits if visits is not None else _visits_by_grouping(*cols, n_dev)


_EventColumns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _event_columns(events: Events, n_dev: int) -> _EventColumns:
    """``device, fence, kind, ts, dwell_s, probability`` checked (codes not negative, devices below
    ``n_dev``); ``probability`` empty when no event carries one."""
    device = _codes(events.device, "device")
    if len(device) and int(device.max()) >= n_dev:
        raise ValueError("a device code is not below n_dev")
    fence = _codes(events.fence, "fence")
    prob = np.ascontiguousarray(events.probability, np.float64)
    has_prob = bool(len(prob)) and not bool(np.isnan(prob).all())
    return (device, fence, np.ascontiguousarray(events.kind), np.ascontiguousarray(events.ts, np.float64),
            np.ascontiguousarray(events.dwell_s, np.float64), prob if has_prob else prob[:0])


def visits_in_time_order(events: Events, n_dev: int) -> Visits | None:
    """The visits of a log in time order (as a log is written; ties of time in any order), with no
    grouping of its events; None when the log is not in time order (or has a device with more than
    :data:`campaigns._kernels.MAX_OPEN` visits open at once). The same visits, in the same order, as
    :func:`visits_by_grouping`."""
    return _visits_in_time_order(*_event_columns(events, n_dev), n_dev)


def visits_by_grouping(events: Events, n_dev: int) -> Visits:
    """The visits of any log: its events grouped by device and sorted by time within each."""
    return _visits_by_grouping(*_event_columns(events, n_dev), n_dev)


def _visits_in_time_order(device: np.ndarray, fence: np.ndarray, kind: np.ndarray, ts: np.ndarray,
                          dwell: np.ndarray, prob: np.ndarray, n_dev: int) -> Visits | None:
    enters = np.zeros(n_dev, np.int64)
    ties = K.scan_log(ts, kind, device, enters)
    if ties < 0:
        return None
    order = K.tie_order(ts, kind) if ties else np.empty(0, np.int64)
    v_starts = np.zeros(n_dev + 1, np.int64)
    np.cumsum(enters, out=v_starts[1:])
    n = int(v_starts[-1])
    link = np.int32 if n < 2**31 else np.int64
    out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64), np.empty(n, np.float64),
           np.empty(n, np.float64), np.zeros(n, np.bool_), np.zeros(n, np.bool_))
    n_fences = int(fence.max()) + 1 if len(fence) else 1
    if not K.visits_in_time_order(ts, kind, device, fence, dwell, prob, len(prob) > 0, v_starts,
                                  *out, n_fences, order, np.empty(n, link), np.full(n_dev, -1, link)):
        return None
    return Visits(*out, v_starts)


def _visits_by_grouping(device: np.ndarray, fence: np.ndarray, kind: np.ndarray, ts: np.ndarray,
                        dwell: np.ndarray, prob: np.ndarray, n_dev: int) -> Visits:
    # columns in the order of K.E_*; at one instant an exit (kind 0) closes before an enter (1) opens
    cols = [ts, kind, fence, dwell] + ([prob] if len(prob) else [])
    grouped, starts = K.group(device, cols, n_dev)
    K.sort_groups(grouped, starts)
    n_enters = int(np.count_nonzero(kind == K.ENTER))
    return Visits(*K.visits(grouped, starts, int(fence.max()) + 1 if len(fence) else 1, n_enters))


def conversions(exposures: Exposures, visits: Visits, specs: Sequence[Spec], fence_names: Sequence[str],
                *, attribution: str = "last") -> np.ndarray:
    """The index (into ``visits``) of the visit converting each exposure, -1 for none."""
    return match(exposures, visits, specs, fence_names, attribution=attribution).visit


@dataclass(frozen=True, slots=True)
class Matched:
    """What :func:`match` found: ``visit`` per exposure (-1: none), and the exposures as rows grouped by
    device (``_kernels.X_*`` columns) with each row's converting visit, for per-device statistics."""

    visit: np.ndarray
    rows: np.ndarray
    starts: np.ndarray
    row_visit: np.ndarray


def match(exposures: Exposures, visits: Visits, specs: Sequence[Spec], fence_names: Sequence[str],
          *, attribution: str = "last", holdout_arm: int = -1) -> Matched:
    """:func:`conversions`, keeping the device-grouped rows (``holdout_arm``: the arm code of the control group)."""
    if attribution not in ATTRIBUTIONS:
        raise ValueError(f"attribution must be one of {', '.join(ATTRIBUTIONS)}, not {attribution!r}")
    n_dev = len(visits.starts) - 1
    device = _codes(exposures.device, "device")
    if len(device) and int(device.max()) >= n_dev:
        n_dev = int(device.max()) + 1
    cols = [exposures.ts, np.arange(len(device), dtype=np.float64), _codes(exposures.campaign, "campaign"),
            np.asarray(exposures.arm) != holdout_arm]  # in the order of K.X_*
    grouped, starts = K.group(device, cols, n_dev)
    K.sort_groups(grouped, starts)
    index = {f: i for i, f in enumerate(fence_names)}
    n_fences = max(len(fence_names), int(visits.fence.max()) + 1 if len(visits) else 0, 1)
    place_ok = np.zeros((max(len(specs), 1), n_fences), np.bool_)
    for c, spec in enumerate(specs):
        if spec.places is None:
            place_ok[c, :] = True
        else:
            place_ok[c, [index[p] for p in spec.places if p in index]] = True
    within = np.asarray([s.within_s for s in specs] or [0.0], np.float64)
    min_dwell = np.asarray([s.min_dwell_s for s in specs] or [0.0], np.float64)
    min_prob = np.asarray([s.min_probability for s in specs] or [0.0], np.float64)
    v_starts = visits.starts
    if len(v_starts) - 1 < n_dev:  # devices with exposures but no visit at all
        v_starts = np.concatenate([v_starts, np.full(n_dev - (len(v_starts) - 1), v_starts[-1], np.int64)])
    out = np.full(len(device), -1, np.int64)
    row_visit = np.full(len(device), -1, np.int64)
    K.convert(
        grouped, starts, len(device), v_starts, visits.fence, visits.ts,
        visits.dwell_s, visits.probability, place_ok, within, min_dwell, min_prob,
        K.LAST if attribution == "last" else K.EACH, out, np.full(len(device), -1, np.int64), row_visit,
    )
    return Matched(out, grouped, starts, row_visit)


def arm_names(specs: Sequence[Spec]) -> list[str]:
    """Arm names a report uses: ``holdout``, ``offer`` (a campaign without variants), then every variant id."""
    names = [HOLDOUT, "offer"]
    for s in specs:
        names.extend(v for v in s.variants if v not in names)
    return names


__all__ = [
    "ATTRIBUTIONS",
    "KIND_CODES",
    "Events",
    "Exposures",
    "Matched",
    "Spec",
    "Visits",
    "arm_names",
    "conversions",
    "match",
    "n_devices",
    "specs_of",
    "visits_by_grouping",
    "visits_in_time_order",
    "visits_of",
]
