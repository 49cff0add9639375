"""One delivery worker process of the fault tests: the real DeliveryWorker on a RedisOutbox (through the
fault proxy), delivering to a shared JSONL file and a webhook, until it is killed.

Usage: python _deliver_worker.py REDIS_URL PREFIX JSONL_PATH WEBHOOK_URL CONSUMER CLAIM_IDLE_S
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys

from campaigns import RedisOutbox, StoreUnavailable
from campaigns.dispatch import DeliveryWorker, Fanout, JsonlSink, WebhookDispatcher


async def main() -> int:
    url, prefix, path, hook, consumer, idle = sys.argv[1:7]
    logging.basicConfig(level=logging.ERROR)
    for _ in range(150):  # a worker started while the proxy refuses or black-holes Redis waits, as serve does
        try:
            outbox = RedisOutbox(url, prefix, claim_idle_s=float(idle), timeout_s=0.5)
            break
        except StoreUnavailable:
            await asyncio.sleep(0.2)
    else:
        print("no Redis", flush=True)
        return 1
    webhook = WebhookDispatcher(hook, "s3cret", timeout_s=2.0, max_attempts=100, backoff_base_s=0.02,
                                backoff_max_s=0.2, rng=random.Random())
    worker = DeliveryWorker(outbox, Fanout([JsonlSink(path, fsync=False), webhook]), consumer=consumer,
                            batch=20, concurrency=8)
    print("ready", flush=True)
    await worker.run(asyncio.Event(), interval_s=0.05)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
