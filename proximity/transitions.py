"""The transition function's arrays: :class:`Evidence` in, :class:`Transitions` (events as codes) out.

Both are columns of numpy arrays, the shape the kernels (:mod:`proximity._kernels`)
read and write; :mod:`proximity.presence` builds, applies and names them (and
re-exports both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

import proximity._kernels as K


@dataclass
class Evidence:
    """Evidence sorted by (device, time): ``dev`` indexes the state's device table.

    ``obs`` holds, for evidence ``e``, the places it names at ``obs[e]:obs[e+1]``
    with a level (AMBIGUOUS, KEEP, ENTER) and a confidence (3/2/1).
    ``row`` is the input row of each evidence (for reporting and event details).
    GPS evidence also carries its fix (``lon``, ``lat``, ``acc``, ``spd``; NaN for a
    sighting or an unknown speed) and every place it names a log-likelihood ratio
    ``llr`` (see :mod:`proximity.visit`); both default to "nothing known".
    """

    dev: np.ndarray
    ts: np.ndarray
    src: np.ndarray
    obs: np.ndarray
    place: np.ndarray
    level: np.ndarray
    conf: np.ndarray
    row: np.ndarray
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None
    acc: np.ndarray | None = None
    spd: np.ndarray | None = None
    llr: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.dev)
        for name in ("lon", "lat", "acc", "spd"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, np.nan))
        if self.llr is None:
            self.llr = np.zeros(len(self.place))

    def __len__(self) -> int:
        return len(self.dev)

    def take_devices(self, mask_dev: np.ndarray) -> Evidence:
        """The evidence of the devices where ``mask_dev`` (over device indexes) is true."""
        keep = mask_dev[self.dev]
        idx = np.flatnonzero(keep)
        counts = np.diff(self.obs)[idx]
        obs = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(counts, out=obs[1:])
        pidx = _ranges(self.obs[idx], counts)
        assert self.lon is not None and self.lat is not None and self.acc is not None and self.spd is not None
        assert self.llr is not None
        return Evidence(self.dev[idx], self.ts[idx], self.src[idx], obs, self.place[pidx], self.level[pidx],
                        self.conf[pidx], self.row[idx], self.lon[idx], self.lat[idx], self.acc[idx],
                        self.spd[idx], self.llr[pidx])


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for each pair, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    out = np.ones(total, np.int64)
    nz = counts > 0
    s, c, e = starts[nz], counts[nz], ends[nz]
    out[0] = s[0]
    out[e[:-1]] = s[1:] - (s[:-1] + c[:-1]) + 1
    return np.cumsum(out)


@dataclass
class Transitions:
    """Events as arrays (codes), plus per-evidence status (applied / late)."""

    kind: np.ndarray
    dev: np.ndarray
    place: np.ndarray
    ts: np.ndarray
    src: np.ndarray
    conf: np.ndarray
    dwell: np.ndarray
    cause: np.ndarray
    ev: np.ndarray
    prob: np.ndarray
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))

    @classmethod
    def empty(cls, cap: int, n_evidence: int = 0) -> Transitions:
        return cls(np.zeros(cap, np.int8), np.zeros(cap, np.int64), np.zeros(cap, np.int32), np.zeros(cap),
                   np.zeros(cap, np.int8), np.zeros(cap, np.int8), np.zeros(cap), np.zeros(cap, np.int8),
                   np.zeros(cap, np.int64), np.zeros(cap), np.zeros(n_evidence, np.int8))

    def _buffers(self) -> tuple[np.ndarray, ...]:
        return (self.kind, self.dev, self.place, self.ts, self.src, self.conf, self.dwell, self.cause, self.ev,
                self.prob)

    @classmethod
    def from_buffers(cls, buffers: Iterable[np.ndarray], status: np.ndarray) -> Transitions:
        """The inverse of ``_buffers`` (event columns in that order), with the evidence ``status``."""
        kind, dev, place, ts, src, conf, dwell, cause, ev, prob = buffers
        return cls(kind, dev, place, ts, src, conf, dwell, cause, ev, prob, status)

    def grown(self, cap: int) -> Transitions:
        bigger = Transitions.empty(cap)
        for a, b in zip(self._buffers(), bigger._buffers(), strict=True):
            b[: len(a)] = a
        bigger.status = self.status
        return bigger

    def where(self, mask: np.ndarray) -> Transitions:
        """The transitions where ``mask`` (over transitions) is true; ``status`` (per evidence) kept."""
        return Transitions(self.kind[mask], self.dev[mask], self.place[mask], self.ts[mask], self.src[mask],
                           self.conf[mask], self.dwell[mask], self.cause[mask], self.ev[mask], self.prob[mask],
                           self.status)

    def trimmed(self, n: int) -> Transitions:
        return Transitions.from_buffers((a[:n] for a in self._buffers()), self.status)

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def late(self) -> int:
        return int(np.count_nonzero(self.status == K.STATUS_LATE))

    @property
    def implausible(self) -> int:
        """GPS fixes not applied: too far from the device's last accepted fix for the time between them."""
        return int(np.count_nonzero(self.status == K.STATUS_IMPLAUSIBLE))

    @classmethod
    def concat(cls, parts: Sequence[Transitions]) -> Transitions:
        if not parts:
            return cls.empty(0)
        return Transitions.from_buffers((np.concatenate(cols) for cols in zip(*(p._buffers() for p in parts), strict=True)),
                                        np.concatenate([p.status for p in parts]))


__all__ = ["Evidence", "Transitions"]
