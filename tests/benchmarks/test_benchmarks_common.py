"""The benchmark harness itself: dispatch, tables and JSON results (never a timing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import _common
from benchmarks.__main__ import PARTS, main


def test_every_part_is_a_module_with_main() -> None:
    import importlib

    for part in PARTS:
        assert callable(importlib.import_module(f"benchmarks.{part}").main)


def test_unknown_part_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown part 'nope'" in capsys.readouterr().err


def test_table_aligns_columns() -> None:
    text = _common.table(["name", "n"], [("a", 1), ("longer", 1000)])
    lines = text.splitlines()
    assert lines[0] == "name       n"
    assert lines[1] == "------  ----"
    assert lines[3] == "longer  1000"
    md = _common.markdown_table(["name", "n"], [("a", 1)])
    assert md.splitlines() == ["| name | n |", "| --- | --- |", "| a | 1 |"]


def test_write_results_keeps_numpy_values_and_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    path = _common.write_results("demo", {"rate": np.float64(2.5), "pairs": np.arange(3)})
    doc = json.loads(path.read_text())
    assert doc["rate"] == 2.5 and doc["pairs"] == [0, 1, 2]
    assert doc["part"] == "demo" and doc["machine"]["cores"] >= 1
    assert _common.read_results("demo") == doc
    assert _common.read_results("missing") is None


def test_scaling_limits_read_the_numbers() -> None:
    from benchmarks.scaling import limits

    doc = {
        "fences": [{"fences": 1000, "match_pps_1t": 2e6, "match_pps_2t": 3.6e6},
                   {"fences": 100000, "match_pps_1t": 1e6, "match_pps_2t": 1.9e6}],
        "devices": [{"devices": 10, "engine_pps": 1e6}, {"devices": 1000, "engine_pps": 5e5}],
        "workers": [{"workers": 1, "pings_s": 100.0}, {"workers": 2, "pings_s": 150.0}],
    }
    text = "\n".join(limits(doc))
    assert "1.90x of 1 thread" in text and "busy elsewhere" not in text
    assert "0.50x" in text and "2 workers give 1.50x" in text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.99]))
def test_percentile_ms_is_the_nearest_rank_below(latencies: list[float], q: float) -> None:
    """One of the latencies (in ms), with at most ``q`` of them below it and more than ``q`` at or below it."""
    v = _common.percentile_ms(latencies, q)
    ms = [1000 * x for x in latencies]
    assert v in ms
    assert sum(x < v for x in ms) <= len(ms) * q < sum(x <= v for x in ms)


def test_percentile_of_nothing_is_nan_and_counts_add_up() -> None:
    import math

    assert math.isnan(_common.percentile_ms([], 0.99))
    assert _common.failure(422, b'{"error":"every row was refused"}' + b"x" * 200) == '422 {"error":"every row was refused"}' + "x" * 87
    assert _common.add_counts({"a": 1, "b": 2}, {}, {"b": 3, "c": 1}) == {"a": 1, "b": 5, "c": 1}
    assert _common.add_counts() == {}
