"""Throwaway Redis Clusters for tests, on free 127.0.0.1 ports (each with its bus port, +10000, free).

- :func:`acquire` / :func:`release`: the session's shared cluster of three masters, started on first
  use and stopped when its last user releases it (the ``redis_cluster_url`` fixture);
- :func:`start`: a private cluster (``masters`` masters, ``replicas`` replicas each) for a test that
  breaks it (failover, a killed master, slot migrations); ``Cluster.stop()`` removes every process
  and file.

When a cluster cannot start (no binaries, no free ports, it never reaches ``cluster_state:ok``)
these raise :class:`RuntimeError` with the reason; the fixtures skip loudly, or fail under
``PROXIMITY_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any


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
    for _ in range(400):
        p = random.randrange(21000, 30000)
        if p not in out and _port_free(p) and _port_free(p + 10000):
            out.append(p)
            if len(out) == n:
                return out
    raise RuntimeError("no free ports for a Redis Cluster")


def cli(port: int, *args: str, timeout: float = 5.0) -> str:
    """``redis-cli -p PORT ARGS...`` output (empty when the node does not answer)."""
    try:
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                              text=True, timeout=timeout, check=False).stdout
    except subprocess.TimeoutExpired:
        return ""


@dataclass
class Cluster:
    """A running test cluster: its node processes by port, and the URL of one master."""

    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    workdir: str = ""
    node_timeout_ms: int = 1000

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def nodes(self) -> list[dict[str, Any]]:
        """``CLUSTER NODES`` as seen by a live node: id, port, role, master id, slots, failed flag."""
        for p in self.ports:
            if self.procs.get(p) is not None and self.procs[p].poll() is None:
                text = cli(p, "cluster", "nodes")
                if text.strip():
                    break
        else:
            return []
        out = []
        for line in text.strip().splitlines():
            parts = line.split()
            flags = parts[2].split(",")
            out.append({"id": parts[0], "port": int(parts[1].split(":")[1].split("@")[0]),
                        "role": "master" if "master" in flags else "replica", "master": parts[3],
                        "failed": "fail" in flags or "fail?" in flags, "slots": parts[8:]})
        return out

    def masters(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes() if n["role"] == "master" and n["slots"] and not n["failed"]]

    def replica_of(self, master_port: int) -> int:
        nodes = self.nodes()
        mid = next(n["id"] for n in nodes if n["port"] == master_port)
        return next(n["port"] for n in nodes if n["master"] == mid and not n["failed"])

    def kill(self, port: int) -> None:
        """kill -9 one node."""
        proc = self.procs[port]
        proc.kill()
        proc.wait()

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        live = [p for p in self.ports if self.procs[p].poll() is None]
        while not all("cluster_state:ok" in cli(p, "cluster", "info") for p in live):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = ""


def start(masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = 1000) -> Cluster:
    """A new cluster of ``masters`` masters with ``replicas`` replicas each (see the module docstring)."""
    server = shutil.which("redis-server")
    if not server or not shutil.which("redis-cli"):
        raise RuntimeError("redis-server or redis-cli not on PATH")
    ports = _ports(masters * (1 + replicas))
    cluster = Cluster(ports, workdir=tempfile.mkdtemp(prefix="proximity-cluster-"), node_timeout_ms=node_timeout_ms)
    try:
        for p in ports:
            cluster.procs[p] = subprocess.Popen(
                [server, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{p}.conf", "--cluster-node-timeout", str(node_timeout_ms),
                 "--dir", cluster.workdir, "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not all(cli(p, "ping").strip() == "PONG" for p in ports):
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in cluster.procs.values()):
                raise RuntimeError("the cluster's redis-server processes did not start")
            time.sleep(0.05)
        made = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                               "--cluster-replicas", str(replicas), "--cluster-yes"],
                              capture_output=True, text=True, timeout=60, check=False)
        if made.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-300:]} {made.stderr[-300:]}")
        cluster.wait_ok(20)
        if replicas:  # replicas attached and in sync before anyone relies on a failover
            deadline = time.monotonic() + 20
            while sum(n["role"] == "replica" for n in cluster.nodes()) < masters * replicas or any(
                    "master_link_status:up" not in cli(n["port"], "info", "replication")
                    for n in cluster.nodes() if n["role"] == "replica"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster's replicas did not come up")
                time.sleep(0.1)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        raise RuntimeError(str(exc)) from exc
    return cluster


_shared: dict[str, Any] = {"users": 0, "cluster": None}


def acquire() -> str:
    """The URL of one node of the shared test cluster (three masters; started if needed)."""
    if _shared["cluster"] is None:
        _shared["cluster"] = start(3)
    _shared["users"] += 1
    return str(_shared["cluster"].url)


def release() -> None:
    _shared["users"] -= 1
    if _shared["users"] <= 0:
        _shared["users"] = 0
        if _shared["cluster"] is not None:
            _shared["cluster"].stop()
            _shared["cluster"] = None
