"""``proximity serve``: the engine as a network service.

With no arguments it starts on the embedded default (state in memory, one
process) with the bundled demo fences, campaigns and beacon registry, and
prints a demo key and a ready-to-paste ``curl``.

``--workers N`` runs N processes sharing one listening socket (the kernel
spreads connections among them); they share state through ``--redis URL``,
which more than one worker requires. SIGTERM or Ctrl-C stops accepting,
finishes the batches in flight and flushes the outbox before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from proximity.errors import StoreUnavailable, ValidationError

if TYPE_CHECKING:  # the service (aiohttp, campaigns, ...) is imported when serve runs, not for every command
    from proximity.service.auth import ApiKey, KeyRing
    from proximity.service.config import ServiceConfig

log = logging.getLogger("proximity.serve")

_OPTION_FIELDS = (
    "host", "port", "fences", "campaigns", "beacons", "keys", "redis", "redis_prefix", "redis_cluster", "workers", "max_batch",
    "max_scan_rows", "max_body_bytes", "rate_limit", "rate_burst", "max_skew_s", "reload_interval_s",
    "webhook_url", "offers_file", "shutdown_timeout_s", "engine_threads", "replay_demo", "device_rate_limit",
    "device_rate_burst", "access_log",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (pings, scans, admin, live feed, metrics)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="API keys: --keys FILE and/or $PROXIMITY_API_KEYS, lines 'name:scope[,scope]:sha256hex' "
               "(scopes: sdk, gateway, admin, read). Without any, a demo key with every scope and a read-only one "
               "are made and printed. The web console is at /console. --webhook-url needs the signing secret in "
               "$PROXIMITY_WEBHOOK_SECRET (checked before the port is bound; exit 2 without it).",
    )
    p.add_argument("--config", metavar="FILE", help="YAML file of settings (the option names, with _)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--fences", metavar="GEOJSON", help="fences file, watched and hot-reloaded")
    p.add_argument("--campaigns", metavar="YAML", help="campaigns file, watched and hot-reloaded")
    p.add_argument("--beacons", metavar="YAML", help="beacon registry file, watched and hot-reloaded")
    p.add_argument("--no-demo", action="store_true",
                   help="do not load the bundled demo data when no fences/campaigns/beacons are given")
    p.add_argument("--keys", metavar="FILE", help="API key file (hashed keys)")
    p.add_argument("--redis", metavar="URL", help="shared state, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--redis-prefix", dest="redis_prefix", help="prefix of every Redis key (default 'proximity')")
    p.add_argument("--redis-cluster", dest="redis_cluster", action="store_const", const=True, default=None,
                   help="run every script inside one hash slot even on a single Redis (a cluster node's URL "
                        "is detected without it)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (more than 1 needs --redis)")
    p.add_argument("--max-batch", dest="max_batch", type=int, help="most pings per request (default 1000)")
    p.add_argument("--max-scan-rows", dest="max_scan_rows", type=int, help="most sightings per request (5000)")
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int, help="most body bytes, after gunzip (1 MiB)")
    p.add_argument("--rate-limit", dest="rate_limit", type=float,
                   help="requests/s per key, one bucket for all workers with --redis (100; 0: off)")
    p.add_argument("--rate-burst", dest="rate_burst", type=float, help="burst of requests per key (200)")
    p.add_argument("--device-rate-limit", dest="device_rate_limit", type=float,
                   help="ingest batches/s per device of a key; a batch is charged to each device it carries "
                        "(1; 0: off; --rate-limit 0 turns both off)")
    p.add_argument("--device-rate-burst", dest="device_rate_burst", type=float,
                   help="burst of batches per device (20)")
    p.add_argument("--max-skew", dest="max_skew_s", type=float, help="seconds a ts may be in the future (300)")
    p.add_argument("--reload-interval", dest="reload_interval_s", type=float, help="file poll interval, s (2)")
    p.add_argument("--shutdown-timeout", dest="shutdown_timeout_s", type=float,
                   help="seconds to finish in-flight work on shutdown (30)")
    p.add_argument("--engine-threads", dest="engine_threads", type=int,
                   help="threads of the fence-matching kernels per worker (default 1; scale with --workers)")
    p.add_argument("--webhook-url", dest="webhook_url",
                   help="deliver offers to this URL, HMAC-signed with the secret in $PROXIMITY_WEBHOOK_SECRET "
                        "(required with this option)")
    p.add_argument("--no-access-log", dest="access_log", action="store_const", const=False, default=None,
                   help="no access log (by default one line per request on the proximity.access logger: "
                        "method, path, status, duration, bytes, key name)")
    p.add_argument("--offers-file", dest="offers_file", help="append offers to this JSONL file")
    p.add_argument("--replay-demo", dest="replay_demo", type=float, metavar="SPEED",
                   help="with the demo data: replay the bundled day of pings and sightings in a loop at SPEED "
                        "times real time (e.g. 20), so the console's map moves")
    p.add_argument("--new-key", metavar="NAME:SCOPES",
                   help="print a new random key and its key-file line (e.g. ios-app:sdk), then exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def new_key_line(spec: str) -> tuple[str, str]:
    """``(key, key-file line)`` for ``NAME:SCOPE[,SCOPE]``."""
    from proximity.service.auth import KeyRing, generate_key, hash_key

    name, _, scopes = spec.partition(":")
    scopes = scopes or "sdk"
    line = f"{name}:{scopes}:{hash_key('x')}"
    KeyRing.parse(line, source="--new-key")  # validates name and scopes
    key = generate_key()
    return key, f"{name}:{scopes}:{hash_key(key)}"


def build_config(args: argparse.Namespace) -> ServiceConfig:
    from proximity.service.config import config_from_mapping, load_config

    overrides: dict[str, Any] = {f: getattr(args, f, None) for f in _OPTION_FIELDS}
    given = any(getattr(args, k, None) for k in ("fences", "campaigns", "beacons"))
    if args.config:
        cfg = load_config(args.config, **overrides)
    else:
        cfg = config_from_mapping({}, source="options", **overrides)
    if not (given or cfg.fences or cfg.campaigns or cfg.beacons) and not args.no_demo:
        cfg = cfg.replace(demo=True)
    return cfg


def load_keys(cfg: ServiceConfig) -> KeyRing:
    from proximity.service.auth import KeyRing

    ring = KeyRing.from_file(cfg.keys) if cfg.keys else KeyRing()
    return ring.merged(KeyRing.from_env())


def _demo_curl(cfg: ServiceConfig, port: int, key: str) -> str:
    lon, lat = 2.3522, 48.8566
    fences_path = cfg.resolved_paths().get("fences")
    if fences_path is not None:
        try:
            import shapely

            from geofence import load_geojson

            fence = load_geojson(json.loads(fences_path.read_text(encoding="utf-8")))[0]
            center = getattr(fence, "center", None)  # a circle's centre; a polygon: a point inside it
            if center is None:
                center = shapely.get_coordinates(shapely.point_on_surface(fence.geometry))[0]
            lon, lat = float(center[0]), float(center[1])
        except Exception:  # the banner is a convenience; the server reports real problems
            pass
    now = datetime.now(UTC).replace(microsecond=0)
    # seven fixes 20 s apart, as a phone that streams sends them: sure enough for the default profile to
    # enter (GPS error drifts, so fixes seconds apart are not independent looks; and an accuracy that never
    # degrades is what a phone outdoors reports, so the indoor pattern does not add to them)
    stamps = [(now - timedelta(seconds=20 * k)).isoformat().replace("+00:00", "Z") for k in (6, 5, 4, 3, 2, 1, 0)]
    body = json.dumps({"batch_id": "demo-1", "pings": [
        {"device_id": "dev-demo", "lon": round(lon, 6), "lat": round(lat, 6), "accuracy_m": 5, "ts": ts}
        for ts in stamps]})
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return (f"curl -s -X POST http://{host}:{port}/v1/pings -H 'X-API-Key: {key}' "
            f"-H 'Content-Type: application/json' -d '{body}'")


def _worker_main(cfg: ServiceConfig, sock: Any, lines: list[str], level: str,
                 on_ready: Callable[[], None] | None = None) -> None:
    from proximity.service import serve_forever
    from proximity.service.auth import KeyRing

    logging.basicConfig(level=level.upper(), format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s")
    keys = KeyRing([_key_from_line(line) for line in lines])
    try:
        # on_ready: once the worker listens and its kernels are warm (compiled, or loaded from the cache)
        ready = (lambda svc: on_ready()) if on_ready else None
        while True:
            try:
                asyncio.run(serve_forever(cfg, sock, keys=keys, on_ready=ready))
                return
            except StoreUnavailable as exc:
                # Redis away while this worker starts (a restart during an outage): not a configuration
                # error; wait and start again (the other workers keep serving the shared socket)
                print(f"worker {os.getpid()}: {exc}; starting again in 1 s", file=sys.stderr, flush=True)
                time.sleep(1.0)
    except (ValueError, OSError) as exc:
        from proximity.errors import describe

        print(f"worker {os.getpid()}: {describe(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)


def _key_from_line(line: str) -> ApiKey:
    from proximity.service.auth import KeyRing

    return next(iter(KeyRing.parse(line)))


def run(args: argparse.Namespace) -> int:
    from proximity.service.auth import SCOPES, ApiKey, KeyRing, generate_key, hash_key

    if args.new_key:
        key, line = new_key_line(args.new_key)
        print(f"key:  {key}\nline: {line}\n(add the line to your --keys file; the key itself is shown only now)")
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = build_config(args)
    keys = load_keys(cfg)
    demo_key = read_key = None
    if len(keys) == 0:
        demo_key, read_key = generate_key(), generate_key()
        keys = KeyRing([ApiKey("demo", frozenset(SCOPES), bytes.fromhex(hash_key(demo_key))),
                        ApiKey("demo-read", frozenset({"read"}), bytes.fromhex(hash_key(read_key)))])
    if cfg.replay_demo and not cfg.demo:
        raise ValidationError("--replay-demo replays the bundled demo day: it needs the demo data (no --fences, "
                              "--campaigns or --beacons, no --no-demo)", field="replay_demo")
    for kind, path in cfg.resolved_paths().items():
        if path is not None and not path.is_file():
            raise ValidationError(f"{kind} file not found", source=str(path))
    for name, message in cfg.environment_problems():  # before the port is bound: nothing says "listening"
        raise ValidationError(message, field=name)

    from proximity.service import bind_socket

    sock = bind_socket(cfg.host, cfg.port, reuse_port=cfg.workers > 1)
    port = sock.getsockname()[1]
    mode = f"redis {cfg.redis} (prefix {cfg.redis_prefix!r})" if cfg.redis else "embedded (memory)"
    loaded = ", ".join(f"{k}={p}" for k, p in cfg.resolved_paths().items() if p is not None) or "nothing loaded"
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    banner = [f"proximity serve: listening on http://{cfg.host}:{port} ({cfg.workers} worker(s), {mode})",
              f"  {'demo data' if cfg.demo else 'data'}: {loaded}",
              f"  console: http://{host}:{port}/console/  (paste a key)"]
    if demo_key is not None:
        banner.append(f"  demo key (every scope, this run only): {demo_key}")
        banner.append(f"  read-only key (sees, cannot change): {read_key}")
        banner.append(f"  try: {_demo_curl(cfg, port, demo_key)}")
    if cfg.replay_demo:
        banner.append(f"  replaying the demo day in a loop at {cfg.replay_demo:g}x real time")
    elif cfg.demo:
        banner.append("  the demo city stands still: `proximity serve --replay-demo 60` replays its day at 60x")
    banner.append(f"  docs: http://{cfg.host}:{port}/openapi.json  metrics: http://{cfg.host}:{port}/metrics")

    def ready() -> None:  # "listening" only once requests get answers at once: /readyz says 200 from now on
        print("\n".join(banner), flush=True)

    lines = [k.line() for k in keys]
    if cfg.workers == 1:
        _worker_main(cfg, sock, lines, args.log_level, ready)
        return 0
    return _supervise(cfg, sock, lines, args.log_level, ready)


def _supervise(cfg: ServiceConfig, sock: Any, lines: list[str], level: str, ready: Callable[[], None]) -> int:
    """Run ``cfg.workers`` forked workers on the shared socket; restart crashed ones; stop them on a signal.
    ``ready()`` runs once every first worker is warm."""
    ctx = multiprocessing.get_context("fork")
    stopping = False
    warm = ctx.Semaphore(0)
    warm_workers = 0

    def spawn() -> Any:
        proc = ctx.Process(target=_worker_main, args=(cfg, sock, lines, level, warm.release), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [spawn() for _ in range(cfg.workers)]
    restarts: list[float] = []
    while not stopping:
        time.sleep(0.2)
        if warm_workers < cfg.workers:
            while warm_workers < cfg.workers and warm.acquire(block=False):
                warm_workers += 1
            if warm_workers == cfg.workers:
                ready()
        for i, proc in enumerate(procs):
            if proc.is_alive() or stopping:
                continue
            if proc.exitcode == 2:  # bad configuration: the others will fail the same way
                log.error("worker %d exited with a configuration error; stopping", proc.pid)
                stopping = True
                break
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 5 * cfg.workers:
                log.error("workers keep crashing; giving up")
                stopping = True
                break
            log.warning("worker %d exited (%s); restarting", proc.pid, proc.exitcode)
            procs[i] = spawn()
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    # the supervisor's copy of the listening socket would keep it open (new connections queued, never
    # answered) until the last worker is gone: close it now; each worker closes its own when it stops
    # accepting, so new connections are refused at once while in-flight requests finish
    sock.close()
    deadline = time.monotonic() + cfg.shutdown_timeout_s + 5
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    return 0 if all(p.exitcode in (0, -signal.SIGTERM) for p in procs) else 1
