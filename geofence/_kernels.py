"""The index's hot loops (numba). Everything here works on flat numpy arrays.

Layout (built by :mod:`geofence.index`):

- fences live in *slots* (append-only); ``rec[s]`` is one cache line per slot:
  ``kind`` (0 polygon, 1 circle, -1 removed), then for a polygon its bbox
  ``minx, miny, maxx, maxy``, band origin ``y0``, ``1 / band height`` and
  ``bstart * 2**17 + nb`` (its band rows in ``cells``); for a circle ``cx, cy, radius_m``;
- a polygon's bbox is cut into ``nb`` horizontal bands, each band into equal columns
  (one for most bands; many where a horizontal line crosses many edges, as on a spiky
  star). ``cells[bstart + b]`` is band b's row: its only cell, or ``(-1 - first cell
  row, columns)``. A cell row is ``(first edge * 4 + ray * 2 + inside, end edge)``: it
  lists in ``seg`` every edge (``x1, y1, x2, y2``, copied in cell order) that reaches
  it. A point of a cell is located from the cell's reference point, whose state
  (``inside``) is known from the build: each crossing of the segment between them
  with the cell's edges flips it. The last cell of a band (``ray``) takes the point
  right of the polygon at the point's height (outside), which is GEOS's ray; other
  cells a fixed point ``refs[cell]`` off the boundary. So a point test reads the
  handful of edges of one cell, whatever the polygon's size and shape, and a cell
  with no edges answers with no geometry;
- a grid per level (cell side ``cs0 * 2**level`` degrees) hashed by cell key
  (``htab`` rows: key, first entry, end entry); an entry is ``slot * 2 + flag``,
  flag 1 when the fence covers the whole cell (no geometry needed), 0 when its
  boundary may cross the cell (exact test).

The point-in-polygon test is GEOS's ``RayCrossingCounter`` rule (boundary counts
as inside, half-open vertex rule), generalised to any segment (see ``_crosses``),
with an exact orientation predicate, so the results equal shapely's ``intersects``.

The kernels live in four modules by concern, re-exported here (``import geofence._kernels as K``):
:mod:`geofence._kernels_geometry` (exact orientation; one fence: point location, distances),
:mod:`geofence._kernels_build` (a polygon's bands and cells), :mod:`geofence._kernels_grid` (cell
keys, rasterising, hash tables, occupancy) and :mod:`geofence._kernels_match` (matching).
"""

from __future__ import annotations

from geofence._kernels_build import (  # noqa: F401
    _edge_cols,
    _edge_x_between,
    _grow2,
    _halton,
    _place_edges,
    build_cells,
)
from geofence._kernels_geometry import (  # noqa: F401
    BOUNDARY,
    CELL_BUDGET,
    CELL_RES,
    COLS_PER_EDGE,
    DEG,
    E2,
    EMPTY,
    INSIDE,
    KEY_BITS,
    MAX_BANDS,
    MAX_COLS,
    NB_BITS,
    OUTSIDE,
    REC_WIDTH,
    A,
    _crosses,
    _exact_orient_sign,
    _lon_shift,
    _split,
    _two_product,
    _two_sum,
    band_cells,
    band_of,
    band_table,
    cell_of,
    col_of,
    distance_m,
    edge_within,
    locate_in_cell,
    locate_polygon,
    metres_per_degree,
    orient,
    wrap,
)
from geofence._kernels_grid import (  # noqa: F401
    _hash,
    _push,
    _segment_touches_box,
    build_hash,
    build_occupancy,
    cell_index,
    cell_key,
    lon_pieces,
    lookup,
    occupied,
    raster_circles,
    raster_polygons,
)
from geofence._kernels_match import (  # noqa: F401
    _collect,
    _grow_run,
    _match_range,
    _plan,
    _polygon_conf,
    _run_chunk,
    _scan_accuracy,
    _scan_point,
    _sort_tail,
    match,
    match_parallel,
    spatial_order,
)
