"""Helpers of the console's browser tests: a real ``proximity serve`` process, a chromium, HTTP calls."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    """Debian's chromium (or ``$PROXIMITY_CHROMIUM``) and Playwright for Python, or skip loudly / fail."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright for Python is not installed (pip install -e '.[test]')"
    path = os.environ.get("PROXIMITY_CHROMIUM") or next(
        (p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)
    if reason is None and not path:
        reason = "no chromium found (apt-get install chromium, or set PROXIMITY_CHROMIUM)"
    if reason is not None:
        if os.environ.get("PROXIMITY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PROXIMITY_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(f"NO BROWSER: {reason}; the console's browser tests did NOT run")
    return str(path)


class Served:
    """A ``proximity serve`` subprocess on loopback; ``banner`` is what it printed before serving."""

    def __init__(self, proc: subprocess.Popen[str], banner: str) -> None:
        self.proc = proc
        self.banner = banner
        self.log: list[str] = []
        self.url = re.search(r"listening on (http://[\d.]+:\d+)", banner).group(1)  # type: ignore[union-attr]

    def call(self, method: str, path: str, key: str, body: Any = None, *,
             content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"X-API-Key": key, "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")


@contextmanager
def serve(*args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    environ = {k: v for k, v in os.environ.items() if k != "PROXIMITY_API_KEYS"}
    environ.update(env or {})
    environ["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "proximity", "serve", "--port", "0", "--log-level", "warning",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("proximity serve exited:\n" + "".join(lines))
            lines.append(line)
            if "docs:" in line:
                break
        served = Served(proc, "".join(lines))
        threading.Thread(target=_drain, args=(proc.stdout, served.log), daemon=True).start()  # never blocks it
        while time.monotonic() < deadline:  # ready: configuration loaded
            try:
                with urllib.request.urlopen(served.url + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _drain(stream: Any, into: list[str]) -> None:
    try:
        for line in stream:
            into.append(line)
    except (ValueError, OSError):  # closed at the end
        pass


def many_fences(n: int, seed: int = 7) -> dict[str, Any]:
    """``n`` fences over a city-sized grid: polygons, multipolygons and circles, with tags."""
    rng = random.Random(seed)
    side = math.ceil(math.sqrt(n))
    feats = []
    for i in range(n):
        lon = 2.25 + (i % side) * 0.0012 + rng.uniform(0, 0.0003)
        lat = 48.80 + (i // side) * 0.0008 + rng.uniform(0, 0.0002)
        d = rng.uniform(0.0002, 0.0005)
        props: dict[str, Any] = {"name": f"Store {i}", "tags": [rng.choice(["coffee", "grocery", "mall", "tech"])]}
        if i % 10 == 0:
            geom: dict[str, Any] = {"type": "Point", "coordinates": [lon, lat]}
            props["radius_m"] = 20.0
        elif i % 10 == 1:
            geom = {"type": "MultiPolygon", "coordinates": [
                [_ring(lon, lat, d / 2)], [_ring(lon + d * 0.7, lat, d / 3)]]}
        else:
            k = rng.randint(5, 9)
            geom = {"type": "Polygon", "coordinates": [[
                [round(lon + d * math.cos(2 * math.pi * j / k), 7), round(lat + d * 0.66 * math.sin(2 * math.pi * j / k), 7)]
                for j in [*range(k), 0]]]}
        feats.append({"type": "Feature", "id": f"f{i:05d}", "properties": props, "geometry": geom})
    return {"type": "FeatureCollection", "features": feats}


def _ring(lon: float, lat: float, d: float) -> list[list[float]]:
    return [[lon, lat], [lon + d, lat], [lon + d, lat + d * 0.66], [lon, lat + d * 0.66], [lon, lat]]


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


__all__ = ["Served", "chromium_path", "many_fences", "serve", "write_json"]
