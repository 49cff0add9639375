"""``proximity gateway``: the store gateway agent (BLE scanner -> batches -> POST /v1/scans)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from proximity.commands.beacons import parse_duration


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gateway", help="run the store gateway agent: scan BLE, batch, POST to /v1/scans",
        description="Scan BLE advertisements with bleak (or replay a JSONL capture), turn them into beacon "
                    "sightings, batch them by size and time and POST them to SERVER/v1/scans. Batches go "
                    "through a bounded on-disk spool first: while the server is unreachable they wait there "
                    "(and survive a restart), and are sent in order when it returns. Retries use exponential "
                    "backoff with jitter. Counters (sent, spooled, dropped) are logged.",
        epilog="examples:\n"
               "  proximity gateway --server https://prox.example.com --key $KEY --gateway-id gw-store-01\n"
               "  proximity gateway --server http://127.0.0.1:8080 --gateway-id gw-store-01 "
               "--replay proximity/examples/capture.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="base URL of the proximity server")
    p.add_argument("--key", default=os.environ.get("PROXIMITY_GATEWAY_KEY"),
                   help="API key, sent as 'Authorization: Bearer KEY' (default: $PROXIMITY_GATEWAY_KEY)")
    p.add_argument("--gateway-id", required=True, help="this gateway's id in the beacon registry")
    p.add_argument("--mode", choices=("active", "passive"), default="active", help="BLE scanning mode")
    p.add_argument("--replay", metavar="FILE", help="read advertisements from a JSONL capture instead of the radio")
    p.add_argument("--speed", type=float, default=0.0,
                   help="replay speed: 0 as fast as possible (default), 1 real time, 10 ten times faster")
    p.add_argument("--record", metavar="FILE", help="append every advertisement heard to a JSONL capture")
    p.add_argument("--spool", metavar="DIR", default=None,
                   help="spool directory (default: ~/.cache/proximity/gateway-<id>)")
    p.add_argument("--spool-max-batches", type=int, default=10_000, help="spool bound in batches (default 10000)")
    p.add_argument("--spool-max-mb", type=float, default=256.0, help="spool bound in MiB (default 256)")
    p.add_argument("--batch-size", type=int, default=200, help="sightings per batch (default 200)")
    p.add_argument("--batch-interval", type=parse_duration, default=2.0,
                   help="send a partial batch after this long (default 2s)")
    p.add_argument("--backoff-max", type=parse_duration, default=30.0, help="longest retry delay (default 30s)")
    p.add_argument("--duration", type=parse_duration, default=None, help="stop after this long (default: never)")
    p.add_argument("--drain-timeout", type=parse_duration, default=10.0,
                   help="at exit, keep sending the spool for this long (default 10s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every outage and retry")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from beacons.capture import CaptureWriter
    from beacons.gateway import GatewayAgent, GatewayConfig
    from beacons.sources import BleakSource, ReplaySource, ScannerError
    from beacons.spool import Spool
    from beacons.uplink import HttpUplink

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("beacons.gateway").setLevel(logging.INFO)
    if not args.server.startswith(("http://", "https://")):
        raise ValueError(f"--server must be an http:// or https:// URL, got {args.server!r}")
    if args.replay and not Path(args.replay).is_file():
        raise FileNotFoundError(f"--replay: no such file: {args.replay}")
    config = GatewayConfig(gateway_id=args.gateway_id, batch_size=args.batch_size,
                           batch_interval_s=args.batch_interval, backoff_max_s=max(args.backoff_max, 0.5),
                           drain_timeout_s=args.drain_timeout)
    spool_dir = Path(args.spool) if args.spool else Path.home() / ".cache" / "proximity" / f"gateway-{args.gateway_id}"
    spool = Spool(spool_dir, max_batches=args.spool_max_batches, max_bytes=int(args.spool_max_mb * 1024 * 1024))
    source = (ReplaySource(args.replay, speed=args.speed, gateway_id=args.gateway_id) if args.replay
              else BleakSource(scanning_mode=args.mode, gateway_id=args.gateway_id))
    recorder = CaptureWriter(args.record) if args.record else None

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        agent = GatewayAgent(source, HttpUplink(args.server, args.key), spool, config, recorder=recorder)
        counters = await agent.run(stop)
        print(" ".join(f"{k}={counters[k]}" for k in ("heard", "sightings", "sent", "spooled", "dropped",
                                                      "rejected", "warned"))
              + f" in_spool={spool.pending_sightings} in_spool_batches={len(spool)}", file=sys.stderr)
        if agent.fatal is not None:
            print(f"error: {agent.fatal}", file=sys.stderr)
            return 2
        return 0 if not len(spool) and not counters["rejected"] and not counters["warned"] else 1

    try:
        return asyncio.run(main())
    except ScannerError as exc:
        print(f"error: {exc} (is Bluetooth on and BlueZ running? --replay FILE reads a capture instead)",
              file=sys.stderr)
        return 2
    finally:
        if recorder is not None:
            recorder.close()
