"""``serve`` checks its environment before it binds, and keeps an access log (opt-out)."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from proximity.service.config import ServiceConfig, config_from_mapping
from tests.proximity.test_server import INSIDE_A, SDK, fences_file, h, ping  # noqa: F401 (a fixture)
from tests.proximity.test_server import make_client as make_client  # a fixture

ROOT = Path(__file__).resolve().parents[2]


def test_webhook_without_its_secret_stops_before_binding_with_exit_2() -> None:
    with socket.socket() as probe:  # a free port: the server must not take it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PROXIMITY_WEBHOOK_SECRET"}
    proc = subprocess.run([sys.executable, "-m", "proximity", "serve", "--port", str(port), "--no-demo",
                           "--webhook-url", "http://127.0.0.1:9/hook"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "PROXIMITY_WEBHOOK_SECRET" in proc.stderr
    assert "listening" not in proc.stdout + proc.stderr


def test_the_secret_variable_is_named_in_help_and_readme() -> None:
    out = subprocess.run([sys.executable, "-m", "proximity", "serve", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT).stdout
    assert "--webhook-url" in out and "PROXIMITY_WEBHOOK_SECRET" in re.sub(r"\s+", "", out)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"--webhook-url[^\n]*\n?[^\n]*PROXIMITY_WEBHOOK_SECRET", readme)


def test_environment_problems_name_the_variable() -> None:
    cfg = ServiceConfig(webhook_url="http://127.0.0.1:9/hook")
    assert [f for f, _ in cfg.environment_problems({})] == ["webhook_secret_env"]
    assert "PROXIMITY_WEBHOOK_SECRET" in cfg.environment_problems({})[0][1]
    assert cfg.environment_problems({"PROXIMITY_WEBHOOK_SECRET": "s"}) == []
    assert ServiceConfig().environment_problems({}) == []


async def test_access_log_one_line_per_request_with_the_key_name_never_the_key(
        make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client()
    with caplog.at_level(logging.INFO, logger="proximity.access"):
        r = await client.post("/v1/pings?x=secret-query", json=[ping("acc-1", INSIDE_A, time.time())],
                              headers=h(SDK))
        size = len(await r.read())
        await client.get("/healthz")
        await client.get("/v1/fences", headers=h("wrong-key"))
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "proximity.access"]
    assert len(lines) == 3, lines
    assert re.fullmatch(rf"POST /v1/pings 200 \d+\.\dms {size}B key=app", lines[0]), lines[0]
    assert re.fullmatch(r"GET /healthz 200 \d+\.\dms \d+B key=-", lines[1])
    assert lines[2].startswith("GET /v1/fences 401 ")
    assert not any(SDK in line or "wrong-key" in line or "secret-query" in line for line in lines)


async def test_access_log_opt_out(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client(access_log=False)
    with caplog.at_level(logging.INFO, logger="proximity.access"):
        await client.get("/healthz")
    assert not [rec for rec in caplog.records if rec.name == "proximity.access"]
    assert config_from_mapping({"access_log": False}).access_log is False
