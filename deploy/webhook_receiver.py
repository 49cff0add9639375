"""A webhook receiver for proximity offers: checks each request's signature, keeps each offer once.

Run: ``PROXIMITY_WEBHOOK_SECRET=... python deploy/webhook_receiver.py --port 9000 --out offers.jsonl``

Offers arrive at least once (a delivery whose acknowledgement was lost is sent again with the same
``Idempotency-Key``, the offer id); this receiver answers 200 to a repeat without keeping it twice.
It appends each new offer to ``--out`` with :class:`campaigns.dispatch.JsonlSink`, which also checks the
file, so a restarted receiver still recognises what it kept. A bad signature or a timestamp older than
five minutes is answered 401.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from aiohttp import web

from campaigns import Offer
from campaigns.dispatch import JsonlSink, verify_signature


def make_app(secret: str, out: str) -> web.Application:
    sink = JsonlSink(out)
    stats = {"received": 0, "kept": 0, "repeats": 0, "refused": 0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        stats["received"] += 1
        ts = request.headers.get("X-Proximity-Timestamp", "")
        if not verify_signature(secret, ts, body, request.headers.get("X-Proximity-Signature", "")):
            stats["refused"] += 1
            return web.json_response({"error": "bad signature or stale timestamp"}, status=401)
        try:
            offer = Offer.from_dict(json.loads(body)["offer"])
        except (ValueError, KeyError, TypeError) as exc:
            stats["refused"] += 1
            return web.json_response({"error": f"not an offer: {exc}"}, status=400)
        if request.headers.get("Idempotency-Key") != offer.offer_id:
            stats["refused"] += 1
            return web.json_response({"error": "Idempotency-Key differs from the offer id"}, status=400)
        kept = await asyncio.to_thread(sink.write, offer)  # the file lock and fsync off the event loop
        stats["kept" if kept else "repeats"] += 1
        return web.json_response({"ok": True, "repeat": not kept})

    async def health(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/healthz", health)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--out", default="webhook-offers.jsonl", help="JSONL file of the offers kept")
    parser.add_argument("--secret-env", default="PROXIMITY_WEBHOOK_SECRET")
    args = parser.parse_args(argv)
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"webhook_receiver: set ${args.secret_env} to the service's webhook secret", file=sys.stderr)
        return 2
    web.run_app(make_app(secret, args.out), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
