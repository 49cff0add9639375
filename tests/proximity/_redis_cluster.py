"""A throwaway Redis Cluster for tests: three masters (``redis-server --cluster-enabled yes`` on free
127.0.0.1 ports) joined by ``redis-cli --cluster create``. Started once per test process, on first
:func:`acquire`, and stopped when the last user calls :func:`release`. When it cannot start (no
binaries, no free ports, the cluster never comes up) :func:`acquire` raises :class:`RuntimeError`
with the reason, and callers skip.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

_state: dict[str, Any] = {"users": 0, "url": None, "procs": [], "dir": None}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """``n`` ports that are free, each with its cluster bus port (+10000) free too."""
    out: list[int] = []
    for _ in range(200):
        p = random.randrange(21000, 30000)
        if p not in out and _port_free(p) and _port_free(p + 10000):
            out.append(p)
            if len(out) == n:
                return out
    raise RuntimeError("no free ports for a Redis Cluster")


def _cli(cli: str, port: int, *args: str, timeout: float = 5.0) -> str:
    return subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=timeout, check=False).stdout


def _start(masters: int = 3) -> str:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        raise RuntimeError("redis-server or redis-cli not on PATH")
    ports = _ports(masters)
    workdir = tempfile.mkdtemp(prefix="proximity-cluster-")
    _state["dir"] = workdir
    for p in ports:
        _state["procs"].append(subprocess.Popen(
            [server, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{p}.conf", "--dir", workdir, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while not all(_cli(cli, p, "ping").strip() == "PONG" for p in ports):
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in _state["procs"]):
            raise RuntimeError("the cluster's redis-server processes did not start")
        time.sleep(0.05)
    made = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas",
                           "0", "--cluster-yes"], capture_output=True, text=True, timeout=60, check=False)
    if made.returncode:
        raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-300:]} {made.stderr[-300:]}")
    deadline = time.monotonic() + 20
    while not all("cluster_state:ok" in _cli(cli, p, "cluster", "info") for p in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not reach cluster_state:ok")
        time.sleep(0.1)
    return f"redis://127.0.0.1:{ports[0]}/0"


def _stop() -> None:
    for proc in _state["procs"]:
        proc.terminate()
    for proc in _state["procs"]:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _state["procs"] = []
    if _state["dir"]:
        shutil.rmtree(_state["dir"], ignore_errors=True)
        _state["dir"] = None
    _state["url"] = None


def acquire() -> str:
    """The URL of one node of the shared test cluster (started if needed)."""
    if _state["url"] is None:
        try:
            _state["url"] = _start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            _stop()
            raise RuntimeError(str(exc)) from exc
    _state["users"] += 1
    return str(_state["url"])


def release() -> None:
    _state["users"] -= 1
    if _state["users"] <= 0:
        _state["users"] = 0
        _stop()
