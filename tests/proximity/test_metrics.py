"""The tiny Prometheus registry writes the text exposition format exactly."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proximity.service.metrics import Registry, ServiceMetrics, format_value

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``a="x",b="y\\"z"`` honouring the format's escapes (a strict reader, independent of the writer)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        name = text[i:eq]
        assert text[eq + 1] == '"', text
        j = eq + 2
        value = []
        while text[j] != '"':
            if text[j] == "\\":
                nxt = text[j + 1]
                value.append({"n": "\n", "\\": "\\", '"': '"'}[nxt])
                j += 2
            else:
                value.append(text[j])
                j += 1
        out[name] = "".join(value)
        i = j + 1
        if i < len(text):
            assert text[i] == ",", text
            i += 1
    return out


def parse(text: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, dict[str, str], float]]]:
    assert text.endswith("\n")
    meta: dict[str, list[str]] = {}
    samples = []
    for line in text[:-1].split("\n"):  # the format splits on \n only
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            meta.setdefault(name, ["", ""])[0] = help_
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            meta.setdefault(name, ["", ""])[1] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            value = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(m.group(4))
            samples.append((m.group(1), parse_labels(m.group(3) or ""),
                            float(m.group(4)) if value is None else value))
    return {k: (v[0], v[1]) for k, v in meta.items()}, samples


def test_counter_gauge_histogram_render() -> None:
    r = Registry()
    c = r.counter("px_pings_total", "Pings.", ["outcome"])
    c.labels("accepted").inc(500)
    c.labels(outcome="rejected").inc()
    g = r.gauge("px_clients", "Clients.")
    g.set(3)
    g.dec()
    h = r.histogram("px_latency_seconds", "Latency.", ["route"], buckets=[0.01, 0.1, 1])
    for v in (0.005, 0.01, 0.05, 0.5, 5):
        h.labels("/v1/pings").observe(v)
    meta, samples = parse(r.render())
    assert meta["px_pings_total"] == ("Pings.", "counter")
    assert meta["px_clients"] == ("Clients.", "gauge")
    assert meta["px_latency_seconds"] == ("Latency.", "histogram")
    by = {(n, tuple(sorted(lbl.items()))): v for n, lbl, v in samples}
    assert by[("px_pings_total", (("outcome", "accepted"),))] == 500
    assert by[("px_pings_total", (("outcome", "rejected"),))] == 1
    assert by[("px_clients", ())] == 2
    buckets = [(lbl["le"], v) for n, lbl, v in samples if n == "px_latency_seconds_bucket"]
    # le is inclusive: 0.01 falls in the 0.01 bucket
    assert buckets == [("0.01", 2), ("0.1", 3), ("1.0", 4), ("+Inf", 5)]
    assert by[("px_latency_seconds_count", (("route", "/v1/pings"),))] == 5
    assert by[("px_latency_seconds_sum", (("route", "/v1/pings"),))] == pytest.approx(5.565)


@given(st.lists(st.text(max_size=12), min_size=1, max_size=5, unique=True))
def test_label_values_round_trip_through_escaping(values: list[str]) -> None:
    r = Registry()
    c = r.counter("px_total", "Help with \\ and\nnewline.", ["v"])
    for i, v in enumerate(values):
        c.labels(v).inc(i + 1)
    meta, samples = parse(r.render())
    assert meta["px_total"] == ("Help with \\\\ and\\nnewline.", "counter")
    got = {lbl["v"]: val for _, lbl, val in samples}
    assert got == {v: i + 1 for i, v in enumerate(values)}


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_histogram_buckets_are_cumulative_and_end_at_count(values: list[float]) -> None:
    r = Registry()
    h = r.histogram("px_h", "H.", buckets=[0.5, 1, 10, 50])
    for v in values:
        h.observe(v)
    _, samples = parse(r.render())
    if not values:
        assert samples == []
        return
    buckets = [v for n, _, v in samples if n == "px_h_bucket"]
    assert buckets == sorted(buckets)
    assert buckets[-1] == len(values)
    for bound, got in zip([0.5, 1, 10, 50], buckets, strict=False):
        assert got == sum(1 for v in values if v <= bound)


def test_errors_on_misuse() -> None:
    r = Registry()
    c = r.counter("px_total", "x", ["a"])
    with pytest.raises(ValueError, match="only goes up"):
        c.labels("1").inc(-1)
    with pytest.raises(ValueError, match="label values"):
        c.labels("1", "2")
    with pytest.raises(ValueError, match="already registered"):
        r.counter("px_total", "again")
    with pytest.raises(ValueError, match="invalid metric name"):
        r.gauge("bad-name", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        r.gauge("px_g", "x", ["le"])
    with pytest.raises(ValueError, match="increasing"):
        r.histogram("px_hh", "x", buckets=[1, 1])


def test_format_value() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(math.nan) == "NaN"


def test_service_metrics_render_parses() -> None:
    m = ServiceMetrics()
    m.events.labels("enter", "gps").inc()
    m.latency.labels("/v1/pings").observe(0.002)
    meta, samples = parse(m.registry.render())
    assert meta["proximity_events_total"][1] == "counter"
    assert ("proximity_events_total", {"kind": "enter", "source": "gps"}, 1.0) in samples
