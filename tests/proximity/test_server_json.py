"""The service reads and writes JSON with orjson, and means exactly what the standard library would."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proximity.service.codec import json_bytes as _json_bytes
from proximity.service.codec import json_default as _json_default
from proximity.service.codec import parse_json
from proximity.service.errors import ApiError

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=8))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(documents)
def test_a_body_parses_to_what_json_loads_gives(doc: Any) -> None:
    """Whatever orjson accepts it reads as json.loads does; what it refuses (NaN, huge integers) json decides."""
    body = json.dumps(doc).encode()  # NaN and Infinity as json writes them: json.loads takes them
    assert _same(parse_json(body), json.loads(body))


@given(st.binary(max_size=40) | st.text(max_size=30).map(str.encode))
def test_a_body_is_refused_exactly_when_json_refuses_it(body: bytes) -> None:
    try:
        expected = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        with pytest.raises(ApiError) as err:
            parse_json(body)
        assert err.value.status == 400
    else:
        if body.strip():
            assert _same(parse_json(body), expected)


def test_malformed_json_still_names_line_and_column() -> None:
    body = b'{"pings": [\n  {"device_id": "a",}\n]}'
    with pytest.raises(ApiError) as err:
        parse_json(body)
    with pytest.raises(json.JSONDecodeError) as std:
        json.loads(body)
    assert (err.value.body["line"], err.value.body["col"]) == (std.value.lineno, std.value.colno) == (2, 21)


@dataclasses.dataclass
class WithToDict:
    x: int

    def to_dict(self) -> dict[str, Any]:
        return {"renamed": self.x}


@given(documents)
def test_responses_are_what_json_dumps_writes_with_nan_as_null(doc: Any) -> None:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    assert _same(json.loads(_json_bytes(doc)), clean(doc))


class Level(enum.IntEnum):
    NEAR = 2


class Tag(str):
    pass


def test_responses_keep_the_default_conversions() -> None:
    odd = {"level": Level.NEAR, "tag": Tag("x"), "when": dt.datetime(2026, 3, 9, tzinfo=dt.UTC), "set": {1}}
    assert json.loads(_json_bytes(odd)) == json.loads(json.dumps(odd, default=_json_default))
    out = json.loads(_json_bytes({
        "event": WithToDict(3), "when": dt.datetime(2026, 3, 9, 8, 0, tzinfo=dt.UTC),
        "arr": np.array([1.5, np.nan]), "n": np.int64(7), "tags": ("a", "b"), 5: "int key", "big": 2**70,
    }))
    assert out == {"event": {"renamed": 3}, "when": "2026-03-09 08:00:00+00:00", "arr": [1.5, None], "n": 7,
                   "tags": ["a", "b"], "5": "int key", "big": 2**70}
