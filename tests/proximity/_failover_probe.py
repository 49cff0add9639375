"""Time every request while a Redis Cluster master fails: a reproduction to run by hand (not a test).

    python tests/proximity/_failover_probe.py --mode stop --node-timeout-ms 6000

starts a private cluster of 3 masters with a replica each, ``--workers`` ``proximity serve`` workers on it and
``--clients`` threads posting ping batches (each with its own devices and batch ids), then fails a master
that is not the seed: ``--mode kill`` kills it (kill -9; connections are refused at once), ``--mode stop``
stops it (SIGSTOP: the kernel still accepts connections and nobody answers, as with a paused VM or a
black-holed address) for ``--hold-s`` seconds and then kills it; the node is restarted (it rejoins as a
replica). With py-spy on PATH, ``--dump-at 2,5`` prints every worker's threads at those seconds after the
fault. Prints the events, the answers by status and the slowest answers (seconds after the fault, seconds
taken, status, worker port).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

import _redis_cluster as rc  # noqa: E402

from tests.proximity import _serve_workers as sw  # noqa: E402


def _post(url: str, body: bytes) -> int:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.request("POST", "/v1/pings", body=body, headers={"X-API-Key": sw.KEY, "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _dump(label: str) -> None:
    spy = shutil.which("py-spy")
    if spy is None:
        return
    pids = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "proximity serve"], capture_output=True,
                          text=True, check=False).stdout.split()
    for pid in pids:
        out = subprocess.run([spy, "dump", "--pid", pid], capture_output=True, text=True, check=False).stdout
        print(f"--- py-spy {label} worker pid {pid}\n{out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("kill", "stop"), default="kill")
    ap.add_argument("--node-timeout-ms", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--faults", type=int, default=1)
    ap.add_argument("--hold-s", type=float, default=25.0, help="--mode stop: how long the master hangs")
    ap.add_argument("--dump-at", default="", help="seconds after the fault, comma-separated (needs py-spy)")
    args = ap.parse_args(argv)
    cluster = rc.start(3, 1, node_timeout_ms=args.node_timeout_ms)
    paths = sw.write_scenario(Path(tempfile.mkdtemp(prefix="failover-probe-")))
    log: list[tuple[float, float, Any, str]] = []
    events: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def client(ci: int, urls: list[str]) -> None:
        k = 0
        while not stop.is_set():
            for rows in sw.ping_batches(time.time(), devices=6, steps=12, batch_size=6, seed=ci):
                for r in rows:
                    r["device_id"] = f"c{ci}-{k}-{r['device_id']}"
                body = json.dumps({"batch_id": uuid.uuid4().hex, "pings": rows}).encode()
                url = urls[k % len(urls)]
                t0 = time.monotonic()
                try:
                    status: Any = _post(url, body)
                except OSError as exc:
                    status = type(exc).__name__
                log.append((t0, time.monotonic() - t0, status, url.rsplit(":", 1)[-1]))
                time.sleep(0.05)
                if stop.is_set():
                    return
            k += 1

    try:
        with sw.workers(paths, args.workers, redis=cluster.url, prefix=f"probe{uuid.uuid4().hex[:6]}") as urls:
            threads = [threading.Thread(target=client, args=(i, urls)) for i in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(3)
            for _ in range(args.faults):
                victim = next(m for m in cluster.masters() if m["port"] != cluster.ports[0])["port"]
                command = cluster.procs[victim].args
                start = time.monotonic()
                if args.mode == "stop":
                    os.kill(cluster.procs[victim].pid, signal.SIGSTOP)
                    events.append(("sigstop", victim, start))
                    for at in sorted(float(x) for x in args.dump_at.split(",") if x):
                        time.sleep(max(0.0, at - (time.monotonic() - start)))
                        _dump(f"{at} s after the fault")
                    time.sleep(max(0.0, args.hold_s - (time.monotonic() - start)))
                cluster.kill(victim)
                events.append(("kill", victim, time.monotonic()))
                time.sleep(5)
                cluster.procs[victim] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                events.append(("restart", victim, time.monotonic()))
                time.sleep(8)
            stop.set()
            for t in threads:
                t.join(180)
    finally:
        stop.set()
        cluster.stop()
    t_fault = events[0][2] if events else 0.0
    for what, port, at in events:
        print(f"{what} {port} at {at - t_fault:.2f} s")
    statuses: dict[str, int] = {}
    for _t0, _d, status, _u in log:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    print(f"{len(log)} answers: {statuses}")
    for t0, d, status, port in sorted(log, key=lambda x: -x[1])[:12]:
        print(f"slow: at {t0 - t_fault:7.2f} s took {d:6.2f} s -> {status} (worker {port})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
