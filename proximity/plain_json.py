"""Plain ping bodies read straight into columns: the service's fast path for ``POST /v1/pings``.

A body of plain pings (see :mod:`proximity._kernels_json` for exactly which bodies are plain: the
common ``{"pings": [{device_id, lon, lat, accuracy_m, ts}, ...]}`` with JSON numbers and printable ASCII
ids) is read by one compiled loop into a :class:`~proximity.batch.PingBatch`, its ``batch_id`` and its
devices, without a Python object per ping (a 500-ping batch: parse, rows to columns and devices took
about 0.48 ms through ``orjson`` and dicts). Any other body, and any plain body with a value that
``PingBatch.from_arrays`` refuses, gives ``None``: the caller then parses it the general way, which
accepts and refuses exactly what it did before. Both ways give the same batch (a property test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import proximity._kernels_json as K
from proximity.batch import PingBatch
from proximity.convert import MAX_DEVICE_ID_LEN
from proximity.errors import ValidationError


@dataclass(frozen=True, eq=False)
class PlainPings:
    """A plain body: its pings (``row`` numbered from 0, all of them good so far), ``batch_id`` (``None``
    when absent or null) and its distinct devices in order of first appearance."""

    batch: PingBatch
    batch_id: str | None
    devices: list[str]


def plain_pings(body: bytes, max_rows: int, source: str = "<request body>", min_rows: int = 1) -> PlainPings | None:
    """``body`` read as plain pings, or ``None`` when it is not plain (see the module docstring) or holds fewer
    than ``min_rows`` objects (at most that many pings)."""
    objects = body.count(b"{")  # every ping is an object: at most this many rows
    if objects < max(min_rows, 1) or len(body) > 1 << 31:
        return None
    bound = min(objects, max_rows)  # the loop refuses more rows: a body of braces costs no more than a full batch
    buf = np.frombuffer(body, np.uint8)
    nums = np.empty(4 * bound, np.float64)
    slow = np.empty((4 * bound, 3), np.int64)
    ids = np.empty(len(body), np.uint8)
    id_end = np.empty(bound, np.int64)
    span = np.empty(2, np.int64)
    rows, n_slow = K.scan_pings(buf, K.NAME_BYTES, K.NAME_LEN, max_rows, MAX_DEVICE_ID_LEN, nums, slow, ids, id_end,
                                span)
    if rows < 0:
        return None
    if n_slow:  # the numbers the loop could not convert exactly (over 2**53 as digits, or far exponents)
        listed = slow[:n_slow]
        nums[listed[:, 0]] = [float(body[a:b]) for a, b in listed[:, 1:].tolist()]
    names = ids[: id_end[rows - 1] - 1].tobytes().decode("ascii").split("\0")
    device_id = np.empty(rows, dtype=object)
    device_id[:] = names
    cols = nums[: 4 * rows].reshape(rows, 4).T
    try:
        batch = PingBatch.from_arrays(device_id, cols[0], cols[1], cols[2], cols[3], source=source,
                                      ids_checked=True)  # printable ASCII, not blank, not too long
    except ValidationError:  # a bad value: the general path names each bad row
        return None
    batch_id = body[span[0] : span[1]].decode("ascii") if span[0] >= 0 else None
    return PlainPings(batch, batch_id, list(dict.fromkeys(names)))


def compile_kernels() -> None:
    """Compile the scanner (the service's warm-up calls this: the first request must not wait for it)."""
    plain_pings(b'{"pings":[{"device_id":"a","lon":1.5,"lat":2,"accuracy_m":1e1,"ts":1700000000.1234567}]}', 1)


__all__ = ["PlainPings", "compile_kernels", "plain_pings"]
