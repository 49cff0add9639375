"""The spatial index: arrays of pings in, (point, fence, confidence) pairs out.

``FenceIndex(fences).match(lon, lat, accuracy_m=None)`` answers whole arrays at
once in compiled kernels (:mod:`geofence._kernels`). The index is a hashed grid
with one cell size per *level* (``cell_deg * 2**level``); each fence lives on the
coarsest level where it spans at most ``2 * cells_per_fence`` cells a side, and
each cell lists the fences that cover it entirely (answered without geometry)
and those whose boundary may cross it (an exact test over the few edges of one
cell of the polygon's own grid of bands and columns, so a 10,000-vertex polygon,
even a spiky star that a horizontal line crosses hundreds of times, costs about
what a 32-vertex one does). Batches of ``PARALLEL_MIN_PINGS`` pings or more
run on numba's threads, smaller ones on the calling thread.

Small work needs no compile: while an index holds at most ``DIRECT_MAX_FENCES`` fences and a
batch asks at most ``DIRECT_MAX_PAIRS`` (ping, fence) pairs, the batch is answered in numpy and
GEOS (:mod:`geofence._direct`, the same answers) and the grid is not even built; the first batch
past either bound builds it (compiling the kernels once per machine: a first run over a handful
of fences, such as the Quickstart's, compiles none) and every batch after uses it. A bound on
``pings x polygon edges`` (``DIRECT_MAX_EDGE_PAIRS``) keeps the direct path's memory small.

Dynamic updates: ``add`` appends fences to a small *delta* grid (merged into the
main grid once it grows past a quarter of it) and ``remove`` clears the fences'
live flags; neither rebuilds the index. Positions (``Match.fence``,
:meth:`FenceIndex.position`) index :attr:`FenceIndex.fences`, the live fences in
insertion order: after ``remove`` the fences after a removed one move down.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt
import shapely

import geofence._direct as D
import geofence._kernels as K
from geofence.fences import Fence, FenceError
from geofence.geodesy import metres_per_degree

_DEFAULT_CELL_DEG = 0.0005
_MIN_CELL_DEG = 1e-6
_MAX_CELL_DEG = 10.0
_MAX_LEVEL = 31
_MAX_OCCUPANCY_BITS = 1 << 27  # 16 MB of bitmap at most
#: batches of at least this many pings are matched on all of numba's threads, smaller ones on the caller's
PARALLEL_MIN_PINGS = 200_000
#: an index of at most this many fences answers small batches without its grid (geofence._direct) ...
DIRECT_MAX_FENCES = 64
#: ... when the batch is at most this many (ping, fence) pairs and this many (ping, polygon edge) pairs
DIRECT_MAX_PAIRS = 1 << 20
DIRECT_MAX_EDGE_PAIRS = 1 << 19


def _threads() -> int:
    return max(1, int(numba.get_num_threads()))


#: work buffers of a match call are kept per thread for batches up to this many pings (44 bytes a ping)
_KEEP_WORK_PINGS = 1 << 21
_work = threading.local()


def _work_buffers(n: int, use_acc: bool) -> tuple[np.ndarray, ...]:
    """(order, lon, lat, acc, tile, counts) buffers for a match of ``n`` pings, this thread's own when they fit:
    fresh arrays of a million pings cost more in page faults than sorting the pings does."""
    bufs = getattr(_work, "bufs", None)
    if bufs is None or bufs[0].shape[0] < n or (use_acc and bufs[3].shape[0] < n):
        size = max(n, 1024)
        bufs = (np.empty(size, dtype=np.int64), np.empty(size), np.empty(size),
                np.empty(size if use_acc else 0), np.empty(size, dtype=np.int32), np.empty(size + 1, dtype=np.int64))
        if size <= _KEEP_WORK_PINGS:
            _work.bufs = bufs
    return bufs


@dataclass(frozen=True)
class Match:
    """Pairs ``(point[k], fence[k])``: ping ``point[k]`` is in (or, with accuracy, near) fence ``fence[k]``.

    ``fence`` indexes :attr:`FenceIndex.fences`. Pairs are sorted by point, then
    fence. ``confidence`` (int8): 3 the accuracy circle lies fully inside, 2 the
    point is inside (or on the boundary), 1 the point is outside but within its
    accuracy. Without ``accuracy_m`` every pair has confidence 2.
    """

    point: np.ndarray
    fence: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return int(self.point.shape[0])


_Entries = tuple[np.ndarray, np.ndarray]  # (cell keys, slot * 2 + covered flag), sorted by key then entry


def _no_entries() -> _Entries:
    return np.empty(0, np.int64), np.empty(0, np.int64)


def _sorted_entries(keys: np.ndarray, ents: np.ndarray) -> _Entries:
    order = np.lexsort((ents, keys))
    return keys[order], ents[order]


def _grid(entries: _Entries) -> tuple[np.ndarray, np.ndarray]:
    """(hash table of cells, entries) from entries sorted by key."""
    return K.build_hash(entries[0]), entries[1]


def _z_order(bounds: np.ndarray) -> np.ndarray:
    """A permutation putting boxes (rows minx, miny, maxx, maxy) in Z-order of their centres."""
    if bounds.shape[0] < 2:
        return np.arange(bounds.shape[0])
    cx = (bounds[:, 0] + bounds[:, 2]) / 2.0
    cy = (bounds[:, 1] + bounds[:, 3]) / 2.0
    key = np.zeros(bounds.shape[0], dtype=np.uint64)
    for k, c in enumerate((cx, cy)):
        lo, span = c.min(), max(float(c.max() - c.min()), 1e-300)
        v = np.minimum(((c - lo) / span * 65535.0).astype(np.uint64), np.uint64(65535))
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        key |= v << np.uint64(k)
    return np.argsort(key, kind="stable")


class _Pool:
    """A growable 1-D or 2-D numpy array (capacity doubling)."""

    def __init__(self, dtype: npt.DTypeLike, width: int = 0, fill: float | int | bool = 0) -> None:
        self.width = width
        self.fill = fill
        self.data = np.full((16, width) if width else 16, fill, dtype=dtype)
        self.n = 0

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > self.data.shape[0]:
            cap = max(need, 2 * self.data.shape[0])
            new = np.full((cap, self.width) if self.width else cap, self.fill, dtype=self.data.dtype)
            new[: self.n] = self.data[: self.n]
            self.data = new

    def extend(self, values: np.ndarray) -> None:
        self.reserve(values.shape[0])
        self.data[self.n : self.n + values.shape[0]] = values
        self.n += values.shape[0]

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]


class FenceIndex:
    """Which fences contain each of an array of points (and how surely, given accuracy).

    ``cell_deg`` (the finest cell side, degrees) defaults to the 90th percentile of the fence sizes
    divided by ``cells_per_fence``; ``edges_per_band`` sets how many edges a band (and a
    cell of a band cut into columns) of a polygon's own grid holds, about. Defaults suit store-sized fences and worldwide sets alike.
    """

    def __init__(
        self,
        fences: Iterable[Fence] = (),
        *,
        cell_deg: float | None = None,
        cells_per_fence: int = 4,
        edges_per_band: int = 4,
    ) -> None:
        fences = list(fences)
        if cells_per_fence < 1 or edges_per_band < 1:
            raise ValueError("cells_per_fence and edges_per_band must be >= 1")
        self._cells_per_fence = int(cells_per_fence)
        self._edges_per_band = int(edges_per_band)
        if cell_deg is None:
            cell_deg = self._auto_cell_deg(fences)
        if not (math.isfinite(cell_deg) and cell_deg > 0):
            raise ValueError(f"cell_deg must be a positive number, got {cell_deg!r}")
        self._cs0 = max(_MIN_CELL_DEG, float(cell_deg))
        # slots (append-only): one record row per fence, see geofence._kernels
        self._slot_fence: list[Fence] = []
        self._rec = _Pool(np.float64, width=K.REC_WIDTH, fill=-1.0)
        # geometry pools
        # polygon bands and cells (first edge * 4 + flags, end edge) and the cells' reference points
        self._cells = _Pool(np.float64, width=2)
        self._refs = _Pool(np.float64, width=2)
        self._seg = _Pool(np.float64, width=4)  # polygon edges (x1, y1, x2, y2) in cell order
        # grids
        self._levels = np.empty(0, dtype=np.int64)
        self._main_entries = _no_entries()
        self._delta_entries = _no_entries()
        # the grids, built on the first batch the direct path does not take (see the module's doc)
        self._built = False
        self._main: tuple[np.ndarray, np.ndarray] = (np.empty((0, 3), np.int64), self._main_entries[1])
        self._delta: tuple[np.ndarray, np.ndarray] = (np.empty((0, 3), np.int64), self._delta_entries[1])
        self._occupancy: tuple[np.ndarray, ...] = ()
        self._pending: list[int] = []  # slots whose geometry is not in the grids yet
        self._build_lock = threading.Lock()  # matches on several threads: the grid is built once
        self._direct: D.DirectTable | None = None
        # positions
        self._id_slot: dict[str, int] = {}
        self._fences: tuple[Fence, ...] | None = ()
        self._fence_ids: np.ndarray | None = None
        self._pos_of_slot = np.empty(0, dtype=np.int64)
        self._dead = 0
        if fences:
            self._insert(fences, merge=True)

    # ------------------------------------------------------------------ public API

    @property
    def fences(self) -> tuple[Fence, ...]:
        """The live fences, in insertion order; ``Match.fence`` indexes this."""
        if self._fences is None:
            alive = self._rec.view[:, 0] >= 0
            self._fences = tuple(f for f, a in zip(self._slot_fence, alive, strict=True) if a)
        return self._fences

    @property
    def fence_ids(self) -> np.ndarray:
        """Ids of :attr:`fences` as a numpy object array (aligned with it)."""
        if self._fence_ids is None:
            self._fence_ids = np.array([f.id for f in self.fences], dtype=object)
        return self._fence_ids

    @property
    def cell_deg(self) -> float:
        return self._cs0

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays (grids, edge tables, vertices, fence records).

        The :class:`Fence` objects themselves (and their shapely geometries) are the
        caller's and are not counted.
        """
        arrays = [self._rec.data, self._cells.data, self._refs.data, self._seg.data, self._levels,
                  *self._main_entries, *self._delta_entries, *self._main, *self._delta, *self._occupancy,
                  self._pos_of_slot]
        return int(sum({id(a): a.nbytes for a in arrays}.values()))  # a grid shares its entries array

    def __len__(self) -> int:
        return len(self._id_slot)

    def __contains__(self, fence_id: object) -> bool:
        return fence_id in self._id_slot

    def position(self, fence_id: str) -> int:
        """The position of a fence in :attr:`fences` (``KeyError`` if absent)."""
        return int(self._pos_of_slot[self._id_slot[fence_id]])

    def add(self, fences: Iterable[Fence]) -> None:
        """Add fences (appended to :attr:`fences`) without rebuilding the index."""
        fences = list(fences)
        if fences:
            self._insert(fences, merge=False)

    def remove(self, ids: Iterable[str]) -> None:
        """Remove fences by id (``KeyError`` naming the unknown ids; nothing is removed then)."""
        ids = list(dict.fromkeys(ids))
        missing = [i for i in ids if i not in self._id_slot]
        if missing:
            raise KeyError(f"no fence with id {', '.join(map(repr, missing[:5]))}" +
                           (f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""))
        if not ids:
            return
        slots = np.fromiter((self._id_slot.pop(i) for i in ids), dtype=np.int64, count=len(ids))
        self._rec.data[slots, 0] = -1.0
        self._direct = None
        self._dead += len(ids)
        self._refresh_positions()
        if self._dead > 1024 and self._dead > len(self._id_slot):
            self._compact()

    def compile(self) -> None:
        """Build the grid now and compile the matching kernels (or load them from the kernel cache): every
        batch after is matched by them. A server calls it before it says it is ready, so that no request
        (a batch past the direct path's bounds, or fences added past ``DIRECT_MAX_FENCES``) waits for the
        compiler."""
        with self._build_lock:
            if not self._built:
                self._build()
        self.match(np.zeros(1), np.zeros(1), 0.0)

    def match(
        self,
        lon: npt.ArrayLike,
        lat: npt.ArrayLike,
        accuracy_m: npt.ArrayLike | None = None,
    ) -> Match:
        """Pairs (point, fence) for arrays of longitudes and latitudes (degrees, WGS84).

        A point matches a fence when it lies inside or on its boundary (shapely's
        ``intersects``). With ``accuracy_m`` (metres, scalar or array, >= 0), also
        when its accuracy circle touches the fence; ``confidence`` grades each pair.
        Points with a non-finite coordinate match nothing.
        """
        x = np.ascontiguousarray(lon, dtype=np.float64)
        y = np.ascontiguousarray(lat, dtype=np.float64)
        x = x if x.flags.writeable else x.copy()
        y = y if y.flags.writeable else y.copy()
        if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"lon and lat must be 1-D arrays of equal length, got shapes {x.shape} and {y.shape}")
        if accuracy_m is None:
            acc = np.zeros(0)
        else:
            acc = np.asarray(accuracy_m, dtype=np.float64)
            if acc.shape != x.shape:  # (a scalar, or the shape's mismatch named by numpy)
                acc = np.broadcast_to(acc, x.shape)
            if not (acc.flags.c_contiguous and acc.flags.writeable):  # one specialisation of the kernels
                acc = np.array(acc, order="C")
            bad = ~(np.isfinite(acc) & (acc >= 0))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(f"accuracy_m must be a finite number >= 0, got {acc[row]!r} at row {row}")
        if not self._built:
            n = x.shape[0]
            if len(self._id_slot) <= DIRECT_MAX_FENCES and n * len(self._id_slot) <= DIRECT_MAX_PAIRS:
                table = self._direct_table()
                if n * table.edges.shape[0] <= DIRECT_MAX_EDGE_PAIRS:
                    p, s, c = D.match(table, x, y, acc, accuracy_m is not None)
                    return Match(point=p, fence=self._pos_of_slot[s], confidence=c)
            with self._build_lock:
                if not self._built:
                    self._build()
        args = (x, y, acc, accuracy_m is not None, self._levels, self._cs0, *self._occupancy, *self._main,
                *self._delta, self._rec.view, self._cells.view, self._refs.view, self._seg.view,
                *_work_buffers(x.shape[0], accuracy_m is not None))
        threads = _threads() if x.shape[0] >= PARALLEL_MIN_PINGS else 1  # (asking numba costs a small batch 10 us)
        if threads > 1:
            p, s, c = K.match_parallel(*args, threads * 4)
        else:  # waking a thread pool costs more than a small batch takes (milliseconds on a busy machine)
            p, s, c = K.match(*args)
        return Match(point=p, fence=self._pos_of_slot[s], confidence=c)

    # ------------------------------------------------------------------ building

    def _auto_cell_deg(self, fences: list[Fence]) -> float:
        if not fences:
            return _DEFAULT_CELL_DEG
        sample = fences if len(fences) <= 20_000 else fences[:: len(fences) // 20_000]
        ext = []
        polys = [f.geometry for f in sample if f.kind == "polygon"]
        if polys:  # per part: a fence split at +-180 is two small parts, not one 360-degree one
            b = shapely.bounds(shapely.get_parts(np.array(polys, dtype=object)))
            ext.append(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
        radii = np.array([f.radius_m for f in sample if f.kind == "circle"], dtype=np.float64)
        if radii.size:
            ext.append(2.0 * radii / 111_000.0)
        sizes = np.concatenate(ext)
        sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
        if sizes.size == 0:
            return _DEFAULT_CELL_DEG
        return min(_MAX_CELL_DEG, float(np.quantile(sizes, 0.9)) / self._cells_per_fence)

    def _levels_for(self, extent: np.ndarray) -> np.ndarray:
        # the coarsest level on which a fence spans at most 2 * cells_per_fence cells a side: a set of
        # similar fences then shares one level, and a ping probes one grid instead of two
        ratio = np.maximum(extent, 1e-300) / (2 * self._cells_per_fence * self._cs0)
        lv = np.ceil(np.log2(np.maximum(ratio, 1.0))).astype(np.int64)
        return np.clip(lv, 0, _MAX_LEVEL)

    def _insert(self, fences: list[Fence], *, merge: bool) -> None:
        ids: dict[str, int] = {}
        for k, f in enumerate(fences):
            if not isinstance(f, Fence):
                raise TypeError(f"FenceIndex takes Fence objects, got {type(f).__name__} at {k}")
            if f.id in ids or f.id in self._id_slot:
                raise FenceError(f"duplicate fence id {f.id!r}", field="id", fence_id=f.id, row=k)
            ids[f.id] = k
        base = len(self._slot_fence)
        n = len(fences)
        self._rec.reserve(n)
        self._rec.n += n
        kinds = np.array([1 if f.kind == "circle" else 0 for f in fences], dtype=np.int8)
        self._rec.data[base:base + n, 0] = kinds  # live (0 polygon, 1 circle); the rest comes with the grid
        self._slot_fence.extend(fences)
        for k, f in enumerate(fences):
            self._id_slot[f.id] = base + k
        self._pending.extend(range(base, base + n))
        self._direct = None
        if self._built or len(self._id_slot) > DIRECT_MAX_FENCES:
            self._build(merge=merge)
        self._refresh_positions()

    def _build(self, *, merge: bool = True) -> None:
        """Put the pending fences' geometry into the grids (building them, the first time)."""
        slots = np.array([s for s in self._pending if self._rec.data[s, 0] >= 0], dtype=np.int64)
        self._pending = []
        if not self._built:
            self._built = True
            self._main = _grid(self._main_entries)
            self._delta = _grid(self._delta_entries)
            self._occupancy = K.build_occupancy(self._main_entries[0], self._levels, _MAX_OCCUPANCY_BITS)
            merge = True
        if not slots.size:
            return
        fences = [self._slot_fence[s] for s in slots.tolist()]
        kinds = self._rec.data[slots, 0]
        entries = []
        poly_idx = np.flatnonzero(kinds == 0)
        if poly_idx.size:
            entries.append(self._insert_polygons([fences[i] for i in poly_idx], slots[poly_idx]))
        circ_idx = np.flatnonzero(kinds == 1)
        if circ_idx.size:
            entries.append(self._insert_circles([fences[i] for i in circ_idx], slots[circ_idx]))
        keys = np.concatenate([e[0] for e in entries])
        ents = np.concatenate([e[1] for e in entries])
        levels = np.unique(np.concatenate([self._levels, np.unique(keys >> 58)])).astype(np.int64)
        if not merge and levels.shape != self._levels.shape:
            self._occupancy = K.build_occupancy(self._main_entries[0], levels, _MAX_OCCUPANCY_BITS)
        self._levels = levels
        dk, de = self._delta_entries
        delta = _sorted_entries(np.concatenate([dk, keys]), np.concatenate([de, ents]))
        if merge or delta[0].shape[0] > max(65_536, self._main_entries[0].shape[0] // 4):
            self._merge(delta)
        else:
            self._delta_entries = delta
            self._delta = _grid(delta)

    def _direct_table(self) -> D.DirectTable:
        if self._direct is None:
            rec = self._rec.view
            slots = np.flatnonzero(rec[:, 0] >= 0).astype(np.int64)
            fences = [self._slot_fence[s] for s in slots.tolist()]
            centres = np.array([(*f.center, f.radius_m) if f.center is not None else (0.0, 0.0, 0.0)
                                for f in fences], dtype=np.float64).reshape(-1, 3)
            self._direct = D.build_table(slots, rec[slots, 0].astype(np.int8), [f.geometry for f in fences], centres)
        return self._direct

    def _merge(self, delta: _Entries) -> None:
        keys = np.concatenate([self._main_entries[0], delta[0]])
        ents = np.concatenate([self._main_entries[1], delta[1]])
        live = self._rec.data[ents >> 1, 0] >= 0
        self._main_entries = _sorted_entries(keys[live], ents[live])
        self._main = _grid(self._main_entries)
        self._occupancy = K.build_occupancy(self._main_entries[0], self._levels, _MAX_OCCUPANCY_BITS)
        self._delta_entries = _no_entries()
        self._delta = _grid(self._delta_entries)

    def _insert_polygons(self, fences: list[Fence], slots: np.ndarray) -> tuple[np.ndarray, ...]:
        geoms = np.array([f.geometry for f in fences], dtype=object)
        # vertices and edge tables in Z-order of the fences' boxes: neighbouring fences share cache lines
        perm = _z_order(shapely.bounds(geoms))
        geoms, slots = geoms[perm], slots[perm]
        parts, part_of = shapely.get_parts(geoms, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
        ring_fence = part_of[ring_part]
        ring_ptr = np.zeros(len(rings) + 1, dtype=np.int64)
        np.cumsum(np.bincount(coord_ring, minlength=len(rings)), out=ring_ptr[1:])
        slot_ring_ptr = np.zeros(len(fences) + 1, dtype=np.int64)
        np.cumsum(np.bincount(ring_fence, minlength=len(fences)), out=slot_ring_ptr[1:])
        cells, refs, seg = K.build_cells(coords, ring_ptr, slot_ring_ptr, slots, self._edges_per_band, self._rec.data,
                                   self._cells.n, self._seg.n)
        self._cells.extend(cells)
        self._refs.extend(refs)
        self._seg.extend(seg)
        rec = self._rec.data[slots]
        levels = self._levels_for(np.maximum(rec[:, 3] - rec[:, 1], rec[:, 4] - rec[:, 2]))
        return K.raster_polygons(slots, levels, self._cs0, self._rec.view, self._cells.view, self._refs.view, self._seg.view)

    def _insert_circles(self, fences: list[Fence], slots: np.ndarray) -> tuple[np.ndarray, ...]:
        cx = np.array([f.center[0] for f in fences], dtype=np.float64)  # type: ignore[index]
        cy = np.array([f.center[1] for f in fences], dtype=np.float64)  # type: ignore[index]
        r = np.array([f.radius_m for f in fences], dtype=np.float64)
        self._rec.data[slots, 0] = 1.0
        self._rec.data[slots, 1] = cx
        self._rec.data[slots, 2] = cy
        self._rec.data[slots, 3] = r
        _, ky = metres_per_degree(cy)
        dlat = r / ky * 1.001
        top = np.minimum(90.0, np.abs(cy) + dlat)
        kx_top, _ = metres_per_degree(np.minimum(top, 89.999))
        dlon = np.where(top >= 89.999, 180.0, np.minimum(180.0, r / kx_top * 1.001))
        levels = self._levels_for(2.0 * np.maximum(dlon, dlat))
        return K.raster_circles(slots, levels, self._cs0, self._rec.view, dlon, dlat)

    def _refresh_positions(self) -> None:
        alive = self._rec.view[:, 0] >= 0
        self._pos_of_slot = np.cumsum(alive, dtype=np.int64) - 1
        self._fences = None
        self._fence_ids = None

    def _compact(self) -> None:
        live = list(self.fences)
        fresh = FenceIndex(live, cell_deg=self._cs0, cells_per_fence=self._cells_per_fence,
                           edges_per_band=self._edges_per_band)
        self.__dict__.update(fresh.__dict__)


def match_fences(fences: Sequence[Fence], lon: npt.ArrayLike, lat: npt.ArrayLike,
                 accuracy_m: npt.ArrayLike | None = None) -> Match:
    """One-shot convenience: build an index over ``fences`` and match the points."""
    return FenceIndex(fences).match(lon, lat, accuracy_m)


__all__ = ["FenceIndex", "Match", "match_fences"]
