"""No input causes a 500: hypothesis posts generated bodies to a running server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proximity.service import bind_socket, create_app, make_runner
from proximity.service.auth import KeyRing, hash_key
from proximity.service.config import ServiceConfig, example_path

KEY = "fuzz-key-all-scopes"
KEYS = KeyRing.parse(f"fuzz:sdk,gateway,admin:{hash_key(KEY)}")


class ServerThread:
    """A real server (the demo configuration) on its own event loop thread."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        from aiohttp import web

        self.thread.start()
        self.runner = None

        async def up() -> Any:
            runner = make_runner(create_app(self.cfg, keys=KEYS), self.cfg)
            await runner.setup()
            await web.SockSite(runner, self.sock).start()
            return runner

        try:
            self.runner = asyncio.run_coroutine_threadsafe(up(), self.loop).result(60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.sock.close()


def district() -> str:
    """Three stores with the ids and tags the bundled campaigns and beacon registry refer to."""
    features = []
    for i, tag in enumerate((["coffee"], ["mall", "electronics"], ["grocery"])):
        lon, lat = 2.35 + i * 0.01, 48.85
        ring = [[lon, lat], [lon + 0.001, lat], [lon + 0.001, lat + 0.001], [lon, lat + 0.001], [lon, lat]]
        features.append({"type": "Feature", "id": f"store-0{i + 1}",
                         "properties": {"name": f"Store {i + 1}", "tags": tag, "timezone": "Europe/Paris",
                                        "opening_hours": {"mon-sun": "00:00-23:59"}},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return json.dumps({"type": "FeatureCollection", "features": features})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    fences = tmp_path_factory.mktemp("fuzz") / "fences.geojson"
    fences.write_text(district())
    cfg = ServiceConfig(fences=str(fences), campaigns=str(example_path("campaigns.yaml")),
                        beacons=str(example_path("beacons.yaml")), rate_limit=0, max_batch=50,
                        max_scan_rows=50, max_body_bytes=64_000, reload_interval_s=30)
    srv = ServerThread(cfg)
    srv.start()
    yield srv
    srv.stop()


# text with lone UTF-16 surrogates (json.dumps writes them as \ud800-style escapes), control, bidi and
# line-break characters: none of it may give a 500
nasty_text = (st.text(max_size=20)
              | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=6)
              | st.sampled_from(["\ud800", "a\udfff", "\x1b[31mred", "x\u202ey", "a\nb", "\u2028", "\x00"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
now = time.time()
plausible = {
    "device_id": st.text(max_size=10) | nasty_text | json_values,
    "lon": st.floats(-200, 200) | json_values,
    "lat": st.floats(-100, 100) | json_values,
    "accuracy_m": st.floats(-5, 5000) | json_values,
    "ts": st.floats(now - 1e6, now + 1e6) | st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-01", "", "1e400"])
    | json_values,
    "speed": json_values,
    "foreground": json_values,
    "attrs": json_values,
    "timezone": st.sampled_from(["Europe/Paris", "Mars/Base", ""]) | json_values,
}
ping_rows = st.fixed_dictionaries({}, optional=plausible) | json_values
sightings = st.fixed_dictionaries({}, optional={
    "ts": st.floats(now - 100, now + 1e4) | json_values,
    "rssi": st.integers(-120, 20) | json_values,
    "raw": st.sampled_from(["0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010002c5", "zz", "02"])
    | json_values,
    "key": st.sampled_from(["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/2", "nope"]) | json_values,
    "tx_power": json_values,
})

bodies = st.one_of(
    st.builds(lambda rows, bid: {"batch_id": bid, "pings": rows}, st.lists(ping_rows, max_size=8),
              st.none() | st.text(max_size=5) | nasty_text | json_values),
    st.lists(ping_rows, max_size=8),
    st.builds(lambda rows, gw, bid: {"gateway_id": gw, "batch_id": bid, "sent_at": now, "sightings": rows},
              st.lists(sightings, max_size=6), st.sampled_from(["gw-1", ""]) | json_values,
              st.text(min_size=1, max_size=5)),
    json_values,
)

routes = st.sampled_from([
    ("POST", "/v1/pings"), ("POST", "/v1/scans"), ("PUT", "/v1/fences"), ("PUT", "/v1/campaigns"),
    ("PUT", "/v1/beacons"), ("POST", "/v1/devices/d1/opt-out"),
])


def post(port: int, method: str, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check(status: int, body: bytes) -> None:
    assert status < 500, body[:500]
    if status >= 400:
        doc = json.loads(body)
        assert isinstance(doc["error"], str) and doc["error"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(route=routes, body=bodies, compress=st.booleans())
def test_no_json_body_causes_a_500(server: ServerThread, route: tuple[str, str], body: Any, compress: bool) -> None:
    data = json.dumps(body, allow_nan=True).encode()
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    if compress:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    check(*post(server.port, *route, data, headers))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(route=routes, data=st.binary(max_size=300),
       encoding=st.sampled_from(["", "gzip", "identity", "deflate", "GZIP"]),
       content_type=st.sampled_from(["application/json", "application/yaml", "text/plain", "", "multipart/form-data"]))
def test_no_bytes_cause_a_500(server: ServerThread, route: tuple[str, str], data: bytes, encoding: str,
                              content_type: str) -> None:
    headers = {"X-API-Key": KEY}
    if encoding:
        headers["Content-Encoding"] = encoding
    if content_type:
        headers["Content-Type"] = content_type
    check(*post(server.port, *route, data, headers))


@pytest.mark.parametrize("body", [
    b'{"pings": [{"device_id": "d", "lon": 2.35, "lat": 48.85, "accuracy_m": 5, "ts": 1' + b"0" * 5000 + b'}]}',
    b'{"pings": [{"device_id": ' + b"9" * 5000 + b', "lon": 2.35, "lat": 48.85, "accuracy_m": 5, "ts": 1}]}',
    b'[' + b"1" * 5000 + b']',
    b'{"batch_id": "\\ud800", "pings": [{"device_id": "d", "lon": 2.35, "lat": 48.85, "accuracy_m": 5, "ts": 1}]}',
    b'{"pings": [{"device_id": "\\udc00x", "lon": 2.35, "lat": 48.85, "accuracy_m": 5, "ts": 1}]}',
    b'{"pings": [{"device_id": "a\\u001b[31m", "lon": 2.35, "lat": 48.85, "accuracy_m": 5, "ts": 1}]}',
    b'{"gateway_id": "\\ud800", "batch_id": "\\udfff", "sent_at": 1, "sightings": []}',
])
@pytest.mark.parametrize("path", ["/v1/pings", "/v1/scans"])
def test_huge_integers_lone_surrogates_and_control_characters_are_4xx(server: ServerThread, body: bytes,
                                                                      path: str) -> None:
    status, answer = post(server.port, "POST", path, body, {"X-API-Key": KEY, "Content-Type": "application/json"})
    check(status, answer)
    assert 400 <= status < 500, answer


def test_the_server_still_answers_good_batches(server: ServerThread) -> None:
    status, body = post(server.port, "GET", "/readyz", b"", {})
    assert status == 200, body
    doc = {"pings": [{"device_id": "z", "lon": 2.3505, "lat": 48.8505, "accuracy_m": 5, "ts": time.time()}]}
    status, body = post(server.port, "POST", "/v1/pings", json.dumps(doc).encode(),
                        {"X-API-Key": KEY, "Content-Type": "application/json"})
    assert status == 200, body
