"""``proximity.parts``: the parts of a stacked call (several requests' pings in one engine call)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proximity.parts import check_disjoint


@settings(max_examples=400, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 4)), max_size=30))
def test_parts_that_share_a_device_are_refused(rows: list[tuple[int, int]]) -> None:
    # oracle: the set of parts each device's pings are in
    parts_of: dict[int, set[int]] = {}
    for code, part in rows:
        parts_of.setdefault(code, set()).add(part)
    shared = any(len(p) > 1 for p in parts_of.values())
    codes = np.array([r[0] for r in rows], np.int64)
    part = np.array([r[1] for r in rows], np.int64)
    if shared:
        with pytest.raises(ValueError, match="same device"):
            check_disjoint(codes, part)
    else:
        check_disjoint(codes, part)
