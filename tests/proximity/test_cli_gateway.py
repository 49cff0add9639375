"""``proximity gateway --replay``: the real command against a local server; down server -> spool -> resend."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from beacons import decode_scans_body, read_capture
from proximity.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "proximity" / "examples"
pytestmark = pytest.mark.timeout(120)


class ThreadedServer:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.keys: list[str] = []
        self.seen: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        batch = decode_scans_body(await request.read())
        if batch.batch_id not in self.seen:
            self.seen.add(batch.batch_id)
            self.keys.extend(batch.sightings.key.tolist())
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/scans", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def start(self) -> None:
        if not self.thread.is_alive():
            self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    s = ThreadedServer()
    yield s
    s.stop()


def expected_keys() -> list[str]:
    return [f.key for r in read_capture(EXAMPLES / "capture.jsonl") for f in r.frames() if f.key is not None]


def gateway_argv(server: ThreadedServer, spool: Path) -> list[str]:
    return ["gateway", "--server", f"http://127.0.0.1:{server.port}", "--key", "k", "--gateway-id", "gw-store-01",
            "--replay", str(EXAMPLES / "capture.jsonl"), "--spool", str(spool), "--batch-size", "25",
            "--batch-interval", "0.05", "--backoff-max", "0.5", "--drain-timeout", "1"]


def test_replay_delivers_everything(server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.start()
    code = main(gateway_argv(server, tmp_path / "spool"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert server.keys == expected_keys()
    assert f"sent={len(expected_keys())}" in err and "dropped=0" in err and "in_spool=0" in err


def test_server_down_spools_then_next_run_sends(server: ThreadedServer, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    spool = tmp_path / "spool"
    code = main(gateway_argv(server, spool))           # nothing listens yet
    err = capsys.readouterr().err
    n = len(expected_keys())
    assert code == 1 and "sent=0" in err and f"in_spool={n}" in err
    server.start()
    assert main(gateway_argv(server, spool)) == 0      # the spool first, then the new replay
    assert server.keys == expected_keys() * 2


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "--server", "ftp://x", "--gateway-id", "g", "--replay", "x"]) == 2
    assert "--server" in capsys.readouterr().err
    code = main(["gateway", "--server", "http://127.0.0.1:9", "--gateway-id", "g", "--replay",
                 str(tmp_path / "missing.jsonl"), "--spool", str(tmp_path / "s")])
    assert code == 2 and "missing.jsonl" in capsys.readouterr().err


def test_record_writes_what_was_heard(server: ThreadedServer, tmp_path: Path) -> None:
    server.start()
    record = tmp_path / "rec.jsonl"
    assert main([*gateway_argv(server, tmp_path / "spool"), "--record", str(record)]) == 0
    heard = list(read_capture(record))
    original = list(read_capture(EXAMPLES / "capture.jsonl"))
    assert [(r.ts, r.address, r.frames()) for r in heard] == [(r.ts, r.address, r.frames()) for r in original]
    assert {r.gateway_id for r in heard} == {r.gateway_id or "gw-store-01" for r in original}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="points bleak's BlueZ backend at no D-Bus")
def test_no_radio_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    code = main(["gateway", "--server", "http://127.0.0.1:9", "--gateway-id", "g", "--spool", str(tmp_path / "s"),
                 "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "error: cannot start the BLE scanner" in err and "--replay" in err
    assert "Traceback" not in err
