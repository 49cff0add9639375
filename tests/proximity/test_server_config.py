"""Service settings, the reload machinery (files, memory and Redis channels), and the ``proximity serve`` command."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from proximity.cli import main
from proximity.errors import ValidationError
from proximity.service.config import ServiceConfig, config_from_mapping, load_config
from proximity.service.reload import FileWatcher, MemoryChannel, RedisChannel, Reloader

# ------------------------------------------------------------------ config


def test_config_file_with_line_and_col_errors(tmp_path: Path) -> None:
    p = tmp_path / "service.yaml"
    p.write_text("port: 9000\nfences: data/fences.geojson\nengine:\n  dwell_s: 120\n")
    cfg = load_config(p, port=None, host="0.0.0.0")
    assert (cfg.port, cfg.host) == (9000, "0.0.0.0")
    assert cfg.fences == str((tmp_path / "data/fences.geojson").resolve())
    assert cfg.engine == {"dwell_s": 120}
    p.write_text("port: 9000\nmax_batchh: 10\n")
    with pytest.raises(ValidationError, match="did you mean 'max_batch'") as info:
        load_config(p)
    assert (info.value.line, info.value.col) == (2, 1)
    p.write_text("port: 9000\nrate_limit: fast\n")
    with pytest.raises(ValidationError, match="rate_limit must be") as info:
        load_config(p)
    assert (info.value.line, info.value.field) == (2, "rate_limit")
    p.write_text("workers: 3\n")
    with pytest.raises(ValidationError, match="needs shared state") as info:
        load_config(p)
    assert info.value.line == 1
    p.write_text("port: [1\n")
    with pytest.raises(ValidationError) as info:
        load_config(p)
    assert info.value.source == str(p) and info.value.line


async def test_tracker_and_engine_settings_are_checked_and_reach_the_engine(tmp_path: Path) -> None:
    from proximity.service import EngineHost
    from proximity.service.config import example_path
    from proximity.service.metrics import ServiceMetrics
    from proximity.service.reload import media_type_for

    p = tmp_path / "service.yaml"
    p.write_text("engine:\n  dwell_s: 120\ntracker:\n  thresholds: [0.5, 6.0]\n  window_s: 10\n")
    cfg = load_config(p)
    host = EngineHost(cfg, ServiceMetrics())
    try:
        beacons = example_path("beacons.yaml")
        host.apply("beacons", host.validate("beacons", beacons.read_text(), media_type_for(beacons), str(beacons)))
        assert (host.tracker.thresholds.immediate_m, host.tracker.thresholds.near_m) == (0.5, 6.0)
        assert host.engine.config.dwell_s == 120
    finally:
        await host.close()
    for text, field, match in (("tracker:\n  windw_s: 10\n", "tracker", "unknown setting 'windw_s'"),
                               ("port: 1\ntracker:\n  filter: median\n", "tracker", "filter must be"),
                               ("engine:\n  dwel_s: 1\n", "engine", "unknown setting 'dwel_s'")):
        p.write_text(text)
        with pytest.raises(ValidationError, match=match) as info:
            load_config(p)
        assert info.value.field == field and info.value.source == str(p) and info.value.line == text.count("\n", 0, text.index(field)) + 1


@pytest.mark.parametrize(("field", "value"), [("port", 70000), ("max_batch", 0), ("rate_limit", float("nan")),
                                              ("reload_interval_s", 0), ("redis_prefix", "a b"),
                                              ("redis_groups", 0), ("redis_groups", 16385),
                                              ("coalesce_window_ms", -1), ("coalesce_window_ms", 51),
                                              ("coalesce_window_ms", float("inf"))])
def test_config_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        ServiceConfig(**{field: value})
    assert info.value.field == field


async def test_engine_kernels_use_the_configured_thread_count() -> None:
    import numba

    from proximity.service import EngineHost
    from proximity.service.metrics import ServiceMetrics

    for n in (1, 2):
        host = EngineHost(ServiceConfig(engine_threads=n), ServiceMetrics())
        try:
            assert await host.run(numba.get_num_threads) == min(n, numba.config.NUMBA_NUM_THREADS)
        finally:
            await host.close()
    with pytest.raises(ValidationError) as info:
        ServiceConfig(engine_threads=0)
    assert info.value.field == "engine_threads"


def test_demo_paths_are_the_bundled_examples() -> None:
    paths = config_from_mapping({}, demo=True).resolved_paths()
    assert paths["campaigns"] is not None and paths["campaigns"].name == "campaigns.yaml"
    assert all(p is None for p in ServiceConfig().resolved_paths().values())


# ------------------------------------------------------------------ reload


def test_file_watcher_reports_content_changes_only(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_text("one")
    w = FileWatcher(p)
    w.prime("one")
    assert w.poll() is None
    os.utime(p, (time.time() + 5, time.time() + 5))  # touched, same content
    assert w.poll() is None
    p.write_text("two")
    os.utime(p, (time.time() + 10, time.time() + 10))
    assert w.poll() == "two"
    assert w.poll() is None
    p.unlink()
    assert w.poll() is None


async def test_reloader_validates_before_applying() -> None:
    applied: list[tuple[int, Any]] = []

    def validate(kind: str, text: str, media: str, source: str) -> Any:
        if text.startswith("bad"):
            raise ValidationError("bad text", source=source, line=1, col=1)
        return text.upper()

    async def apply(doc, parsed) -> None:  # type: ignore[no-untyped-def]
        applied.append((doc.version, parsed))

    r = Reloader(MemoryChannel(), validate, apply)
    doc, _ = await r.submit("fences", "a", "text/plain", "t")
    assert doc.version == 1
    with pytest.raises(ValidationError):
        await r.submit("fences", "bad", "text/plain", "t")
    doc, _ = await r.submit("fences", "a", "text/plain", "t")  # same content: same version, not re-applied
    assert doc.version == 1
    await r.submit("fences", "b", "text/plain", "t")
    assert applied == [(1, "A"), (2, "B")]


@pytest.mark.redis
async def test_redis_channel_versions_and_notifies(redis_url: str, redis_prefix: str) -> None:
    one, two = RedisChannel.from_url(redis_url, redis_prefix), RedisChannel.from_url(redis_url, redis_prefix)
    seen: list[str] = []

    async def notify(kind: str) -> None:
        seen.append(kind)

    listener = asyncio.create_task(two.listen(notify))
    try:
        await asyncio.sleep(0.3)
        d1 = await one.publish("campaigns", "x: 1\n", "application/yaml", "PUT")
        d2 = await one.publish("campaigns", "x: 1\n", "application/yaml", "file")  # same text: no new version
        d3 = await two.publish("campaigns", "x: 2\n", "application/yaml", "PUT")
        assert (d1.version, d2.version, d3.version) == (1, 1, 2)
        latest = await one.latest("campaigns")
        assert latest is not None and latest.text == "x: 2\n" and latest.version == 2
        for _ in range(50):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        assert seen == ["campaigns", "campaigns"]
        assert await one.latest("beacons") is None
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await one.close()
        await two.close()


# ------------------------------------------------------------------ the command


def test_new_key_prints_a_key_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    assert main(["serve", "--new-key", "ios-app:sdk,admin"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"key:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    line = re.search(r"line:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    assert line == f"ios-app:sdk,admin:{hashlib.sha256(key.encode()).hexdigest()}"
    assert main(["serve", "--new-key", "ios-app:root"]) == 2
    assert "unknown scope" in capsys.readouterr().err


def test_keys_come_from_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proximity.commands.serve import load_keys
    from proximity.service.auth import hash_key

    keys = tmp_path / "keys.txt"
    keys.write_text(f"ios:sdk:{hash_key('from-file')}\n")
    monkeypatch.setenv("PROXIMITY_API_KEYS", f"gw:gateway:{hash_key('from-env')}")
    ring = load_keys(ServiceConfig(keys=str(keys)))
    assert ring.authenticate("from-file").name == "ios"  # type: ignore[union-attr]
    assert ring.authenticate("from-env").name == "gw"  # type: ignore[union-attr]
    assert "from-file" not in keys.read_text()
    monkeypatch.setenv("PROXIMITY_API_KEYS", f"ios:admin:{hash_key('other')}")
    with pytest.raises(ValidationError, match="duplicate"):
        load_keys(ServiceConfig(keys=str(keys)))


def test_bad_files_exit_2_with_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("a:sdk:123\n")
    assert main(["serve", "--keys", str(keys), "--port", "0"]) == 2
    assert f"{keys}:1:7:" in capsys.readouterr().err
    assert main(["serve", "--fences", str(tmp_path / "missing.geojson"), "--port", "0"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", "--workers", "2", "--port", "0"]) == 2
    assert "--redis" in capsys.readouterr().err


def test_serve_with_no_arguments_runs_the_demo_and_prints_a_working_curl(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROXIMITY_API_KEYS"}
    proc = subprocess.Popen([sys.executable, "-m", "proximity", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines: list[str] = []  # the warm-up's log lines, then the banner, which ends with the docs line
        while not any("docs: " in line for line in lines) and len(lines) < 200:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        url = re.search(r"listening on (http://[\d.]+:\d+)", text).group(1)  # type: ignore[union-attr]
        key = re.search(r"demo key \(every scope, this run only\): (\S+)", text).group(1)  # type: ignore[union-attr]
        curl = re.search(r"try: (curl .*)", text).group(1)  # type: ignore[union-attr]
        assert "campaigns=" in text
        # the banner tells a new user how to make the console's demo city move
        assert "--replay-demo 60" in text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        # the printed curl works as printed (its body is JSON; its key is the demo key)
        body = re.search(r"-d '(.*)'$", curl).group(1)  # type: ignore[union-attr]
        assert f"X-API-Key: {key}" in curl
        req = urllib.request.Request(url + "/v1/pings", data=body.encode(), method="POST",
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            doc = json.loads(r.read())
        assert r.status == 200 and doc["accepted"] == 7
        # the demo pings (seven fixes 20 s apart, as a streaming phone sends them) land in the first demo store:
        # the response shows its enter event under the default profile (and its dwell: the fixes span the
        # store's two minutes)
        assert [(e["kind"], e["fence_id"]) for e in doc["devices"]["dev-demo"]["events"]] == [
            ("enter", "store-01"), ("dwell", "store-01")]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0


def test_redis_block_sets_the_device_groups_of_the_state_store(redis_url: str, redis_prefix: str,
                                                                tmp_path: Path) -> None:
    """``redis: {url, cluster: true, groups: N}`` in a service file reaches the presence store's key layout (on
    one Redis the cluster protocol runs as on a cluster); a bad ``groups`` is refused naming its place."""
    from proximity.service.backends import Backends

    p = tmp_path / "service.yaml"
    p.write_text(f"redis: {{url: '{redis_url}', cluster: true, prefix: '{redis_prefix}', groups: 8}}\n")
    cfg = load_config(p)
    assert cfg.redis_groups == 8 and cfg.redis_cluster is True
    backends = Backends.from_config(cfg)
    try:
        assert backends.store.layout.groups == 8
    finally:
        backends.close()
    p.write_text(f"redis: {{url: '{redis_url}', groups: 0}}\n")
    with pytest.raises(ValidationError, match="redis_groups must be 1 to 16384") as info:
        load_config(p)
    assert info.value.field == "redis_groups"
    p.write_text(f"redis: {{url: '{redis_url}', grups: 8}}\n")
    with pytest.raises(ValidationError, match="unknown setting 'grups'"):
        load_config(p)
